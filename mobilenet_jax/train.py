"""Train MobileNet v1 on CIFAR-100.

    python -m mobilenet_jax.train --alpha 0.1 --workdir runs/a

One training path for any number of devices and hosts: `jax.jit` over a 1-D mesh of all
devices (axis 'data'); the global batch is sharded along it, the TrainState is replicated.
Rerunning the same command in the same workdir resumes from its latest checkpoint.
"""
import argparse
import functools
import json
import os
import pathlib
import signal
import time
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax.training import train_state
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from mobilenet_jax import checkpoint as ckpt_lib
from mobilenet_jax import data, hostmem
from mobilenet_jax.config import (Config, OneLineErrorParser, add_config_flags, fail,
                                  load_json, save_json)
from mobilenet_jax.model import MobileNetV1


class TrainState(train_state.TrainState):
    batch_stats: Any


class TrainingStopped(Exception):
    """Training cannot go on (e.g. a NaN loss); nothing bad was saved."""


# ---- optimisation ---------------------------------------------------------------------------

def learning_rate_schedule(config: Config, steps_per_epoch: int) -> optax.Schedule:
    peak = config.scaled_lr()
    total = config.epochs * steps_per_epoch
    warmup = min(int(config.warmup_epochs * steps_per_epoch), total - 1)
    if config.schedule == "cosine":
        return optax.warmup_cosine_decay_schedule(0.0, peak, warmup, total, end_value=0.0)
    if config.schedule == "step":
        after = optax.piecewise_constant_schedule(
            peak, {int(0.5 * total) - warmup: 0.1, int(0.75 * total) - warmup: 0.1})
    else:
        after = optax.constant_schedule(peak)
    return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), after], [warmup])


def create_optimizer(config: Config, schedule: optax.Schedule) -> optax.GradientTransformation:
    # Decay conv and dense kernels only: BatchNorm scale/offset and biases are 1-D.
    decay_mask = functools.partial(jax.tree.map, lambda p: p.ndim > 1)
    if config.optimizer == "adamw":
        return optax.adamw(schedule, b1=config.momentum, weight_decay=config.weight_decay,
                           mask=decay_mask)
    if config.optimizer == "rmsprop":  # the paper's optimizer (TF-style RMSProp)
        base = optax.rmsprop(schedule, decay=0.9, eps=1e-3, momentum=config.momentum)
    else:
        base = optax.sgd(schedule, momentum=config.momentum, nesterov=config.momentum > 0)
    return optax.chain(optax.add_decayed_weights(config.weight_decay, decay_mask), base)


def create_train_state(config: Config, model: MobileNetV1, tx, rng) -> TrainState:
    x = jnp.zeros((1, config.resolution, config.resolution, 3), jnp.float32)
    variables = model.init(rng, x)
    return TrainState.create(apply_fn=model.apply, params=variables["params"],
                             batch_stats=variables["batch_stats"], tx=tx)


def state_initializer(config: Config, steps_per_epoch: int):
    """(schedule, init): `init(rng)` builds the TrainState (model, optimizer, schedule) that
    `config` describes. Training, evaluation and the benchmark all build their state here."""
    model = MobileNetV1(**config.model_kwargs())
    schedule = learning_rate_schedule(config, steps_per_epoch)
    tx = create_optimizer(config, schedule)
    return schedule, functools.partial(create_train_state, config, model, tx)


def estimated_step_bytes(config: Config, batch_size: int, train: bool = True) -> int:
    """About how large XLA:CPU's temporary buffer for one step of `batch_size` will be, from
    the model's layer outputs (`jax.eval_shape`: nothing runs, no backend starts). Training
    keeps every layer output for the backward: measured 1.4-1.6x their sum at alpha 0.1-1.0;
    inference holds a few at a time: 2.3-2.8x the largest (experiments/cpu_benchmark.md)."""
    model = MobileNetV1(**config.model_kwargs(backend="cpu"))  # asking JAX would start it
    image = jax.ShapeDtypeStruct((1, config.resolution, config.resolution, 3), jnp.float32)
    variables = jax.eval_shape(functools.partial(model.init, capture_intermediates=True),
                               jax.eval_shape(jax.random.key, 0), image)
    sizes = [leaf.size * leaf.dtype.itemsize
             for leaf in jax.tree.leaves(variables["intermediates"])]
    return int(batch_size * (1.5 * sum(sizes) if train else 2.5 * max(sizes)))


