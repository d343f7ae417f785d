"""The same inference step, timed many times in a row: how one process's step time moves.

    python experiments/train_step_profile/step_timeline.py --alpha 0.1 --steps 300

Prints the median ms of each group of 10 consecutive forward passes (batch 1024, the model
as `python -m mobilenet_jax.benchmark --mode infer` runs it, allocator as the CLIs set it),
then the fastest step and the median of all. Nothing changes between steps, so a group that is
slower than the rest shows the machine, not the code.
"""
import argparse
import time

import jax
import numpy as np

from mobilenet_jax import Config, process
from mobilenet_jax.models.memory import estimated_step_bytes
from mobilenet_jax.models.mobilenet import MobileNetV1

GROUP = 10


def main():
    process.exec_with_tcmalloc()  # the CLIs' allocator, where the system has it
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--alpha", type=float, default=0.1)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=300)
    args = parser.parse_args()
    config = Config(width_multiplier=args.alpha)
    process.keep_freed_memory(estimated_step_bytes(config, args.batch_size, train=False))
    model = MobileNetV1(**config.model_kwargs())
    x = jax.random.normal(jax.random.key(0), (args.batch_size, 32, 32, 3))
    variables = model.init(jax.random.key(1), x[:2])
    forward = jax.jit(lambda v, x: model.apply(v, x)).lower(variables, x).compile()
    for _ in range(5):
        forward(variables, x).block_until_ready()
    times = []
    for _ in range(args.steps // GROUP * GROUP):
        t = time.perf_counter()
        forward(variables, x).block_until_ready()
        times.append((time.perf_counter() - t) * 1e3)
    groups = np.median(np.array(times).reshape(-1, GROUP), axis=1)
    print(f"alpha {args.alpha}, batch {args.batch_size}, kernels {model.kernels}: "
          f"median ms of each {GROUP} steps:")
    print(" ".join(f"{g:.0f}" for g in groups))
    print(f"fastest {min(times):.1f} ms, median {np.median(times):.1f} ms")


if __name__ == "__main__":
    main()
