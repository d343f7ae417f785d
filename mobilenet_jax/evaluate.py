"""Evaluate a checkpoint: top-1, top-5, mean loss (and per-class accuracy).

    python -m mobilenet_jax.evaluate --ckpt checkpoints/latest
    python -m mobilenet_jax.evaluate --pretrained cifar10 --image-folder cifar10-jpeg

--ckpt takes a run workdir, its checkpoints/ dir, `latest` or one step's dir; --pretrained a
model that ships with the package. The model is rebuilt from the config stored in the
checkpoint; model flags, when given, must match it. The data is the checkpoint's run's,
unless --image-folder names a folder of the same classes.
"""
import json

from mobilenet_jax import cli, process
from mobilenet_jax.core import checkpoint as ckpt_lib
from mobilenet_jax.core.restore import MODEL_GROUPS, checkpoint_config
from mobilenet_jax.data.arrays import DataError
from mobilenet_jax.errors import write_error_line
from mobilenet_jax.evaluators.classification import evaluate
from mobilenet_jax.models.memory import estimated_step_bytes


def main(argv=None):
    process.start_command()
    parser = cli.parser("mobilenet_jax.evaluate", __doc__)
    cli.add_checkpoint_flags(parser)
    parser.add_argument("--split", default="test", help="TFDS split expression (default: test)")
    parser.add_argument("--batch-size", type=int, default=1000, help="default: 1000")
    parser.add_argument("--per-class", action="store_true", help="print per-class accuracy")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    cli.add_config_flags(parser, MODEL_GROUPS + ("places",), ("resolution", "input"),
                         all_optional=True)
    cli.add_compile_cache_flag(parser)
    args = parser.parse_args(argv)
    overrides = cli.given_flags(args, MODEL_GROUPS, ("resolution",))
    try:
        process.use_compile_cache(args.compile_cache)
        if args.batch_size < 1:
            raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
        step_dir = ckpt_lib.resolve(cli.checkpoint_arg(args))
        # Before JAX starts: the allocator is set from the size of an eval step.
        process.keep_freed_memory(estimated_step_bytes(
            checkpoint_config(step_dir, overrides), args.batch_size, train=False))
        result = evaluate(step_dir, args.split, args.data_dir, bool(args.offline),
                          args.batch_size, overrides, args.input, args.image_folder)
    except (ValueError, DataError, ckpt_lib.CheckpointError) as e:
        cli.fail(str(e))
    print(f"{result['checkpoint']} (step {result['step']}), split {result['split']}: "
          f"{result['examples']} examples  top-1 {result['top1']:.4f}  top-5 {result['top5']:.4f}"
          f"  loss {result['loss']:.4f}")
    if args.per_class:
        print(f"{'label':>5}  {'class':<24} {'examples':>8} {'top-1':>7}")
        for name, r in result["per_class"].items():
            print(f"{r['label']:>5}  {name:<24} {r['examples']:>8} {r['top1']:>7.4f}")
    if args.json:
        try:
            with open(args.json, "w") as f:
                json.dump(result, f, indent=2)
        except OSError as e:
            cli.fail(write_error_line(e, f"write {args.json}", "--json"))


if __name__ == "__main__":
    process.exec_with_tcmalloc()
    main()
