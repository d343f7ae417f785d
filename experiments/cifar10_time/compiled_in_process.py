"""The train step timed in the process that compiled it, with what might undo the slowdown
such a process shows against one that loaded the step from the compilation cache.

    .venv/bin/python experiments/cifar10_time/compiled_in_process.py --roundtrip
    .venv/bin/python experiments/cifar10_time/compiled_in_process.py --trim --pause 15

`--roundtrip` alternates the fresh executable with itself serialised and loaded back.
α 0.25, stem 1, batch 64 unless given; prints img/s (median step) per timing.
"""
import argparse
import ctypes
import time

import jax
from jax.experimental import serialize_executable

from mobilenet_jax import Config, process
from mobilenet_jax.benchmarks.throughput import SyntheticTrainStep
from mobilenet_jax.benchmarks.timing import time_steps
from mobilenet_jax.models.memory import estimated_step_bytes


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--alpha", type=float, default=0.25)
    ap.add_argument("--stem-stride", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--roundtrip", action="store_true", help="also time the executable "
                    "serialised and loaded back, alternating with the fresh one")
    ap.add_argument("--trim", action="store_true", help="malloc_trim(0) after compiling")
    ap.add_argument("--pause", type=float, default=0.0, help="seconds to wait after compiling")
    args = ap.parse_args()
    config = Config(width_multiplier=args.alpha, stem_stride=args.stem_stride,
                    batch_size=args.batch_size)
    process.keep_freed_memory(estimated_step_bytes(config, args.batch_size))  # as `train`
    step = SyntheticTrainStep(config, 100)
    variants = [("fresh", step.compiled)]
    if args.roundtrip:
        variants.append(("loaded back", serialize_executable.deserialize_and_load(
            *serialize_executable.serialize(step.compiled))))
    time.sleep(args.pause)
    if args.trim:
        ctypes.CDLL(None).malloc_trim(0)
    for name, compiled in variants * 2:
        step.compiled = compiled
        res = time_steps(step, jax.block_until_ready, warmup=2, min_steps=10, min_time_s=4,
                         max_time_s=20)
        print(f"{name}: {args.batch_size / res['median_step_s']:.0f} img/s", flush=True)


if __name__ == "__main__":
    main()
