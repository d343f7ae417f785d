"""The training loop around `steps.train_step`, for any number of devices and hosts.

Rerunning in the same workdir resumes from its latest checkpoint, exactly: the data order is a
function of (seed, epoch) and the checkpoint holds the step and the RNG key.
"""
import contextlib
import pathlib
import time
from typing import Callable, Iterable, Optional

import jax
import numpy as np
from jax.experimental import multihost_utils
from tqdm import tqdm

from mobilenet_jax.config import DATA_FACTS, Config, load_json, save_json
from mobilenet_jax.core import checkpoint as ckpt_lib
from mobilenet_jax.core import parallel, steps
from mobilenet_jax.core.metrics import summarize_metrics
from mobilenet_jax.data import arrays, sources
from mobilenet_jax.data.prefetch import prefetch
from mobilenet_jax.data.streaming import StreamedSplit
from mobilenet_jax.evaluators.classification import evaluate_split
from mobilenet_jax.training import curves, finetune, precise_bn
from mobilenet_jax.training.metrics_log import MetricsLog
from mobilenet_jax.training.step_metrics import StepMetrics


def resolve_run_config(given: dict, workdir: pathlib.Path) -> Config:
    """The flags given, or, when the workdir holds a run, that run's config (resume) with the
    run-control flags of this invocation (defaults where not passed)."""
    saved_path = workdir / "config.json"
    if not (saved_path.exists() and (workdir / "checkpoints" / ckpt_lib.LATEST).exists()):
        return Config().replace(**finetune.with_source_architecture(given))
    saved = load_json(saved_path)
    may_differ = Config.RUN_CONTROL + Config.LOCATIONS
    for name, value in given.items():
        if name not in may_differ and getattr(saved, name) != value:
            raise ValueError(f"{workdir} holds a run with {name}={getattr(saved, name)!r} but "
                             f"{name}={value!r} was passed; drop the flag to resume that run or "
                             "pass another --workdir for a new one")
    control = {name: given.get(name, getattr(Config(), name)) for name in Config.RUN_CONTROL}
    return saved.replace(**control, **{k: v for k, v in given.items() if k in Config.LOCATIONS})


def with_class_names(config: Config, names: tuple, count_from_data: bool = False) -> Config:
    """The config with the dataset's class names, which later commands (predict, export) show;
    with `count_from_data`, also their number as num_classes."""
    if not names or config.class_names == names:
        return config
    if config.class_names:
        raise ValueError(f"{config.workdir} holds a run trained on classes "
                         f"{list(config.class_names)[:5]}..., but {config.dataset!r} has "
                         f"{list(names)[:5]}...; pass another --workdir for a new run")
    return config.replace(class_names=names,
                          **({"num_classes": len(names)} if count_from_data else {}))


