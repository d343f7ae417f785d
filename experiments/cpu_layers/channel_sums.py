"""BatchNorm's channel sums alone, as XLA:CPU compiles them: a plain sum over all axes but the
channels against the same sum of an elementwise expression, (x - mean)^2 (the variance; the
gradient's sum(g * (x - mean)) compiles alike), on the shapes of the α 0.25, stem 1, batch 64
network's BatchNorms.

    python experiments/cpu_layers/channel_sums.py
    taskset -c 0 python experiments/cpu_layers/channel_sums.py

Microseconds per sum: one jitted call sums ten different inputs (so the call's own cost is
shared), median of the calls. On two cores the ten sums may run two at a time.
"""
import os

import jax
import jax.numpy as jnp

from mobilenet_jax import process
from mobilenet_jax.benchmarks.timing import time_steps

SHAPES = [(64, 32, 32, 8), (64, 32, 32, 16), (64, 16, 16, 32), (64, 8, 8, 64), (64, 4, 4, 128),
          (64, 2, 2, 256)]
INPUTS = 10
AXES = (0, 1, 2)


def plain(x, mean):
    return x.sum(AXES)


def squared_deviation(x, mean):
    return ((x - mean) ** 2).sum(AXES)


def main():
    process.exec_with_tcmalloc()  # the CLIs' allocator
    print(f"cores: {len(os.sched_getaffinity(0))}, "
          f"{'tcmalloc' if process.uses_tcmalloc() else 'glibc malloc'}\n")
    print("| shape | MiB | plain sum µs | GB/s | sum of (x - mean)² µs | GB/s | ratio |")
    print("|---|---|---|---|---|---|---|")
    for shape in SHAPES:
        xs = [jax.random.normal(jax.random.key(k), shape) for k in range(INPUTS)]
        means = [x.mean(AXES) for x in xs]
        row = []
        for form in (plain, squared_deviation):
            fn = jax.jit(lambda xs, ms: [form(x, m) for x, m in zip(xs, ms)])
            seconds = time_steps(lambda: fn(xs, means), jax.block_until_ready, warmup=2,
                                 min_steps=50, min_time_s=0)["median_step_s"] / INPUTS
            row.append(seconds)
        nbytes = xs[0].size * 4
        print(f"| {shape} | {nbytes / 2**20:.1f} | {row[0] * 1e6:.1f} | {nbytes / row[0] / 1e9:.1f} "
              f"| {row[1] * 1e6:.1f} | {nbytes / row[1] / 1e9:.1f} | {row[1] / row[0]:.2f} |",
              flush=True)


if __name__ == "__main__":
    main()
