"""XLA:CPU's fusion emitters on or off (`--xla_cpu_use_fusion_emitters=false`): how long a
train step and `init_state` take to compile, and a train step to run, with XLA's costly passes
off as in the tests (JAX_DISABLE_MOST_OPTIMIZATIONS=1) and on.

    python experiments/suite_time/fusion_emitters.py [--alphas 0.1,0.25]

Each setting in a fresh process without the compilation cache; one JSON line per setting.
"""
import argparse
import json
import os
import subprocess
import sys

MEASURE = r"""
import functools, json, sys, time
import jax, jax.numpy as jnp, numpy as np
from mobilenet_jax import Config
from mobilenet_jax.core import steps
alpha, kernels = float(sys.argv[1]), sys.argv[2]
rng = np.random.default_rng(0)
batch = {"image": jnp.asarray(rng.integers(0, 256, (64, 32, 32, 3), np.uint8)),
         "label": jnp.asarray(rng.integers(0, 100, 64).astype(np.int32))}
config = Config(width_multiplier=alpha, kernels=kernels)
training = steps.build(config, steps_per_epoch=10)
start = time.perf_counter()
init = jax.jit(training.init_state).lower(jax.random.key(0)).compile()
init_s = time.perf_counter() - start
state = init(jax.random.key(0))
step = jax.jit(functools.partial(steps.train_step, config=config, schedule=training.schedule))
start = time.perf_counter()
compiled = step.lower(state, batch, jax.random.key(1)).compile()
train_s = time.perf_counter() - start
for _ in range(3):
    state, _ = compiled(state, batch, jax.random.key(1))
jax.block_until_ready(state)
start = time.perf_counter()
for _ in range(20):
    state, _ = compiled(state, batch, jax.random.key(1))
jax.block_until_ready(state)
print(json.dumps({"init_compile_s": round(init_s, 2), "train_compile_s": round(train_s, 2),
                  "train_step_ms": round((time.perf_counter() - start) / 20 * 1000, 1)}))
"""


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--alphas", default="0.1,0.25")
    parser.add_argument("--kernels", default="auto,reference")
    args = parser.parse_args()
    for alpha in args.alphas.split(","):
        for kernels in args.kernels.split(","):
            for optimizations in ("off", "on"):
                for emitters in ("on", "off"):
                    env = {**os.environ, "JAX_ENABLE_COMPILATION_CACHE": "false",
                           "JAX_DISABLE_MOST_OPTIMIZATIONS": "1" if optimizations == "off" else "0",
                           "XLA_FLAGS": "" if emitters == "on"
                           else "--xla_cpu_use_fusion_emitters=false"}
                    out = subprocess.run([sys.executable, "-c", MEASURE, alpha, kernels],
                                         env=env, capture_output=True, text=True, check=True)
                    row = {"alpha": float(alpha), "kernels": kernels,
                           "xla_optimizations": optimizations, "fusion_emitters": emitters,
                           **json.loads(out.stdout.strip().splitlines()[-1])}
                    print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