def train(config: Config, num_classes_from_data: bool = False,
          stop_requested: Callable[[], Optional[str]] = lambda: None) -> dict:
    """Train (or resume) the run of `config` in config.workdir. Returns the final metrics.
    With `num_classes_from_data`, the dataset's class count replaces config.num_classes.
    `stop_requested` (polled every step, e.g. `process.StopSignals`) returns a reason to stop
    or None; given a reason, the loop checkpoints and returns."""
    workdir = pathlib.Path(config.workdir)
    main_process = jax.process_index() == 0
    devices = parallel.Devices(config.batch_size)
    say = print if main_process else (lambda *a, **k: None)

    resuming = (workdir / "checkpoints" / ckpt_lib.LATEST).exists()
    if config.init_from and not resuming:  # a source that cannot be fine-tuned fails first
        finetune.checkpoint_to_start_from(config)
    # a run trained on crops of the full images needs them again
    train_split = sources.load_split(
        config.replace(input="stream") if config.random_resized_crops else config, config.split)
    config = with_class_names(config, train_split.class_names, num_classes_from_data)
    train_split, val_split = arrays.split_validation(train_split, config.val_fraction, config.seed)
    if resuming and (workdir / "config.json").exists():  # fed as the run was fed so far
        stored = load_json(workdir / "config.json")
        config = config.replace(**{name: getattr(stored, name) for name in DATA_FACTS})
    else:  # what this and later commands need to feed the network, read from the data once
        mean, std = train_split.channel_statistics()
        config = config.replace(image_size=train_split.side, mean=mean, std=std,
                                random_resized_crops=config.augment and isinstance(
                                    train_split, StreamedSplit) and not train_split.fixed_size)
    steps_per_epoch = len(train_split) // config.batch_size
    if steps_per_epoch == 0:
        raise ValueError(f"the training split has {len(train_split)} examples, fewer than one "
                         f"batch of {config.batch_size}; lower --batch-size")
    total_steps = config.epochs * steps_per_epoch

    training = steps.build(config, steps_per_epoch)
    checkpoints = ckpt_lib.Checkpoints(workdir / "checkpoints", config.keep,
                                       keep_best=val_split is not None, say=say)
    base_rng = jax.random.key(config.seed)
    if checkpoints.latest_step() is not None:
        step = checkpoints.latest_step()
        state, _, position = checkpoints.restore(step, training.abstract_state(devices))
        base_rng = jax.random.wrap_key_data(np.asarray(position["rng"], np.uint32))
        say(f"resuming {workdir} from step {step} (epoch {step // steps_per_epoch + 1})")
    elif config.init_from:
        state = finetune.initial_state(config, training, devices, base_rng, say)
    else:
        state = training.new_state(base_rng, devices)
    if main_process:
        save_json(config, workdir / "config.json")
    if config.max_steps is not None and int(state.step) >= config.max_steps:
        checkpoints.close()
        say(f"the run is at step {int(state.step)}, which --max-steps {config.max_steps} does "
            "not pass: nothing to train (drop the flag or raise it to go on)")
        return {"step": int(state.step), "stopped": True}

    jitted = training.jit_steps(devices)
    log = MetricsLog(workdir, main_process)
    curve_writer = curves.CurvesWriter(workdir, say) if main_process else None
    rng_data = np.asarray(jax.random.key_data(base_rng)).tolist()

    def save(state, metrics=None):
        step = int(state.step)
        checkpoints.save(state, config, {"step": step, "epoch": step // steps_per_epoch,
                                         "steps_per_epoch": steps_per_epoch, "rng": rng_data},
                         metrics)
        return step

    def with_precise_statistics(state, epoch: int):
        """The state with BatchNorm statistics recomputed for what evaluates it next, and the
        seconds that took (None: the run keeps none)."""
        if state.precise_batch_stats is None:
            return state, None
        start = time.perf_counter()
        state = precise_bn.recompute(state, train_split, config, devices,
                                     jitted.batch_statistics, base_rng, epoch)
        jax.block_until_ready(state.precise_batch_stats)
        return state, round(time.perf_counter() - start, 3)

    def should_stop(step: int) -> Optional[str]:
        if config.max_steps is not None and step >= config.max_steps:
            return f"--max-steps {config.max_steps}"
        return _agreed_stop(stop_requested(), step)

    step = int(state.step)
    summary = {}
    ahead = parallel.run_ahead(jax.default_backend())
    metrics = StepMetrics(config.batch_size, checkpoints.latest_step, ahead["lag"])
    try:
        while step < total_steps:
            epoch, offset = divmod(step, steps_per_epoch)
            bar = tqdm(total=steps_per_epoch, initial=offset, desc=f"epoch {epoch + 1}/{config.epochs}",
                       unit="step", disable=not (config.progress and main_process), leave=False)
            metrics.start_epoch()
            epoch_start = time.perf_counter()
            metrics.on_read = lambda sums, bar=bar: bar.set_postfix(
                loss=f"{sums['loss'] / sums['count']:.3f}",
                top1=f"{sums['top1'] / sums['count']:.3f}",
                img_s=f"{metrics.images_per_s():.0f}", refresh=False)
            batches = train_split.train_batches(config.batch_size, config.seed, epoch, offset,
                                                devices.process_index, devices.process_count,
                                                config.random_resized_crops)
            with contextlib.closing(prefetch(batches, devices.global_batch,
                                             ahead["prefetch"])) as on_devices:
                state, step, stop = train_steps(state, on_devices, jitted.train, base_rng,
                                                metrics, step, bar.update, should_stop)
            metrics.read_all()  # every loss checked before anything is saved
            bar.close()
            if stop:
                save(with_precise_statistics(state, epoch)[0])
                checkpoints.wait()
                say(f"stopped at step {step} ({stop}); saved a checkpoint in "
                    f"{checkpoints.directory}; rerun the same command to resume")
                return {"step": step, "stopped": True}
            summary = {"epoch": epoch + 1, **metrics.summary(),
                       "train_s": round(time.perf_counter() - epoch_start, 3)}
            saving = (epoch + 1) % config.checkpoint_every == 0 or step == total_steps
            if val_split is not None or saving:
                state, seconds = with_precise_statistics(state, epoch)
                if seconds is not None:
                    summary["precise_bn_s"] = seconds
            if val_split is not None:
                start = time.perf_counter()
                summary.update(summarize_metrics(
                    evaluate_split(state, val_split, config.batch_size, devices, jitted.eval), "val"))
                summary["val_s"] = round(time.perf_counter() - start, 3)
            log.write(step, summary)
            if curve_writer:
                curve_writer.update()
            say(format_epoch(summary, config.epochs))
            if saving:
                save(state, {"val_top1": summary["val_top1"]} if val_split is not None else None)
        checkpoints.wait()  # the last save, written in the background, is on disk
    finally:
        log.close()
        if curve_writer:
            curve_writer.close()
        checkpoints.close()
    say(f"done: {total_steps} steps; checkpoints in {checkpoints.directory} "
        f"(evaluate with: python -m mobilenet_jax.evaluate --ckpt {checkpoints.directory / 'latest'})")
    return {"step": step, "stopped": False, **summary}


