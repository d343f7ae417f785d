"""What calling `init_state` and `eval_step` outside `jit` (op by op) costs against jitting them,
with XLA's costly passes off as in the tests.

    JAX_DISABLE_MOST_OPTIMIZATIONS=1 python experiments/suite_time/eager_vs_jit.py
"""
import functools
import time

import jax
import jax.numpy as jnp
import numpy as np

from mobilenet_jax import Config
from mobilenet_jax.core import steps


def seconds(fn):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    return time.perf_counter() - start


def main():
    config = Config(width_multiplier=0.1, num_classes=10, ema_decay=0.5, warmup_epochs=0)
    training = steps.build(config, steps_per_epoch=10)
    key = jax.random.key(0)
    print(f"init_state op by op: {seconds(lambda: training.init_state(key)):.1f} s")
    print(f"init_state jitted:   {seconds(lambda: jax.jit(training.init_state)(key)):.1f} s")
    state = jax.jit(training.init_state)(key)
    rng = np.random.default_rng(0)
    batch = {"image": jnp.asarray(rng.integers(0, 256, (16, 32, 32, 3), np.uint8)),
             "label": jnp.asarray(rng.integers(0, 10, 16).astype(np.int32)),
             "mask": jnp.ones(16)}
    step = functools.partial(steps.eval_step, config=config)
    print(f"eval_step op by op:  {seconds(lambda: step(state, batch)):.1f} s")
    print(f"eval_step jitted:    {seconds(lambda: jax.jit(step)(state, batch)):.1f} s")


if __name__ == "__main__":
    main()
