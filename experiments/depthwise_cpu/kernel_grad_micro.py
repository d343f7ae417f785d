"""The depthwise 3x3 conv's kernel gradient alone, at α=1.0's layer shapes (batch 128): which
formulation does XLA:CPU run fastest?

    python experiments/depthwise_cpu/kernel_grad_micro.py [--batch-size 128] [--reps 30]

dk[i, j, c] = sum over (n, y, x) of window_ij(xp)[n, y, x, c] * g[n, y, x, c], for the padded
input xp and the output gradient g, both materialised first as in `layers._depthwise_bwd`:
- `taps`: what the `cpu` policy ran when this was measured: nine (slice, multiply, reduce)
  column sums;
- `variadic`: one variadic `lax.reduce` over the nine products, which lets XLA read the
  windows in place instead of copying each;
- `variadic x2`: the same on each half of the batch, two independent ops for the two cores;
- `grouped`: XLA's own kernel gradient of the grouped convolution (the `reference` policy).
Prints milliseconds per call (median) and each form's largest difference from `taps`.
"""
import argparse

from mobilenet_jax import process

process.keep_freed_memory(1 << 30)  # as the CLIs do, before JAX starts

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from mobilenet_jax.benchmarks.timing import time_steps  # noqa: E402
from mobilenet_jax.models.layers import _window, materialize  # noqa: E402

# (input side, channels, stride) of α=1.0's depthwise layers at a 16x16 stem output.
LAYERS = [(16, 32, 1), (16, 64, 2), (8, 128, 1), (8, 128, 2), (4, 256, 1), (4, 256, 2),
          (2, 512, 1), (2, 512, 2), (1, 1024, 1)]
COUNT = {(2, 512, 1): 5}  # five identical layers


def taps(xp, g, s):
    g, xp = materialize(g, xp)
    out_hw, c = g.shape[1:3], xp.shape[3]
    return jnp.stack([jnp.sum((_window(xp, i, j, out_hw, (s, s)) * g).reshape(-1, c), axis=0)
                      for i in range(3) for j in range(3)])


def _variadic(xp, g, s):
    out_hw = g.shape[1:3]
    products = [_window(xp, i, j, out_hw, (s, s)) * g for i in range(3) for j in range(3)]
    sums = jax.lax.reduce(products, [jnp.zeros((), g.dtype)] * 9,
                          lambda a, b: tuple(x + y for x, y in zip(a, b)), (0, 1, 2))
    return jnp.stack(sums)


def variadic(xp, g, s):
    g, xp = materialize(g, xp)
    return _variadic(xp, g, s)


def variadic_halves(xp, g, s):
    g, xp = materialize(g, xp)
    n = g.shape[0] // 2
    return _variadic(xp[:n], g[:n], s) + _variadic(xp[n:], g[n:], s)


def grouped(xp, g, s):
    c = xp.shape[3]
    conv = lambda k: jax.lax.conv_general_dilated(  # noqa: E731
        xp, k, (s, s), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"),
        feature_group_count=c)
    return jax.vjp(conv, jnp.zeros((3, 3, 1, c), xp.dtype))[1](g)[0].reshape(9, c)


FORMS = {"taps": taps, "variadic": variadic, "variadic x2": variadic_halves, "grouped": grouped}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--reps", type=int, default=30)
    a = p.parse_args()
    print("| layer (side, C, stride) | " + " | ".join(FORMS) + " | largest |diff| from taps |")
    print("|---|" + "---|" * (len(FORMS) + 1))
    total = dict.fromkeys(FORMS, 0.0)
    for side, c, s in LAYERS:
        xp = jax.random.normal(jax.random.key(0), (a.batch_size, side + 2, side + 2, c))
        g = jax.random.normal(jax.random.key(1), (a.batch_size, side // s or 1, side // s or 1, c))
        ms, results = {}, {}
        for name, form in FORMS.items():
            fn = jax.jit(form, static_argnums=2)
            ms[name] = 1000 * time_steps(lambda: fn(xp, g, s), jax.block_until_ready, warmup=1,
                                         min_steps=a.reps, min_time_s=0.0,
                                         max_time_s=float("inf"))["median_step_s"]
            results[name] = fn(xp, g, s)
            total[name] += COUNT.get((side, c, s), 1) * ms[name]
        diff = max(float(jnp.max(jnp.abs(results[n] - results["taps"]))) for n in FORMS)
        print(f"| {side}, {c}, {s} | " + " | ".join(f"{ms[n]:.2f}" for n in FORMS)
              + f" | {diff:.1e} |", flush=True)
    print("| all 13 layers | " + " | ".join(f"{total[n]:.1f}" for n in FORMS) + " | |")


if __name__ == "__main__":
    main()