# ---- the steps: pure functions of (state, batch, rng) ---------------------------------------

def classification_metrics(logits, labels, loss_per_example, weights):
    # The label's place in the order of `lax.top_k` (descending, ties to the lower index):
    # one compare and sum, where XLA:CPU's TopK took ~0.6 ms of a 20 ms inference step.
    label_logit = jnp.take_along_axis(logits, labels[:, None], axis=-1)
    before = (logits > label_logit) | ((logits == label_logit)
                                       & (jnp.arange(logits.shape[-1]) < labels[:, None]))
    rank = jnp.sum(before, axis=-1)
    return {"loss": jnp.sum(loss_per_example * weights),
            "top1": jnp.sum((jnp.argmax(logits, -1) == labels) * weights),
            "top5": jnp.sum((rank < 5) * weights),
            "count": jnp.sum(weights)}


def cross_entropy(logits, labels, num_classes, label_smoothing=0.0):
    targets = optax.smooth_labels(jax.nn.one_hot(labels, num_classes), label_smoothing)
    return optax.softmax_cross_entropy(logits, targets)


def train_step(state: TrainState, batch: dict, rng: jax.Array, *, config: Config,
               schedule: optax.Schedule):
    """One SGD step. Returns the new state and the batch's summed metrics (and the lr)."""
    rng = jax.random.fold_in(rng, state.step)
    augment_rng, dropout_rng = jax.random.split(rng)
    images = batch["image"]
    if config.augment:
        images = data.augment(images, augment_rng)
    images = data.normalize(images, config.resolution, jnp.dtype(config.dtype))

    def loss_fn(params):
        logits, updates = state.apply_fn(
            {"params": params, "batch_stats": state.batch_stats}, images, train=True,
            rngs={"dropout": dropout_rng}, mutable=["batch_stats"])
        losses = cross_entropy(logits, batch["label"], config.num_classes, config.label_smoothing)
        return losses.mean(), (logits, losses, updates["batch_stats"])

    grads, (logits, losses, batch_stats) = jax.grad(loss_fn, has_aux=True)(state.params)
    new_state = state.apply_gradients(grads=grads, batch_stats=batch_stats)
    metrics = classification_metrics(logits, batch["label"], losses, jnp.ones_like(losses))
    metrics["lr"] = schedule(state.step)
    return new_state, metrics


def eval_step(state: TrainState, batch: dict, *, config: Config):
    """Summed metrics of a (masked) batch, and whether each example's top-1 is right."""
    images = data.normalize(batch["image"], config.resolution, jnp.dtype(config.dtype))
    logits = state.apply_fn({"params": state.params, "batch_stats": state.batch_stats}, images,
                            train=False)
    losses = cross_entropy(logits, batch["label"], config.num_classes)
    correct = jnp.argmax(logits, -1) == batch["label"]
    return classification_metrics(logits, batch["label"], losses, batch["mask"]), correct


# ---- devices, hosts and batches -------------------------------------------------------------

def maybe_initialize_distributed(requested: bool) -> None:
    """Join a multi-process run when asked, or when a cluster launcher says so."""
    cluster = (int(os.environ.get("SLURM_NTASKS", "1")) > 1
               or int(os.environ.get("OMPI_COMM_WORLD_SIZE", "1")) > 1
               or "JAX_COORDINATOR_ADDRESS" in os.environ)
    if not (requested or cluster):
        return
    kwargs = {}
    if "JAX_COORDINATOR_ADDRESS" in os.environ:  # explicit set-up, e.g. two processes on a box
        kwargs = dict(coordinator_address=os.environ["JAX_COORDINATOR_ADDRESS"],
                      num_processes=int(os.environ["JAX_NUM_PROCESSES"]),
                      process_id=int(os.environ["JAX_PROCESS_ID"]))
    if jax.config.jax_platforms in (None, "", "cpu"):
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(**kwargs)


