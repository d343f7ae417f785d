"""BatchNorm's channel sums alone, as XLA:CPU compiles them, on the shapes of the α 0.25,
stem 1, batch 64 network's BatchNorms (and two of α 1.0 at batch 128):

- `a call alone`: a jitted call that adds 1 to C numbers (what the others' times include);
- `sum`: one plain sum over all axes but the channels (XLA hands it to YNNPACK);
- `sum (x-m)²`: the same of an elementwise expression, as the variance was summed;
- `two sums`: sum(g) and sum(g * d), each whole, as the gradient summed them;
- `_channel_sums`: the same two in one variadic reduction of XLA's own over the
  second-to-last axis, then over the rows left (`models/batch_norm.py`).

    python experiments/cpu_layers/channel_sums.py
    taskset -c 0 python experiments/cpu_layers/channel_sums.py

Microseconds per jitted call (median of 200 after 5 warm-up calls): one call computes one
form once, as a train step does, where the sums wait for each other.
"""
import os

import jax

from mobilenet_jax import process
from mobilenet_jax.benchmarks.timing import time_steps
from mobilenet_jax.models.batch_norm import _channel_sums

SHAPES = [(64, 32, 32, 8), (64, 32, 32, 16), (64, 16, 16, 16), (64, 16, 16, 32), (64, 8, 8, 64),
          (64, 4, 4, 128), (64, 2, 2, 256), (128, 32, 32, 32), (128, 16, 16, 128)]
AXES = (0, 1, 2)
FORMS = {
    "a call alone": lambda x, g, m: m + 1,
    "sum": lambda x, g, m: x.sum(AXES),
    "sum (x-m)²": lambda x, g, m: ((x - m) ** 2).sum(AXES),
    "two sums": lambda x, g, m: (g.sum(AXES), (g * (x - m)).sum(AXES)),
    "_channel_sums": lambda x, g, m: _channel_sums(g, g * (x - m)),
}


def main():
    process.exec_with_tcmalloc()  # the CLIs' allocator
    print(f"cores: {len(os.sched_getaffinity(0))}, "
          f"{'tcmalloc' if process.uses_tcmalloc() else 'glibc malloc'}\n")
    print("| shape | MiB | " + " | ".join(f"{name} µs" for name in FORMS)
          + " | two sums / _channel_sums |")
    print("|---|---|" + "---|" * (len(FORMS) + 1))
    for shape in SHAPES:
        x, g = (jax.random.normal(jax.random.key(k), shape) for k in (0, 1))
        m = x.mean(AXES)
        row = {}
        for name, form in FORMS.items():
            fn = jax.jit(form)
            row[name] = 1e6 * time_steps(lambda: fn(x, g, m), jax.block_until_ready, warmup=5,
                                         min_steps=200, min_time_s=0)["median_step_s"]
        print(f"| {shape} | {x.size * 4 / 2**20:.2f} | "
              + " | ".join(f"{us:.1f}" for us in row.values())
              + f" | {row['two sums'] / row['_channel_sums']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
