"""Throughput of the real training step and of inference, on synthetic CIFAR-shaped data.

    python -m mobilenet_jax.benchmark --alphas 0.1,0.25,1.0 --kernels reference,cpu
    python -m mobilenet_jax.benchmark --smoke --json /tmp/bench.json

Times the train step that `train` runs (`steps.build(config).jit_steps(devices).train`: state
replicated and donated, batch sharded over the device mesh) on synthetic uint8 32x32 batches,
and for inference the model's forward pass on a normalised float batch (what the peers time),
and the eval step on the uint8 batch (normalisation and metrics too). Timing follows
../shared/bench/bench_util.py: warm-up steps, then at least 20 steps and 4 s (at most
30 s), median step time. Also reported: compile time,
peak memory (process max RSS on CPU; device peak bytes where the backend reports them, and
XLA's own estimate of the compiled step's buffers), achieved GFLOP/s (train: 3 x 2 x forward
mult-adds per image, inference: 2 x mult-adds) next to a measured float32 2048^3 matmul, and
the input pipeline's cost per step: the on-device augmentation + normalisation timed alone,
and the host-side batch creation (`data.train_batches` gather +
`make_array_from_process_local_data`). Beside the clock, from getrusage over the timed steps:
cores busy (process CPU time / wall time), page faults per step, and per step the context
switches of waiting threads and of preempted ones (JSON only).
"""
import argparse
import json
import os
import platform
import resource
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from mobilenet_jax import cli, data, hostmem, steps
from mobilenet_jax.config import Config, DTYPES
from mobilenet_jax.layers import KERNEL_CHOICES, resolve_kernels
from mobilenet_jax.model import MobileNetV1
from mobilenet_jax.parallel import Devices
from mobilenet_jax.summary import summarize, totals

WARMUP, MIN_STEPS, MIN_TIME_S, MAX_TIME_S, MIN_STEPS_HARD = 3, 20, 4.0, 30.0, 5
SMOKE = dict(warmup=1, min_steps=2, min_time_s=0.0, max_time_s=5.0)
DATASET_IMAGE = (32, 32, 3)  # CIFAR: the step resizes to --resolution itself, as in training
STEPS_PER_EPOCH = 390        # CIFAR-100 train split / 128; only shapes the lr schedule


def time_steps(step_fn, sync_fn, warmup=WARMUP, min_steps=MIN_STEPS, min_time_s=MIN_TIME_S,
               max_time_s=MAX_TIME_S):
    """bench_util.time_steps: warm-up, then >= min_steps and >= min_time_s; median step time.
    Also what the process did meanwhile, per timed step (clock-free, from getrusage): cores
    busy, page faults, and context switches its threads gave up (waits) or were forced to."""
    for _ in range(warmup):
        sync_fn(step_fn())
    usage = resource.getrusage(resource.RUSAGE_SELF)
    times, start = [], time.perf_counter()
    while True:
        t = time.perf_counter()
        sync_fn(step_fn())
        times.append(time.perf_counter() - t)
        elapsed, n = time.perf_counter() - start, len(times)
        if ((n >= min_steps and elapsed >= min_time_s)
                or (elapsed >= max_time_s and n >= min(MIN_STEPS_HARD, min_steps))):
            break
    wall, end = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF)
    q = statistics.quantiles(times, n=4) if len(times) >= 4 else [min(times), 0, max(times)]
    med, n = statistics.median(times), len(times)
    return {"steps": n, "median_step_s": med, "min_step_s": min(times),
            "iqr_rel": (q[2] - q[0]) / med,
            "cores_busy": (end.ru_utime + end.ru_stime - usage.ru_utime - usage.ru_stime) / wall,
            "page_faults_per_step": (end.ru_minflt + end.ru_majflt - usage.ru_minflt
                                     - usage.ru_majflt) / n,
            "waits_per_step": (end.ru_nvcsw - usage.ru_nvcsw) / n,
            "preemptions_per_step": (end.ru_nivcsw - usage.ru_nivcsw) / n}


