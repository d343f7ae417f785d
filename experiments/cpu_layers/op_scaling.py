"""What one op gains from a second core: median ms of single jitted ops, run once under
`taskset -c 0` and once on both cores (or however the process is pinned).

    taskset -c 0 .venv/bin/python experiments/cpu_layers/op_scaling.py
    taskset -c 0,1 .venv/bin/python experiments/cpu_layers/op_scaling.py

The shapes are those of α 0.25's 32x32 layers at batch 64 (4 MiB of float32). The channel
sum is what BatchNorm reduces (a `ynn_fusion (reduce)` in the train step's profile); the same
sum as a product with a row of ones goes through the matmul path instead.
"""
import json
import os
import statistics
import time

import jax
import jax.numpy as jnp


def median_ms(fn, *args, calls=50):
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def main():
    x = jax.random.normal(jax.random.key(0), (64, 32, 32, 16))
    a = jax.random.normal(jax.random.key(1), (1024, 1024))
    ones = jnp.ones((1, 64 * 32 * 32))
    ops = {
        "sin (compute-bound loop)": (jnp.sin, x),
        "x * 2 + 1 (memory-bound loop)": (lambda x: x * 2 + 1, x),
        "1024^2 matmul": (lambda a: a @ a, a),
        "channel sum (reduce)": (lambda x: x.sum((0, 1, 2)), x),
        "channel sum (ones @ x)": (lambda x: (ones @ x.reshape(-1, x.shape[-1]))[0], x),
    }
    row = {name: round(median_ms(jax.jit(fn), arg), 4) for name, (fn, arg) in ops.items()}
    row["cores"] = len(os.sched_getaffinity(0))
    print(json.dumps(row))


if __name__ == "__main__":
    main()
