"""Throughput of the real training step and of inference, on synthetic CIFAR-shaped data.

The train step is the one `train` runs (`steps.build(config).jit_steps(devices).train`: state
replicated and donated, batch sharded over the device mesh); inference is the model's forward
pass on a normalised float batch, and the eval step on the uint8 batch (normalisation and
metrics too). Beside the clock: compile time, peak memory, achieved GFLOP/s (train: 3 x 2 x
forward mult-adds per image, inference: 2 x mult-adds) and the input pipeline's cost per step.
"""
import statistics
import time
from typing import Callable

import jax
import numpy as np

from mobilenet_jax.benchmarks.timing import memory_info, time_steps
from mobilenet_jax.config import Config
from mobilenet_jax.core import steps
from mobilenet_jax.core.parallel import Devices
from mobilenet_jax.data import arrays, augment
from mobilenet_jax.models.mobilenet import MobileNetV1
from mobilenet_jax.models.summary import summarize, totals

SMOKE = dict(warmup=1, min_steps=2, min_time_s=0.0, max_time_s=5.0)
DATASET_IMAGE = (32, 32, 3)  # CIFAR: the step resizes to --resolution itself, as in training
STEPS_PER_EPOCH = 390        # CIFAR-100 train split / 128; only shapes the lr schedule


