"""The training loop: a Plan (training/plan.py) trained, for any number of devices and hosts.

Rerunning in the same workdir resumes from its latest checkpoint, exactly: the data order is a
function of (seed, epoch) and the checkpoint holds the step and the RNG key.
"""
import contextlib
import dataclasses
import functools
import pathlib
import time
from typing import Callable, Iterable, Optional

import jax
import numpy as np
from jax.experimental import multihost_utils
from tqdm import tqdm

from mobilenet_jax.config import save_json
from mobilenet_jax.core import checkpoint as ckpt_lib
from mobilenet_jax.core import parallel, steps
from mobilenet_jax.core.metrics import summarize_metrics
from mobilenet_jax.data.prefetch import prefetch
from mobilenet_jax.evaluators.classification import evaluate_split
from mobilenet_jax.training import curves, finetune, precise_bn
from mobilenet_jax.training.metrics_log import MetricsLog
from mobilenet_jax.training.plan import Plan
from mobilenet_jax.training.step_metrics import StepMetrics


def train(plan: Plan, stop_requested: Callable[[], Optional[str]] = lambda: None) -> dict:
    """Train (or resume) the planned run in its workdir. Returns the final metrics.
    `stop_requested` (polled every step, e.g. `process.StopSignals`) returns a reason to stop
    or None; given a reason, the loop checkpoints and returns."""
    config, workdir = plan.config, pathlib.Path(plan.config.run.workdir)
    main_process = jax.process_index() == 0
    say = print if main_process else _silent
    devices = parallel.Devices(config.recipe.batch_size)
    training = steps.build(config, plan.steps_per_epoch)
    checkpoints = ckpt_lib.Checkpoints(workdir / "checkpoints", config.run.keep,
                                       keep_best=plan.val_split is not None, say=say)
    state, rng = first_state(plan, training, checkpoints, devices, say)
    if main_process:
        save_json(config, workdir / "config.json")
    if config.run.max_steps is not None and int(state.step) >= config.run.max_steps:
        checkpoints.close()
        say(f"the run is at step {int(state.step)}, which --max-steps {config.run.max_steps} does "
            "not pass: nothing to train (drop the flag or raise it to go on)")
        return {"step": int(state.step), "stopped": True}

    ahead = parallel.run_ahead(jax.default_backend())
    work = EpochWork(plan, devices, training.jit_steps(devices), checkpoints, rng,
                     stop_requested, ahead["prefetch"])
    log = MetricsLog(workdir, main_process)
    curve_writer = curves.CurvesWriter(workdir, say) if main_process else None
    step, summary = int(state.step), {}
    metrics = StepMetrics(config.recipe.batch_size, checkpoints.latest_step, ahead["lag"])
    try:
        while step < plan.total_steps:
            epoch = step // plan.steps_per_epoch
            start = time.perf_counter()
            state, step, stop = train_epoch(state, step, work, metrics, main_process)
            if stop:
                work.save(work.with_precise_statistics(state, epoch)[0])
                checkpoints.wait()
                say(f"stopped at step {step} ({stop}); saved a checkpoint in "
                    f"{checkpoints.directory}; rerun the same command to resume")
                return {"step": step, "stopped": True}
            summary = {"epoch": epoch + 1, **metrics.summary(),
                       "train_s": round(time.perf_counter() - start, 3)}
            saving = (epoch + 1) % config.run.checkpoint_every == 0 or step == plan.total_steps
            if plan.val_split is not None or saving:
                state, seconds = work.with_precise_statistics(state, epoch)
                summary.update({"precise_bn_s": seconds} if seconds is not None else {})
            if plan.val_split is not None:
                summary.update(work.validate(state))
            log.write(step, summary)
            if curve_writer:
                curve_writer.update()
            say(format_epoch(summary, config.recipe.epochs))
            if saving:
                work.save(state, {"val_top1": summary["val_top1"]} if "val_top1" in summary
                          else None)
        checkpoints.wait()  # the last save, written in the background, is on disk
    finally:
        log.close()
        if curve_writer:
            curve_writer.close()
        checkpoints.close()
    latest = checkpoints.directory / ckpt_lib.LATEST
    say(f"done: {plan.total_steps} steps; checkpoints in {checkpoints.directory} "
        f"(evaluate with: python -m mobilenet_jax.evaluate --ckpt {latest})")
    return {"step": step, "stopped": False, **summary}


