"""Does compiling the one-off initialisation unoptimised change its values, and what does it save?

    python experiments/suite_time/init_compile.py --alpha 0.1

Compiles `Training.init_state` (what `new_state` runs) at XLA's default optimisation and at
backend optimisation level 0, prints both compile times and whether every array is equal.
"""
import argparse
import time

import jax
import numpy as np

from mobilenet_jax import Config
from mobilenet_jax.core import steps
from mobilenet_jax.core.parallel import Devices


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--alpha", type=float, default=0.1)
    args = parser.parse_args()
    training = steps.build(Config(width_multiplier=args.alpha, num_classes=6))
    devices, rng = Devices(1), jax.random.key(0)
    results = {}
    for name, options in (("default", None), ("level 0", {"xla_backend_optimization_level": 0})):
        lowered = jax.jit(training.init_state, out_shardings=devices.replicated).lower(rng)
        start = time.perf_counter()
        compiled = lowered.compile(compiler_options=options)
        print(f"{name}: compile {time.perf_counter() - start:.2f} s")
        results[name] = jax.tree.leaves(compiled(rng))
    same = all(np.array_equal(np.asarray(a), np.asarray(b))
               for a, b in zip(results["default"], results["level 0"]))
    print(f"every array equal: {same} ({len(results['default'])} arrays)")


if __name__ == "__main__":
    main()