def train_steps(state, batches: Iterable[dict], train_step: Callable, rng: jax.Array,
                metrics: StepMetrics, step: int, progress: Callable[[int], object],
                should_stop: Callable[[int], Optional[str]]):
    """`train_step` on each of `batches` (global batches, on the devices), without waiting for
    the device: the metrics go to `metrics`, which reads them late. After each step,
    `progress(1)`, then `should_stop(step)`: a reason ends the loop early.
    Returns (state, step, the reason or None)."""
    for batch in batches:
        state, step_metrics = train_step(state, batch, rng)
        step += 1
        metrics.add(step, step_metrics)
        progress(1)
        reason = should_stop(step)
        if reason:
            return state, step, reason
    return state, step, None


STOP_POLL_STEPS = 10


def _agreed_stop(reason: Optional[str], step: int) -> Optional[str]:
    """Whether any process was asked to stop. Every process must stop at the same step: with
    several, they agree on it every STOP_POLL_STEPS steps (by a collective, which makes the
    host wait for the device)."""
    if jax.process_count() == 1:
        return reason
    if step % STOP_POLL_STEPS:
        return None
    anyone = multihost_utils.process_allgather(np.int32(reason is not None)).any()
    return (reason or "a stop request on another process") if anyone else None


def format_epoch(m: dict, epochs: int) -> str:
    line = (f"epoch {m['epoch']:>3}/{epochs}  train loss {m['train_loss']:.4f} "
            f"top1 {m['train_top1']:.4f} top5 {m['train_top5']:.4f}")
    if "val_loss" in m:
        line += f" | val loss {m['val_loss']:.4f} top1 {m['val_top1']:.4f} top5 {m['val_top5']:.4f}"
    return line + f" | lr {m['lr']:.4g} | {m['images_per_s']:.0f} img/s"