def machine_info() -> dict:
    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    import flax
    import jaxlib
    import optax
    dev = jax.devices()[0]
    return {"cpu": cpu, "cpu_count": os.cpu_count(),
            "affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
            "backend": jax.default_backend(), "device_kind": dev.device_kind,
            "device_count": jax.device_count(), "host": platform.node(),
            "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "versions": {"jax": jax.__version__, "jaxlib": jaxlib.__version__,
                         "flax": flax.__version__, "optax": optax.__version__,
                         "numpy": np.__version__, "python": platform.python_version()},
            "xla_flags": os.environ.get("XLA_FLAGS", "")}


def matmul_peak(n=2048, reps=10) -> dict:
    """Practical float32 peak: median GFLOP/s of a jitted n^3 matmul (as peak.py does)."""
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
    f = jax.jit(jnp.matmul)
    f(a, b).block_until_ready()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        f(a, b).block_until_ready()
        times.append(time.perf_counter() - t)
    return {"n": n, "gflops_median": 2 * n ** 3 / statistics.median(times) / 1e9,
            "gflops_best": 2 * n ** 3 / min(times) / 1e9}


def memory_info(compiled=None) -> dict:
    out = {"max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    try:
        stats = jax.devices()[0].memory_stats()
    except Exception:  # noqa: BLE001 - not every backend has it
        stats = None
    if stats:
        out["device_peak_mb"] = stats.get("peak_bytes_in_use", 0) / 2 ** 20
    if compiled is not None:
        try:
            m = compiled.memory_analysis()
            out["xla_temp_mb"] = m.temp_size_in_bytes / 2 ** 20
            out["xla_args_mb"] = m.argument_size_in_bytes / 2 ** 20
        except Exception:  # noqa: BLE001
            pass
    return out


def synthetic_batch(batch_size: int, num_classes: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {"image": rng.integers(0, 256, (batch_size, *DATASET_IMAGE), dtype=np.uint8),
            "label": rng.integers(0, num_classes, (batch_size,), dtype=np.int32)}


def forward_mult_adds(config: Config) -> int:
    model = MobileNetV1(**config.model_kwargs())
    return totals(summarize(model, config.resolution))["mult_adds"]


def bench_train(config: Config, timing: dict, pipeline: bool) -> dict:
    devices = Devices(config.batch_size)
    local = synthetic_batch(config.batch_size, config.num_classes)
    batch = devices.global_batch(local)
    rng = jax.random.key(1)

    training = steps.build(config, STEPS_PER_EPOCH)
    state = training.new_state(jax.random.key(0), devices)
    t = time.perf_counter()
    compiled = training.jit_steps(devices).train.lower(state, batch, rng).compile()
    compile_s = time.perf_counter() - t
    holder = [state]  # the step donates its state: carry the new one into the next call

    def one():
        holder[0], metrics = compiled(holder[0], batch, rng)
        return metrics
    res = time_steps(one, jax.block_until_ready, **timing)
    res.update(compile_s=compile_s, img_per_s=config.batch_size / res["median_step_s"],
               memory=memory_info(compiled))
    del compiled, state, holder
    if pipeline:
        res["pipeline"] = bench_pipeline(config, devices, batch, res, timing)
    return res


def bench_pipeline(config, devices, batch, res, timing) -> dict:
    """The input pipeline's cost per step: on the device, the step's own augmentation and
    normalisation timed alone (jitted as in the step; inside the step XLA may fuse it with the
    stem, so this is an upper bound), and on the host, `data.train_batches` (gather) plus
    `make_array_from_process_local_data`. Both timed directly: the difference of two step
    medians is below this machine's run-to-run noise."""
    prepare = jax.jit(lambda images, key: steps.normalize(
        data.augment(images, key) if config.augment else images, config))
    key = jax.random.key(2)
    on_device = time_steps(lambda: prepare(batch["image"], key), jax.block_until_ready,
                           **timing)["median_step_s"]
    n = max(config.batch_size * 20, 10_000)
    rng = np.random.default_rng(0)
    split = data.Split(rng.integers(0, 256, (n, *DATASET_IMAGE), dtype=np.uint8),
                       rng.integers(0, config.num_classes, (n,), dtype=np.int32))
    times = []
    for epoch in range(2):
        it = data.train_batches(split, config.batch_size, 0, epoch)
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


def bench_infer(config: Config, batch_size: int, timing: dict) -> dict:
    """The forward pass on a normalised float batch, which is what the peers time; and
    the eval step (uint8 batch in: normalisation, forward, loss and top-1/5 counts)."""
    devices = Devices(batch_size)
    training = steps.build(config)
    state = training.new_state(jax.random.key(0), devices)
    local = synthetic_batch(batch_size, config.num_classes)
    local["mask"] = np.ones((batch_size,), np.float32)
    batch = devices.global_batch(local)
    images = jax.jit(lambda x: steps.normalize(x, config))(batch["image"])
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    forward = jax.jit(lambda v, x: state.apply_fn(v, x, train=False))
    t = time.perf_counter()
    compiled = forward.lower(variables, images).compile()
    compile_s = time.perf_counter() - t
    res = time_steps(lambda: compiled(variables, images), jax.block_until_ready, **timing)
    res.update(compile_s=compile_s, img_per_s=batch_size / res["median_step_s"],
               memory=memory_info(compiled))
    step = training.jit_steps(devices).eval.lower(state, batch).compile()
    eval_res = time_steps(lambda: step(state, batch), jax.block_until_ready, **timing)
    res["eval_step"] = {"median_step_s": eval_res["median_step_s"],
                        "img_per_s": batch_size / eval_res["median_step_s"]}
    return res


def parse_list(text, typ, name):
    try:
        values = [typ(v) for v in text.split(",") if v.strip()]
    except ValueError:
        cli.fail(f"--{name} must be a comma-separated list, got {text!r}")
    if not values:
        cli.fail(f"--{name} is empty")
    return values


def format_table(records) -> str:
    head = (f"{'mode':<6} {'alpha':>5} {'kernels':<14} {'batch':>5} {'img/s':>9} "
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
        kernels = r["kernels"] + (f"->{r['resolved']}" if r["resolved"] != r["kernels"] else "")
        lines.append(f"{r['mode']:<6} {r['alpha']:>5} {kernels:<14} {r['batch']:>5} "
                     f"{r['img_per_s']:>9,.0f} {1000 * r['median_step_s']:>8.2f} "
                     f"{r['gflops']:>8.1f} {r['pct_of_peak']:>5.1f}% {r['compile_s']:>9.1f} "
                     f"{r['memory']['max_rss_mb']:>7.0f} {r['cores_busy']:>5.2f} "
                     f"{r['page_faults_per_step']:>6.0f}  {pipe}")
    return "\n".join(lines)


def main(argv=None):
    parser = cli.parser("mobilenet_jax.benchmark", __doc__)
    parser.add_argument("--alphas", default="0.1,0.25,1.0", help="width multipliers (comma list)")
    parser.add_argument("--batch-size", type=int, default=128, help="training batch (default 128)")
    parser.add_argument("--infer-batch-size", type=int, default=1024,
                        help="inference batch (default 1024)")
    parser.add_argument("--resolution", type=int, default=32, help="input resolution (default 32)")
    parser.add_argument("--stem-stride", type=int, default=2, choices=(1, 2),
                        help="stride of the first conv (default 2)")
    parser.add_argument("--dtype", default="float32", choices=DTYPES)
    parser.add_argument("--kernels", default="auto",
                        help=f"kernel policies, comma list of {KERNEL_CHOICES} (default auto)")
    parser.add_argument("--mode", default="both", choices=("train", "infer", "both"))
    parser.add_argument("--steps", type=int, default=MIN_STEPS,
                        help=f"minimum timed steps (default {MIN_STEPS}; also >= 4 s)")
    parser.add_argument("--pipeline", action=argparse.BooleanOptionalAction, default=True,
                        help="also time the input pipeline: on-device augmentation and the "
                             "host-side batch creation (first kernel policy of each alpha; "
                             "default on)")
    parser.add_argument("--smoke", action="store_true",
                        help="CI check: alpha 0.05, batch 8, 2 timed steps, no time minimum")
    parser.add_argument("--json", default=None, help="write all results to this JSON file")
    args = parser.parse_args(argv)

    policies = parse_list(args.kernels, str, "kernels")
    for policy in policies:
        if policy not in KERNEL_CHOICES:
            cli.fail(f"unknown kernel policy {policy!r}; choose from {KERNEL_CHOICES}")
    if args.smoke:
        alphas, batch, infer_batch, timing = [0.05], 8, 16, SMOKE
    else:
        alphas, batch, infer_batch = parse_list(args.alphas, float, "alphas"), args.batch_size, \
            args.infer_batch_size
        timing = dict(warmup=WARMUP, min_steps=args.steps, min_time_s=MIN_TIME_S,
                      max_time_s=MAX_TIME_S)
    for name in ("batch", "infer_batch"):
        if locals()[name] < 1:
            cli.fail(f"{name.replace('_', '-')} size must be >= 1")
    if args.resolution < 1:
        cli.fail("--resolution must be >= 1")
    try:
        configs = {a: Config(width_multiplier=a, batch_size=batch, resolution=args.resolution,
                             stem_stride=args.stem_stride, dtype=args.dtype) for a in alphas}
    except ValueError as e:
        cli.fail(str(e))

    # The allocator is chosen once per process, before JAX starts, for the run's largest step
    # (hostmem): time small and large models in separate runs, as the sitting script does
    # (experiments/cpu_throughput/run_sitting.sh).
    modes = ("train", "infer") if args.mode == "both" else (args.mode,)
    step_bytes = max(hostmem.estimated_step_bytes(c, batch if m == "train" else infer_batch, m == "train")
                     for c in configs.values() for m in modes)
    applied = hostmem.keep_freed_memory(step_bytes)
    info = machine_info()
    info["keep_freed_memory"] = applied
    info["single_arena"] = applied and hostmem.needs_single_arena(step_bytes)
    peak = matmul_peak(512 if args.smoke else 2048)
    print(f"# {info['cpu']} | {info['cpu_count']} cores | backend {info['backend']} "
          f"({info['device_kind']}) | jax {info['versions']['jax']} flax "
          f"{info['versions']['flax']} optax {info['versions']['optax']} python "
          f"{info['versions']['python']} | keep freed memory "
          f"{'on' if info['keep_freed_memory'] else 'off'}"
          f"{', single arena' if info['single_arena'] else ''}", flush=True)
    print(f"# float32 {peak['n']}^3 matmul: {peak['gflops_median']:.1f} GFLOP/s (median)",
          flush=True)
    records = []
    for alpha in alphas:
        base = configs[alpha]
        macs = forward_mult_adds(base)
        for mode in modes:
            for k, policy in enumerate(policies):
                config = base.replace(kernels=policy)
                rec = {"mode": mode, "alpha": alpha, "kernels": policy,
                       "resolved": resolve_kernels(policy, info["backend"]),
                       "batch": batch if mode == "train" else infer_batch,
                       "resolution": args.resolution, "stem_stride": args.stem_stride,
                       "dtype": args.dtype,
                       "forward_mult_adds_per_image": macs,
                       "flops_per_image": (6 if mode == "train" else 2) * macs}
                try:
                    if mode == "train":
                        res = bench_train(config, timing, pipeline=args.pipeline and k == 0)
                    else:
                        res = bench_infer(config, infer_batch, timing)
                except Exception as e:  # noqa: BLE001 - report and go on with the others
                    rec["error"] = repr(e)[:300]
                    records.append(rec)
                    print(format_table([rec]).splitlines()[-1], flush=True)
                    continue
                rec.update(res)
                rec["gflops"] = rec["flops_per_image"] * rec["img_per_s"] / 1e9
                rec["pct_of_peak"] = 100 * rec["gflops"] / peak["gflops_median"]
                records.append(rec)
                print(format_table([rec]).splitlines()[-1], flush=True)
    print()
    print(format_table(records))
    result = {"machine": info, "matmul_peak": peak,
              "settings": {"alphas": alphas, "batch_size": batch, "infer_batch_size": infer_batch,
                           "resolution": args.resolution, "stem_stride": args.stem_stride,
                           "dtype": args.dtype,
                           "kernels": policies, "mode": args.mode, "smoke": args.smoke,
                           "timing": timing,
                           "command": " ".join(["python -m mobilenet_jax.benchmark",
                                                *(sys.argv[1:] if argv is None else argv)])},
              "results": records}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
            f.write("\n")
    return result


if __name__ == "__main__":
    main()
