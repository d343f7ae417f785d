"""Page faults and kernel time per training step, with and without process.keep_freed_memory.

    python experiments/host_memory/page_faults.py --alpha 0.25 [--keep-freed-memory [--arenas A]] [--steps 20]

Runs the real jitted train step (synthetic batch 128) and reports, per step: wall time, minor
page faults, and user / system CPU time of the process (getrusage). Run it once with and once
without the flag: the flag is process-wide, so the two cases need separate processes.
`--arenas auto` (the default) decides per-thread or single glibc arena from the estimated step
buffer, as the CLIs do; `single` / `per-thread` force one.
"""
import argparse
import resource
import time

import jax

from mobilenet_jax import Config, process
from mobilenet_jax.benchmarks.throughput import SyntheticTrainStep
from mobilenet_jax.models.memory import estimated_step_bytes


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--alpha", type=float, default=0.25)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--keep-freed-memory", action="store_true")
    parser.add_argument("--arenas", choices=("auto", "single", "per-thread"), default="auto")
    args = parser.parse_args()

    config = Config(width_multiplier=args.alpha, batch_size=args.batch_size)
    step_bytes = {"auto": estimated_step_bytes(config, config.recipe.batch_size),
                  "single": process.THREAD_HEAP_BYTES + 1, "per-thread": 0}[args.arenas]
    applied = process.keep_freed_memory(step_bytes) if args.keep_freed_memory else False
    single = applied and process.needs_single_arena(step_bytes)
    step = SyntheticTrainStep(config)
    temp_mb = step.compiled.memory_analysis().temp_size_in_bytes / 2**20
    for _ in range(3):
        metrics = step()
    jax.block_until_ready(metrics)

    before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    for _ in range(args.steps):
        jax.block_until_ready(step())
    wall = (time.perf_counter() - start) / args.steps
    after = resource.getrusage(resource.RUSAGE_SELF)
    per_step = lambda field: (getattr(after, field) - getattr(before, field)) / args.steps
    print(f"alpha {args.alpha} batch {args.batch_size} keep_freed_memory {applied}"
          f"{' (single arena)' if single else ''}: "
          f"{wall * 1e3:.1f} ms/step, step temp buffer {temp_mb:.0f} MiB, "
          f"{per_step('ru_minflt'):.0f} minor page faults/step, "
          f"user {per_step('ru_utime') * 1e3:.1f} ms + system {per_step('ru_stime') * 1e3:.1f} ms "
          f"CPU/step")


if __name__ == "__main__":
    main()
