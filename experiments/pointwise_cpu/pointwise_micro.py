"""The 13 pointwise (1x1) convs of MobileNet v1 at alpha=1.0, forward + both gradients:
XLA's convolution vs the same contraction written as a matmul (what `PointwiseConv` does).

    python experiments/pointwise_cpu/pointwise_micro.py
    python experiments/pointwise_cpu/pointwise_micro.py --few-inputs

Shapes are the CIFAR ones (32x32 input, stem stride 2), batch 128. Prints ms and GFLOP/s
(3 x 2 x mult-adds) per formulation, and a jitted 2048^3 float32 matmul for scale.

`--few-inputs`: the pointwise convs with 3 to 16 inputs of alpha 0.1 and 0.25 (blocks 1-3),
the matmul vs `layers.few_channel_conv` (multiply-adds), in inference at batch 1024 and as
forward + both gradients at batch 128, each after a BatchNorm-like scale and ReLU6 as in the
network.
"""
import argparse
import functools
import statistics
import time

import jax
import jax.numpy as jnp

from mobilenet_jax.process import keep_freed_memory
from mobilenet_jax.models.layers import few_channel_conv, pointwise_matmul

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


def few_inputs():
    """(height, width, in, out) of the pointwise convs with few inputs, alpha 0.1 and 0.25."""
    shapes = [(16, 16, 3, 6), (8, 8, 6, 13), (8, 8, 13, 13), (16, 16, 8, 16), (8, 8, 16, 32)]
    sliced = functools.partial(few_channel_conv, strides=(1, 1), padding=((0, 0), (0, 0)))
    print("mode   batch  H  W  in out  matmul ms  multiply-adds ms")
    for mode, batch in (("infer", 1024), ("train", 128)):
        for h, w, ci, co in shapes:
            key = jax.random.key(ci)
            x = jax.random.normal(key, (batch, h, w, ci))
            kernel = jax.random.normal(key, (1, 1, ci, co)) * 0.3
            times = []
            for conv in (pointwise_matmul, sliced):
                def layer(kernel, x, conv=conv):
                    return conv(jnp.clip(x * 1.5 + 0.1, 0.0, 6.0), kernel)
                if mode == "train":
                    fn = jax.grad(lambda k, x, layer=layer: jnp.sum(layer(k, x) ** 2), (0, 1))
                else:
                    fn = layer
                times.append(median_ms(jax.jit(fn), kernel, x))
            print(f"{mode:5s} {batch:6d} {h:2d} {w:2d} {ci:3d} {co:3d} {times[0]:10.2f} "
                  f"{times[1]:17.2f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--few-inputs", action="store_true",
                        help="matmul vs multiply-adds for the pointwise convs with few inputs")
    if parser.parse_args().few_inputs:
        keep_freed_memory()
        return few_inputs()
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
