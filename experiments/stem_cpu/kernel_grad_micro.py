"""The stem's kernel gradient alone: XLA's convolution VJP against one matmul of the image's
patches (`layers._patch_kernel_grad`), on a 32x32 3-channel batch.

    python experiments/stem_cpu/kernel_grad_micro.py
    XLA_FLAGS=--xla_cpu_max_isa=AVX2 python experiments/stem_cpu/kernel_grad_micro.py

Rows: stem stride 1 and 2, batch 64 and 128, 8 to 32 outputs (the stem's width at α 0.25 to
1.0). Median ms of 50 calls, and the patch form's largest difference from the conv's,
relative to the conv's largest entry (float32).
"""
import jax
import numpy as np

from mobilenet_jax.benchmarks.timing import time_steps
from mobilenet_jax.models.layers import _conv, _patch_kernel_grad
from mobilenet_jax.models.spec import PAD1


def conv_kernel_grad(x, g, kernel_shape, strides, padding):
    kernel = jax.numpy.zeros(kernel_shape, x.dtype)
    return jax.vjp(lambda k: _conv(x, k, strides, padding), kernel)[1](g)[0]


def main():
    print(f"{'stem':>4} {'batch':>5} {'out ch':>6} {'conv ms':>8} {'patches ms':>10} "
          f"{'ratio':>6} {'rel diff':>8}")
    for stride in (1, 2):
        for batch in (64, 128):
            for features in (8, 16, 24, 32):
                x = jax.random.normal(jax.random.key(0), (batch, 32, 32, 3))
                g = jax.random.normal(jax.random.key(1), (batch, 32 // stride, 32 // stride,
                                                          features))
                args = (x, g, (3, 3, 3, features), (stride, stride), PAD1)
                times, results = [], []
                for form in (conv_kernel_grad, _patch_kernel_grad):
                    fn = jax.jit(form, static_argnums=(2, 3, 4))
                    results.append(np.asarray(fn(*args)))
                    times.append(1000 * time_steps(lambda: fn(*args), jax.block_until_ready,
                                                   warmup=1, min_steps=50,
                                                   min_time_s=0)["median_step_s"])
                diff = np.abs(results[1] - results[0]).max() / np.abs(results[0]).max()
                print(f"{stride:4d} {batch:5d} {features:6d} {times[0]:8.2f} {times[1]:10.2f} "
                      f"{times[0] / times[1]:6.2f} {diff:8.1e}")


if __name__ == "__main__":
    main()