def synthetic_batch(batch_size: int, num_classes: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {"image": rng.integers(0, 256, (batch_size, *DATASET_IMAGE), dtype=np.uint8),
            "label": rng.integers(0, num_classes, (batch_size,), dtype=np.int32)}


def synthetic_split(num_examples: int, num_classes: int, seed: int = 0) -> arrays.Split:
    rng = np.random.default_rng(seed)
    return arrays.Split(rng.integers(0, 256, (num_examples, *DATASET_IMAGE), dtype=np.uint8),
                        rng.integers(0, num_classes, (num_examples,), dtype=np.int32))


def forward_mult_adds(config: Config) -> int:
    """Counted from shapes, the same for every kernel formulation; naming the backend keeps
    JAX's from starting before the allocator is set."""
    model = MobileNetV1(**config.model_kwargs(backend="cpu"))
    return totals(summarize(model, config.data.resolution))["mult_adds"]


class SyntheticTrainStep:
    """The train step `train` runs, compiled for one synthetic batch, with the state it carries
    from call to call (the step donates its state): each call runs one step."""

    def __init__(self, config: Config, steps_per_epoch: int = STEPS_PER_EPOCH):
        self.devices = Devices(config.recipe.batch_size)
        self.batch = self.devices.global_batch(
            synthetic_batch(config.recipe.batch_size, config.network.num_classes))
        self.rng = jax.random.key(1)
        training = steps.build(config, steps_per_epoch)
        self.state = training.new_state(jax.random.key(0), self.devices)
        t = time.perf_counter()
        self.compiled = training.jit_steps(self.devices).train.lower(
            self.state, self.batch, self.rng).compile()
        self.compile_s = time.perf_counter() - t

    def __call__(self):
        self.state, metrics = self.compiled(self.state, self.batch, self.rng)
        return metrics


def bench_train(config: Config, timing: dict, pipeline: bool,
                cache_hits: Callable[[], int] = lambda: 0, compile_only: bool = False) -> dict:
    """`cache_hits`: how many compiles the compilation cache has served so far (to tell a
    compile from a load). `compile_only`: the compile time alone."""
    hits = cache_hits()
    step = SyntheticTrainStep(config)
    cached = cache_hits() > hits
    if compile_only:
        return {"compile_s": step.compile_s, "compile_cached": cached}
    res = time_steps(step, jax.block_until_ready, **timing)
    res.update(compile_s=step.compile_s, compile_cached=cached,
               img_per_s=config.recipe.batch_size / res["median_step_s"],
               memory=memory_info(step.compiled))
    devices, batch = step.devices, step.batch
    del step  # its state and executable, before the pipeline's own
    if pipeline:
        res["pipeline"] = bench_pipeline(config, devices, batch, res, timing)
    return res


def bench_pipeline(config, devices, batch, res, timing) -> dict:
    """The input pipeline's cost per step: on the device, the step's own augmentation and
    normalisation timed alone (jitted as in the step; inside the step XLA may fuse it with the
    stem, so this is an upper bound), and on the host, `arrays.train_batches` (gather) plus
    `make_array_from_process_local_data`. Both timed directly: the difference of two step
    medians is below this machine's run-to-run noise."""
    prepare = jax.jit(lambda images, key: steps.normalize(
        augment.augment(images, key) if config.data.augment else images, config))
    key = jax.random.key(2)
    on_device = time_steps(lambda: prepare(batch["image"], key), jax.block_until_ready,
                           **timing)["median_step_s"]
    split = synthetic_split(max(config.recipe.batch_size * 20, 10_000), config.network.num_classes)
    times = []
    for epoch in range(2):
        it = arrays.train_batches(split, config.recipe.batch_size, 0, epoch)
        while True:
            t = time.perf_counter()
            local = next(it, None)
            if local is None:
                break
            jax.block_until_ready(devices.global_batch(local))
            times.append(time.perf_counter() - t)
            if len(times) >= (5 if timing is SMOKE else 200):
                break
    host = statistics.median(times)
    step = res["median_step_s"]
    return {"device_input_s": on_device, "device_input_pct_of_step": 100 * on_device / step,
            "host_batch_s": host, "host_batch_pct_of_step": 100 * host / step,
            "input_pct_of_step": 100 * (on_device + host) / step}


def bench_infer(config: Config, batch_size: int, timing: dict,
                cache_hits: Callable[[], int] = lambda: 0, compile_only: bool = False) -> dict:
    """The forward pass on a normalised float batch, which is what the peers time; and
    the eval step (uint8 batch in: normalisation, forward, loss and top-1/5 counts)."""
    devices = Devices(batch_size)
    training = steps.build(config)
    state = training.new_state(jax.random.key(0), devices)
    local = synthetic_batch(batch_size, config.network.num_classes)
    local["mask"] = np.ones((batch_size,), np.float32)
    batch = devices.global_batch(local)
    images = jax.jit(lambda x: steps.normalize(x, config))(batch["image"])
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    forward = jax.jit(lambda v, x: state.apply_fn(v, x, train=False))
    t, hits = time.perf_counter(), cache_hits()
    compiled = forward.lower(variables, images).compile()
    compile_s, cached = time.perf_counter() - t, cache_hits() > hits
    step = training.jit_steps(devices).eval.lower(state, batch).compile()
    if compile_only:
        return {"compile_s": compile_s, "compile_cached": cached}
    res = time_steps(lambda: compiled(variables, images), jax.block_until_ready, **timing)
    res.update(compile_s=compile_s, compile_cached=cached,
               img_per_s=batch_size / res["median_step_s"], memory=memory_info(compiled))
    eval_res = time_steps(lambda: step(state, batch), jax.block_until_ready, **timing)
    res["eval_step"] = {"median_step_s": eval_res["median_step_s"],
                        "img_per_s": batch_size / eval_res["median_step_s"]}
    return res


def format_table(records) -> str:
    head = (f"{'mode':<6} {'alpha':>5} {'kernels':<14} {'batch':>5} {'dtype':<8} {'img/s':>9} "
            f"{'step ms':>8} {'GFLOP/s':>8} {'%peak':>6} {'compile s':>9} {'rss MB':>7} "
            f"{'cores':>5} {'faults':>6}  notes")
    lines = [head, "-" * len(head)]
    for r in records:
        if "error" in r:
            lines.append(f"{r['mode']:<6} {r['alpha']:>5} {r['kernels']:<14} error: {r['error']}")
            continue
        p = r.get("pipeline")
        pipe = (f"input {p['input_pct_of_step']:.1f}% (device {p['device_input_pct_of_step']:.1f}"
                f"%, host {p['host_batch_pct_of_step']:.1f}%)" if p else "")
        if "eval_step" in r:  # inference: the img/s column is the forward pass alone
            pipe = f"eval step (uint8 in, metrics out) {r['eval_step']['img_per_s']:,.0f} img/s"
        if r.get("compile_cached"):
            pipe = f"compile: loaded from the cache; {pipe}"
        kernels = r["kernels"] + (f"->{r['resolved']}" if r["resolved"] != r["kernels"] else "")
        lines.append(f"{r['mode']:<6} {r['alpha']:>5} {kernels:<14} {r['batch']:>5} "
                     f"{r.get('dtype', 'float32'):<8} {r['img_per_s']:>9,.0f} "
                     f"{1000 * r['median_step_s']:>8.2f} "
                     f"{r['gflops']:>8.1f} {r['pct_of_peak']:>5.1f}% {r['compile_s']:>9.1f} "
                     f"{r['memory']['max_rss_mb']:>7.0f} {r['cores_busy']:>5.2f} "
                     f"{r['page_faults_per_step']:>6.0f}  {pipe}")
    return "\n".join(lines)