def first_state(plan: Plan, training: steps.Training, checkpoints: ckpt_lib.Checkpoints,
                devices: parallel.Devices, say: Callable) -> tuple:
    """(state, the run's RNG key): the latest checkpoint's, the fine-tune source's weights in a
    new state, or a new state."""
    rng = jax.random.key(plan.config.start.seed)
    step = checkpoints.latest_step()
    if step is not None:
        state, _, position = checkpoints.restore(step, training.abstract_state(devices))
        say(f"resuming {plan.config.run.workdir} from step {step} "
            f"(epoch {step // plan.steps_per_epoch + 1})")
        return state, jax.random.wrap_key_data(np.asarray(position["rng"], np.uint32))
    if plan.source is not None:
        return finetune.initial_state(plan.config, plan.source, training, devices, rng, say), rng
    return training.new_state(rng, devices), rng


@dataclasses.dataclass(frozen=True)
class EpochWork:
    """What a run does around its steps: stop requests, BatchNorm statistics, validation and
    checkpoints, with what they need."""
    plan: Plan
    devices: parallel.Devices
    jitted: steps.JittedSteps
    checkpoints: ckpt_lib.Checkpoints
    rng: jax.Array
    stop_requested: Callable[[], Optional[str]]
    prefetch: int  # global batches placed on the devices ahead (parallel.run_ahead)

    def should_stop(self, step: int) -> Optional[str]:
        max_steps = self.plan.config.run.max_steps
        if max_steps is not None and step >= max_steps:
            return f"--max-steps {max_steps}"
        return _agreed_stop(self.stop_requested(), step)

    def with_precise_statistics(self, state, epoch: int):
        """The state with BatchNorm statistics recomputed for what evaluates it next, and the
        seconds that took (None: the run keeps none)."""
        if state.precise_batch_stats is None:
            return state, None
        start = time.perf_counter()
        state = precise_bn.recompute(state, self.plan.train_split, self.plan.config,
                                     self.devices, self.jitted.batch_statistics, self.rng, epoch)
        jax.block_until_ready(state.precise_batch_stats)
        return state, round(time.perf_counter() - start, 3)

    def validate(self, state) -> dict:
        """The validation split's metrics (`val_...`) and the seconds they took (`val_s`)."""
        start = time.perf_counter()
        metrics = summarize_metrics(evaluate_split(state, self.plan.val_split,
                                                   self.plan.config.recipe.batch_size, self.devices,
                                                   self.jitted.eval), "val")
        return {**metrics, "val_s": round(time.perf_counter() - start, 3)}

    def save(self, state, metrics: Optional[dict] = None) -> None:
        step = int(state.step)
        rng = np.asarray(jax.random.key_data(self.rng)).tolist()
        self.checkpoints.save(state, self.plan.config,
                              {"step": step, "epoch": step // self.plan.steps_per_epoch,
                               "steps_per_epoch": self.plan.steps_per_epoch, "rng": rng},
                              metrics)


def train_epoch(state, step: int, work: EpochWork, metrics: StepMetrics, show_progress: bool):
    """The rest of the epoch that `step` is in. Returns (state, step, a stop reason or None)."""
    config, steps_per_epoch = work.plan.config, work.plan.steps_per_epoch
    epoch, offset = divmod(step, steps_per_epoch)
    bar = tqdm(total=steps_per_epoch, initial=offset,
               desc=f"epoch {epoch + 1}/{config.recipe.epochs}",
               unit="step", disable=not (config.run.progress and show_progress), leave=False)
    metrics.start_epoch()
    metrics.on_read = functools.partial(_show_progress, bar, metrics)
    batches = work.plan.train_split.train_batches(
        config.recipe.batch_size, config.start.seed, epoch, offset, work.devices.process_index,
        work.devices.process_count, config.data.random_resized_crops)
    with contextlib.closing(prefetch(batches, work.devices.global_batch,
                                     work.prefetch)) as on_devices:
        state, step, stop = train_steps(state, on_devices, work.jitted.train, work.rng, metrics,
                                        step, bar.update, work.should_stop)
    metrics.read_all()  # every loss checked before anything is saved
    bar.close()
    return state, step, stop


def _show_progress(bar, metrics: StepMetrics, sums: dict) -> None:
    bar.set_postfix(loss=f"{sums['loss'] / sums['count']:.3f}",
                    top1=f"{sums['top1'] / sums['count']:.3f}",
                    img_s=f"{metrics.images_per_s():.0f}", refresh=False)


def _silent(*args, **kwargs) -> None:
    pass


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