class Devices:
    """The data-parallel mesh and how batches and state are placed on it."""

    def __init__(self, global_batch_size: int):
        self.mesh = Mesh(np.array(jax.devices()), ("data",))
        self.replicated = NamedSharding(self.mesh, P())
        self.batch_sharded = NamedSharding(self.mesh, P("data"))
        n, hosts = jax.device_count(), jax.process_count()
        if global_batch_size % n:
            raise ValueError(f"batch_size {global_batch_size} must be a multiple of the number "
                             f"of devices ({n}); pass --batch-size {n * max(1, global_batch_size // n)}")
        self.process_index, self.process_count = jax.process_index(), hosts

    def global_batch(self, local: dict) -> dict:
        """This process's numpy share of a batch -> one global array sharded over 'data'."""
        return {k: jax.make_array_from_process_local_data(self.batch_sharded, v)
                for k, v in local.items()}

    def abstract(self, tree):
        return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype,
                                                           sharding=self.replicated), tree)


# ---- logging --------------------------------------------------------------------------------

class MetricsLog:
    """metrics.jsonl and TensorBoard events in the workdir (process 0 only)."""

    def __init__(self, workdir: pathlib.Path, enabled: bool):
        self.enabled = enabled
        if enabled:
            from tensorboardX import SummaryWriter
            self.jsonl = open(workdir / "metrics.jsonl", "a")
            self.tb = SummaryWriter(str(workdir / "tensorboard"))

    def write(self, step: int, metrics: dict):
        if not self.enabled:
            return
        self.jsonl.write(json.dumps({"step": step, **metrics}) + "\n")
        self.jsonl.flush()
        for k, v in metrics.items():
            if isinstance(v, (int, float)) and k != "epoch":
                self.tb.add_scalar(k, v, step)
        self.tb.flush()

    def close(self):
        if self.enabled:
            self.jsonl.close()
            self.tb.close()


def summarize_metrics(sums: dict, prefix: str) -> dict:
    n = max(float(sums["count"]), 1.0)
    return {f"{prefix}_{k}": float(sums[k]) / n for k in ("loss", "top1", "top5")}


def add_sums(total: Optional[dict], new: dict) -> dict:
    new = {k: float(v) for k, v in new.items()}
    return new if total is None else {k: total[k] + new[k] for k in total}


def evaluate_split(state, split: data.Split, batch_size: int, devices: Devices, step_fn,
                   num_classes: int = 0) -> dict:
    """`step_fn` (a jitted `eval_step`) over the split: its summed metrics, and with
    `num_classes`, also "per_class_correct" and "per_class_count" arrays."""
    sums = None
    per_class_correct, per_class_count = np.zeros(num_classes), np.zeros(num_classes)
    for local in data.eval_batches(split, batch_size, devices.process_index,
                                   devices.process_count):
        batch = devices.global_batch(local)
        metrics, correct = step_fn(state, batch)
        sums = add_sums(sums, jax.device_get(metrics))
        if num_classes:
            correct, labels, mask = jax.device_get((correct, batch["label"], batch["mask"]))
            np.add.at(per_class_correct, labels[mask > 0], correct[mask > 0])
            np.add.at(per_class_count, labels[mask > 0], 1)
    if num_classes:
        sums.update(per_class_correct=per_class_correct, per_class_count=per_class_count)
    return sums


class StopRequest:
    """SIGINT / SIGTERM: finish the step in flight, checkpoint, exit cleanly."""

    def __init__(self):
        self.signal = None
        self.previous = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}

    def close(self):
        for s, handler in self.previous.items():
            signal.signal(s, handler)

    def _handle(self, signum, frame):
        self.signal = signal.Signals(signum).name

    def requested(self) -> bool:
        if jax.process_count() == 1:
            return self.signal is not None
        from jax.experimental import multihost_utils  # every process must agree to stop
        return bool(multihost_utils.process_allgather(np.int32(self.signal is not None)).any())


