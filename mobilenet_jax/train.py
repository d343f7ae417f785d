"""Train MobileNet v1 on CIFAR-100 (the default), another TFDS dataset or an image folder.

    python -m mobilenet_jax.train --alpha 0.1 --workdir runs/a

Rerunning the same command in the same workdir resumes from its latest checkpoint; SIGINT or
SIGTERM finishes the step in flight, checkpoints and exits. The run is resolved by
training/plan.py, then trained by training/loop.py.
"""
import pathlib

from mobilenet_jax import cli, process
from mobilenet_jax.config import PRESETS, Config
from mobilenet_jax.core import checkpoint as ckpt_lib
from mobilenet_jax.core import parallel
from mobilenet_jax.data.arrays import DataError
from mobilenet_jax.errors import write_error_line
from mobilenet_jax.models.memory import estimated_step_bytes
from mobilenet_jax.training import loop, plan
from mobilenet_jax.training.step_metrics import TrainingStopped


def main(argv=None):
    process.start_command()
    parser = cli.parser("mobilenet_jax.train", __doc__)
    cli.add_config_flags(parser, all_optional=True)
    parser.add_argument("--preset", choices=sorted(PRESETS),
                        help="start from a named set of flag values, which the flags given "
                             "beside it override: imagenet, the reference MobileNet v1 "
                             "ImageNet training (experiments/imagenet/)")
    cli.add_compile_cache_flag(parser)
    args = parser.parse_args(argv)
    given = {**PRESETS.get(args.preset, {}), **cli.given_flags(args)}
    try:
        process.use_compile_cache(args.compile_cache)
        config = Config().replace(**given)  # validates the flags before anything heavy
        parallel.maybe_initialize_distributed(config.run.distributed)
        pathlib.Path(config.run.workdir).mkdir(parents=True, exist_ok=True)
        started = plan.run_config(given)
        # Before reading data starts any thread: a thread keeps the arena it first
        # allocated from (experiments/host_memory).
        process.keep_freed_memory(estimated_step_bytes(started[0], started[0].recipe.batch_size))
        run = plan.resolve(given, num_classes_from_data="num_classes" not in given,
                           started=started)
        stop = process.StopSignals()
        try:
            loop.train(run, stop_requested=stop)
        finally:
            stop.close()
    except (ValueError, DataError, ckpt_lib.CheckpointError, TrainingStopped) as e:
        cli.fail(str(e))
    except OSError as e:  # the workdir, config.json, metrics or events cannot be written
        cli.fail(write_error_line(e, f"write {e.filename or given.get('workdir', '.')}"))


if __name__ == "__main__":
    process.exec_with_tcmalloc()
    main()
