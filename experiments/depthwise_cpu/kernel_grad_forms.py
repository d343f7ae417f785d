"""The depthwise kernel gradient as `layers._depthwise_bwd` sums it (one variadic reduction
over blocks of rows) against other ways of writing the same sums, at the stem-1 layer shapes.

    python experiments/depthwise_cpu/kernel_grad_forms.py [--calls 30]
    python experiments/depthwise_cpu/kernel_grad_forms.py --forms blocked,wide --layers 128,16,64,2 128,8,128,1

dk[i, j, c] = sum over (n, y, x) of window_ij(xp)[n, y, x, c] * g[n, y, x, c]. Forms:
- `blocked` (what the `cpu` policy runs: `layers._depthwise_kernel_grad`): the nine products
  in one variadic reduction over blocks of rows, (blocks, rows * out_w, C), then over the
  blocks;
- `wide`: the same with each row whole in the minor axis, (blocks, rows, out_w * C);
- `slices`: each product's batch cut in 8 slices added elementwise, then one channel sum;
- `stacked`: the nine products stacked on a new axis, one single-output sum.
Prints ms per call (median), and GB/s of the blocked form (xp and g read once), with each
form checked against the first (`--forms` lists blocked first).
"""
import argparse

from mobilenet_jax import process

process.keep_freed_memory(1 << 30)  # as the CLIs do, before JAX starts

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from mobilenet_jax.benchmarks.timing import time_steps  # noqa: E402
from mobilenet_jax.models.layers import (  # noqa: E402
    _depthwise_kernel_grad, _rows_per_block, _window)

# (batch, side, channels, stride): α 0.25 at batch 128 and α 1.0 at batch 64, stem 1.
LAYERS = [(128, 32, 8, 1), (128, 32, 16, 2), (128, 16, 32, 1), (128, 4, 128, 1),
          (64, 32, 32, 1), (64, 32, 64, 2), (64, 16, 128, 1), (64, 4, 512, 1)]


def _products(xp, g, s):
    out_hw = g.shape[1:3]
    return [_window(xp, i, j, out_hw, (s, s)) * g for i in range(3) for j in range(3)]


def _variadic_sum(products, axis):
    return jax.lax.reduce(tuple(products), (jnp.zeros((), jnp.float32),) * len(products),
                          lambda a, b: tuple(u + v for u, v in zip(a, b)), (axis,))


def blocked(xp, g, s):
    c = g.shape[-1]
    return _depthwise_kernel_grad(xp, g, (3, 3, c), (s, s)).reshape(9, c)


def wide(xp, g, s):
    n, out_h, out_w, c = g.shape
    rows = _rows_per_block(n * out_h, out_w * c * 8)
    parts = [p.reshape(n * out_h // rows, rows, out_w * c) for p in _products(xp, g, s)]
    return jnp.stack(_variadic_sum(parts, 1)).reshape(9, -1, c).sum(1)


def slices(xp, g, s, count=8):
    c = g.shape[-1]
    sums = []
    for p in _products(xp, g, s):
        p = p.reshape(count, -1, c)
        sums.append(sum(p[k] for k in range(1, count)) + p[0])
    return jnp.stack(sums).sum(1)


def stacked(xp, g, s):
    c = g.shape[-1]
    return jnp.stack(_products(xp, g, s), -2).reshape(-1, 9, c).sum(0)


FORMS = {"blocked": blocked, "wide": wide, "slices": slices, "stacked": stacked}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--calls", type=int, default=30)
    ap.add_argument("--forms", default=",".join(FORMS), help="comma-separated, blocked first")
    ap.add_argument("--layers", nargs="+", metavar="BATCH,SIDE,CHANNELS,STRIDE",
                    help="layer shapes (default: the stem-1 ones of LAYERS)")
    args = ap.parse_args()
    forms = [FORMS[name] for name in args.forms.split(",")]
    if forms[0] is not blocked:  # the reference sums and the GB/s column are the first form's
        ap.error("--forms must list blocked first")
    layers = ([tuple(int(v) for v in spec.split(",")) for spec in args.layers] if args.layers
              else LAYERS)
    print(f"{'batch side ch stride':>21} " + " ".join(f"{f.__name__ + ' ms':>11}" for f in forms)
          + "  blocked GB/s")
    for n, side, c, s in layers:
        xp = jax.random.normal(jax.random.key(0), (n, side + 2, side + 2, c))
        g = jax.random.normal(jax.random.key(1), (n, side // s, side // s, c))
        row, want = [], None
        for form in forms:
            fn = jax.jit(form, static_argnums=2)
            got = np.asarray(fn(xp, g, s))
            want = got if want is None else want  # the first form's (blocked's) sums
            # float32 sums of ~1e5 unit-variance products in different orders.
            np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-3 * np.abs(want).max())
            res = time_steps(lambda: fn(xp, g, s), jax.block_until_ready, warmup=2,
                             min_steps=args.calls, min_time_s=0, max_time_s=20)
            row.append(res["median_step_s"] * 1e3)
        gbps = (xp.size + g.size) * 4 / (row[0] * 1e-3) / 1e9
        print(f"{n:5d} {side:4d} {c:3d} {s:6d} " + " ".join(f"{ms:11.2f}" for ms in row)
              + f"  {gbps:12.1f}", flush=True)


if __name__ == "__main__":
    main()