# ---- the loop -------------------------------------------------------------------------------

def resolve_run_config(given: dict, workdir: pathlib.Path) -> Config:
    """The flags given, or, when the workdir holds a run, that run's config (resume)."""
    saved_path = workdir / "config.json"
    if not (saved_path.exists() and (workdir / "checkpoints" / ckpt_lib.LATEST).exists()):
        return Config().replace(**given)
    saved = load_json(saved_path)
    for name, value in given.items():
        if name not in Config.RUN_CONTROL and getattr(saved, name) != value:
            raise ValueError(f"{workdir} holds a run with {name}={getattr(saved, name)!r} but "
                             f"{name}={value!r} was passed; drop the flag to resume that run or "
                             "pass another --workdir for a new one")
    return saved.replace(**{k: v for k, v in given.items() if k in Config.RUN_CONTROL})


def train(config: Config) -> dict:
    """Train (or resume) the run of `config` in config.workdir. Returns the final metrics."""
    workdir = pathlib.Path(config.workdir)
    main_process = jax.process_index() == 0
    devices = Devices(config.batch_size)
    if config.batch_size % devices.process_count:
        raise ValueError(f"batch_size {config.batch_size} must split evenly over "
                         f"{devices.process_count} processes")
    say = print if main_process else (lambda *a, **k: None)

    train_split = data.load(config.dataset, config.split, config.data_dir, config.offline)
    train_split, val_split = data.split_validation(train_split, config.val_fraction, config.seed)
    steps_per_epoch = len(train_split) // config.batch_size
    if steps_per_epoch == 0:
        raise ValueError(f"the training split has {len(train_split)} examples, fewer than one "
                         f"batch of {config.batch_size}; lower --batch-size")
    total_steps = config.epochs * steps_per_epoch

    schedule, init_fn = state_initializer(config, steps_per_epoch)
    abstract_state = devices.abstract(jax.eval_shape(init_fn, jax.random.key(0)))
    checkpoints = ckpt_lib.Checkpoints(workdir / "checkpoints", config.keep,
                                       keep_best=val_split is not None)
    base_rng = jax.random.key(config.seed)
    if checkpoints.latest_step() is not None:
        step = checkpoints.latest_step()
        state, _, position = checkpoints.restore(step, abstract_state)
        base_rng = jax.random.wrap_key_data(np.asarray(position["rng"], np.uint32))
        say(f"resuming {workdir} from step {step} (epoch {step // steps_per_epoch + 1})")
    else:
        state = jax.jit(init_fn, out_shardings=devices.replicated)(base_rng)
    if main_process:
        save_json(config, workdir / "config.json")

    p_train_step = jax.jit(functools.partial(train_step, config=config, schedule=schedule),
                           out_shardings=devices.replicated, donate_argnums=0)
    p_eval_step = jax.jit(functools.partial(eval_step, config=config),
                          out_shardings=(devices.replicated, devices.batch_sharded))
    log = MetricsLog(workdir, main_process)
    stop = StopRequest()
    rng_data = np.asarray(jax.random.key_data(base_rng)).tolist()

    def save(state, metrics=None):
        step = int(state.step)
        checkpoints.save(state, config, {"step": step, "epoch": step // steps_per_epoch,
                                         "steps_per_epoch": steps_per_epoch, "rng": rng_data},
                         metrics)
        return step

    from tqdm import tqdm
    step = int(state.step)
    summary = {}
    try:
        while step < total_steps:
            epoch, offset = divmod(step, steps_per_epoch)
            bar = tqdm(total=steps_per_epoch, initial=offset, desc=f"epoch {epoch + 1}/{config.epochs}",
                       unit="step", disable=not (config.progress and main_process), leave=False)
            sums, pending, t_start, images_seen = None, None, None, 0
            for local in data.train_batches(train_split, config.batch_size, config.seed, epoch,
                                            offset, devices.process_index, devices.process_count):
                state, metrics = p_train_step(state, devices.global_batch(local), base_rng)
                step += 1
                # Read the previous step's metrics while this one runs (keeps the device busy).
                if pending is not None:
                    sums = _check_and_add(sums, pending, step - 1, checkpoints)
                    if t_start is None:  # time from the end of the first (compiling) step
                        t_start = time.perf_counter()
                    else:
                        images_seen += config.batch_size
                    if bar.n % 10 == 0:
                        bar.set_postfix(loss=f"{sums['loss'] / sums['count']:.3f}",
                                        top1=f"{sums['top1'] / sums['count']:.3f}",
                                        img_s=f"{images_seen / max(time.perf_counter() - t_start, 1e-9):.0f}")
                pending = metrics
                bar.update(1)
                limit = config.max_steps is not None and step >= config.max_steps
                if limit or stop.requested():
                    sums = _check_and_add(sums, pending, step, checkpoints)
                    bar.close()
                    save(state)
                    why = (f"--max-steps {config.max_steps}" if limit
                           else f"{stop.signal or 'a stop request'}")
                    say(f"stopped at step {step} ({why}); saved a checkpoint in "
                        f"{checkpoints.directory}; rerun the same command to resume")
                    return {"step": step, "stopped": True}
            sums = _check_and_add(sums, pending, step, checkpoints)
            bar.close()
            elapsed = time.perf_counter() - t_start if t_start else 0.0
            summary = {"epoch": epoch + 1, **summarize_metrics(sums, "train"),
                       "lr": float(pending["lr"]),
                       "images_per_s": images_seen / elapsed if elapsed else 0.0}
            if val_split is not None:
                summary.update(summarize_metrics(
                    evaluate_split(state, val_split, config.batch_size, devices, p_eval_step), "val"))
            log.write(step, summary)
            say(format_epoch(summary, config.epochs))
            if (epoch + 1) % config.checkpoint_every == 0 or step == total_steps:
                save(state, {"val_top1": summary["val_top1"]} if val_split is not None else None)
    finally:
        stop.close()
        log.close()
        checkpoints.close()
    say(f"done: {total_steps} steps; checkpoints in {checkpoints.directory} "
        f"(evaluate with: python -m mobilenet_jax.evaluate --ckpt {checkpoints.directory / 'latest'})")
    return {"step": step, "stopped": False, **summary}


