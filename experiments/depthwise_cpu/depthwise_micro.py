"""Micro-benchmark: one depthwise 3x3 layer, forward+backward (dx, dk), per implementation.

    python experiments/depthwise_cpu/depthwise_micro.py [grouped,slices,vjp]
"""
import statistics, sys, time
import jax, jax.numpy as jnp
from mobilenet_jax.models.layers import DEPTHWISE_FORMS
from mobilenet_jax.models.spec import PAD1

SHAPES = [(128, 16, 16, 8, 1), (128, 16, 16, 16, 2), (128, 4, 4, 64, 1), (128, 8, 8, 32, 1),
          (128, 16, 16, 32, 1), (128, 4, 4, 512, 1)]

def bench(f, *a):
    jax.block_until_ready(f(*a)); ts = []
    for _ in range(30):
        t = time.perf_counter(); jax.block_until_ready(f(*a)); ts.append(time.perf_counter() - t)
    return statistics.median(ts)

impls = sys.argv[1].split(",") if len(sys.argv) > 1 else list(DEPTHWISE_FORMS)
for (n, h, w, c, s) in SHAPES:
    x = jax.random.normal(jax.random.key(0), (n, h, w, c))
    row = []
    for name in impls:
        m = DEPTHWISE_FORMS[name](c, (3, 3), strides=s, padding=PAD1, feature_group_count=c, use_bias=False)
        v = m.init(jax.random.key(1), x)
        g = jax.jit(jax.grad(lambda v, x: jnp.sum(jnp.sin(m.apply(v, x))), argnums=(0, 1)))
        fwd = jax.jit(m.apply)
        row.append(f"{name} fwd {1e3*bench(fwd, v, x):6.2f} f+b {1e3*bench(g, v, x):6.2f}")
    print((n, h, w, c, s), " | ".join(row), flush=True)
