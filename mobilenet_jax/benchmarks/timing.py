"""How steps are timed, and what is recorded beside the clock: the machine, a matmul peak, memory.

The procedure: warm-up steps, then at least `min_steps` steps and `min_time_s` seconds (at
most `max_time_s`); the median step time counts.
"""
import contextlib
import os
import platform
import resource
import statistics
import time

import jax
import jax._src.monitoring
import jax.numpy as jnp
import numpy as np

WARMUP, MIN_STEPS, MIN_TIME_S, MAX_TIME_S, MIN_STEPS_HARD = 3, 20, 4.0, 30.0, 5


def time_steps(step_fn, sync_fn, warmup=WARMUP, min_steps=MIN_STEPS, min_time_s=MIN_TIME_S,
               max_time_s=MAX_TIME_S):
    """Warm-up, then >= min_steps and >= min_time_s; median step time. Also what the process
    did meanwhile, per timed step (clock-free, from getrusage): cores busy, page faults, and
    context switches its threads gave up (waits) or were forced to."""
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


@contextlib.contextmanager
def counting_cache_hits():
    """While open: a function that returns how many compiles the compilation cache has served
    (a step loaded, not compiled). Its listener is removed on leaving."""
    hits = []

    def listener(event, **_):
        if event == "/jax/compilation_cache/cache_hits":
            hits.append(1)

    jax.monitoring.register_event_listener(listener)
    try:
        yield lambda: len(hits)
    finally:
        _unregister_event_listener(listener)


# Public in newer jax; the oldest versions setup.cfg allows have only the private form.
_unregister_event_listener = getattr(jax.monitoring, "unregister_event_listener", None) or \
    jax._src.monitoring._unregister_event_listener_by_callback


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
    """Practical float32 peak: median GFLOP/s of a jitted n^3 matmul."""
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
