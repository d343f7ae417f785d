"""The 13 pointwise (1x1) convs of MobileNet v1 at alpha=1.0, forward + both gradients:
XLA's convolution vs the same contraction written as a matmul (what `PointwiseConv` does).

    python experiments/pointwise_micro.py

Shapes are the CIFAR ones (32x32 input, stem stride 2), batch 128. Prints ms and GFLOP/s
(3 x 2 x mult-adds) per formulation, and a jitted 2048^3 float32 matmul for scale.
"""
import statistics
import time

import jax
import jax.numpy as jnp

# (batch, height, width, in channels, out channels) of blocks 1-13
SHAPES = ([(128, 16, 16, 32, 64), (128, 8, 8, 64, 128), (128, 8, 8, 128, 128),
           (128, 4, 4, 128, 256), (128, 4, 4, 256, 256), (128, 2, 2, 256, 512)]
          + [(128, 2, 2, 512, 512)] * 5 + [(128, 1, 1, 512, 1024), (128, 1, 1, 1024, 1024)])


def conv(x, w):
    return jax.lax.conv_general_dilated(x, w[None, None], (1, 1), "VALID",
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))


def matmul(x, w):
    return (x.reshape(-1, x.shape[-1]) @ w).reshape(*x.shape[:-1], w.shape[-1])


def median_ms(fn, *args, reps=20):
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def main():
    key = jax.random.key(0)
    xs = [jax.random.normal(key, s[:4]) for s in SHAPES]
    ws = [jax.random.normal(key, s[3:]) * 0.05 for s in SHAPES]
    gflop = sum(3 * 2 * n * h * w * ci * co for n, h, w, ci, co in SHAPES) / 1e9
    for name, layer in (("convolution", conv), ("matmul", matmul)):
        def loss(ws, xs, layer=layer):
            return sum(jnp.sum(layer(x, w) ** 2) for x, w in zip(xs, ws))
        ms = median_ms(jax.jit(jax.grad(loss, argnums=(0, 1))), ws, xs)
        print(f"{name:12s} {ms:7.1f} ms  {gflop / ms * 1e3:6.1f} GFLOP/s")
    a = jax.random.normal(key, (2048, 2048))
    ms = median_ms(jax.jit(jnp.matmul), a, a, reps=10)
    print(f"{'2048^3 matmul':12s} {ms:7.1f} ms  {2 * 2048 ** 3 / ms / 1e6:6.1f} GFLOP/s")


if __name__ == "__main__":
    main()
