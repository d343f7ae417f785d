"""Does compiling slow down a step that is already compiled? The train step is timed, then
another program (a train step of another width) is compiled in the same process, then the
first step is timed again; also the page faults and the context switches per step.

    python -m mobilenet_jax.benchmark --alphas 0.25 --stem-stride 1 --batch-size 64 \
        --mode train --compile-cache /tmp/cc                            # fills the cache
    python experiments/host_memory/compile_slows_step.py /tmp/cc   # glibc's malloc
    LD_PRELOAD=libtcmalloc_minimal.so.4 python experiments/host_memory/compile_slows_step.py /tmp/cc

With the cache filled, the step is loaded from it, not compiled, so the first timing is of a
process that has compiled nothing large. The allocator is what the process was started with
(glibc's, with the settings `train` makes, unless tcmalloc is preloaded).
"""
import argparse
import random
import resource

import jax

from mobilenet_jax import Config, process
from mobilenet_jax.benchmarks.throughput import SyntheticTrainStep
from mobilenet_jax.benchmarks.timing import time_steps
from mobilenet_jax.models.memory import estimated_step_bytes


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("cache", help="compilation cache directory")
    ap.add_argument("--alpha", type=float, default=0.25)
    ap.add_argument("--stem-stride", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=64)
    args = ap.parse_args()
    config = Config(width_multiplier=args.alpha, stem_stride=args.stem_stride,
                    batch_size=args.batch_size)
    process.keep_freed_memory(estimated_step_bytes(config, args.batch_size))  # as `train`
    process.use_compile_cache(args.cache)
    print("allocator:", "tcmalloc" if process.uses_tcmalloc() else "glibc", flush=True)
    step = SyntheticTrainStep(config)

    def timed(label):
        before = resource.getrusage(resource.RUSAGE_SELF)
        res = time_steps(step, jax.block_until_ready, warmup=2, min_steps=10, min_time_s=4,
                         max_time_s=20)
        after = resource.getrusage(resource.RUSAGE_SELF)
        n = res["steps"] + 2
        print(f"{label}: {args.batch_size / res['median_step_s']:,.0f} img/s; per step "
              f"{(after.ru_minflt - before.ru_minflt) / n:.0f} page faults, "
              f"{(after.ru_nvcsw - before.ru_nvcsw) / n:.0f} waits", flush=True)

    timed("the step")
    timed("the step again")
    other = config.replace(width_multiplier=0.5 + random.random() / 10)  # not in the cache
    SyntheticTrainStep(other)
    timed("after compiling another step")


if __name__ == "__main__":
    main()
