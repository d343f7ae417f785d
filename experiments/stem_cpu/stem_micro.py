"""The stem (3x3 stride-2 conv of the 3-channel image) alone: XLA's convolution vs
`layers.few_channel_conv` (27 shifted slices times kernel rows; the convolution's own VJP).

    python experiments/stem_cpu/stem_micro.py

Rows: inference batch 1024 (forward) and training batch 128 (forward + kernel gradient), the
stem's output width at alpha 0.1 / 0.25 / 1.0 (3 / 8 / 32 channels). ReLU6 on the output, as
the BatchNorm and activation that follow would be fused there. Median ms of 20 calls.
"""
import jax
import jax.numpy as jnp

from mobilenet_jax.benchmarks.timing import time_steps
from mobilenet_jax.models.layers import few_channel_conv
from mobilenet_jax.models.spec import PAD1

ROWS = [("infer", 1024, 3), ("infer", 1024, 32), ("train", 128, 3), ("train", 128, 8),
        ("train", 128, 32)]


def xla_conv(x, kernel, strides, padding):
    return jax.lax.conv_general_dilated(x, kernel, strides, padding,
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))


def main():
    print(f"{'mode':6} {'batch':>5} {'out ch':>6} {'conv ms':>8} {'sliced ms':>9} {'ratio':>6}")
    for mode, batch, features in ROWS:
        x = jax.random.normal(jax.random.key(0), (batch, 32, 32, 3))
        kernel = jax.random.normal(jax.random.key(1), (3, 3, 3, features))
        times = []
        for conv in (xla_conv, few_channel_conv):
            def forward(kernel, x, conv=conv):
                return jnp.clip(conv(x, kernel, (2, 2), PAD1), 0, 6)
            if mode == "train":
                fn = jax.jit(jax.grad(lambda k, x, f=forward: jnp.sum(f(k, x) * x[:, ::2, ::2, :1])))
            else:
                fn = jax.jit(forward)
            times.append(1000 * time_steps(lambda: fn(kernel, x), jax.block_until_ready,
                                           warmup=1, min_steps=20, min_time_s=0)["median_step_s"])
        print(f"{mode:6} {batch:5d} {features:6d} {times[0]:8.2f} {times[1]:9.2f} "
              f"{times[0] / times[1]:6.2f}")


if __name__ == "__main__":
    main()