def _check_and_add(sums, metrics, step, checkpoints):
    metrics = jax.device_get(metrics)
    if not np.isfinite(metrics["loss"]):
        last = checkpoints.latest_step()
        kept = (f"the last good checkpoint (step {last}) is intact" if last is not None
                else "no checkpoint had been saved yet")
        raise TrainingStopped(f"the loss became {float(metrics['loss'])} at step {step}; "
                              f"{kept}. Lower --lr or raise --warmup-epochs, then rerun")
    return add_sums(sums, {k: v for k, v in metrics.items() if k != "lr"})


def format_epoch(m: dict, epochs: int) -> str:
    line = (f"epoch {m['epoch']:>3}/{epochs}  train loss {m['train_loss']:.4f} "
            f"top1 {m['train_top1']:.4f} top5 {m['train_top5']:.4f}")
    if "val_loss" in m:
        line += f" | val loss {m['val_loss']:.4f} top1 {m['val_top1']:.4f} top5 {m['val_top5']:.4f}"
    return line + f" | lr {m['lr']:.4g} | {m['images_per_s']:.0f} img/s"


def main(argv=None):
    parser = OneLineErrorParser(prog="python -m mobilenet_jax.train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_flags(parser, all_optional=True)
    args = parser.parse_args(argv)
    given = {k: v for k, v in vars(args).items() if v is not None}
    try:
        config = Config().replace(**given)  # validates the flags before anything heavy
        maybe_initialize_distributed(config.distributed)
        workdir = pathlib.Path(config.workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        config = resolve_run_config(given, workdir)
        hostmem.keep_freed_memory(estimated_step_bytes(config, config.batch_size))
        train(config)
    except (ValueError, data.DataError, ckpt_lib.CheckpointError, TrainingStopped) as e:
        fail(str(e))


if __name__ == "__main__":
    main()
