"""Where does the CPU training step spend its time? Ablations of the real train step.

    python experiments/train_step_profile/ablate_train_step.py --alphas 0.1,1.0 --variants base,no_bn,cheap_dw
    python experiments/train_step_profile/ablate_train_step.py --alphas 0.25 --stem-stride 1 --batch-size 64 --variants base,as_peers

Each variant swaps one module of the kernel policy (the norm, or the depthwise conv), so
MobileNetV1's code and parameter layout stay as they are, or changes the recipe, and times the
train step as the benchmark does. Ratios are within one process. Variants that
remove work (no_bn, cheap_dw) are not correct models: they only bound a component's cost.
`flax_bn` is nn.BatchNorm differentiated by JAX, the norm the policy had before its own.
`as_peers` is the step of the peers in ../shared/bench: the same model without the recipe's
augmentation, weight average and label smoothing.
"""
import argparse
import dataclasses
import sys

import jax.numpy as jnp
from flax import linen as nn

from mobilenet_jax import process
from mobilenet_jax.benchmarks import throughput
from mobilenet_jax.core import steps
from mobilenet_jax.models import layers, spec
from mobilenet_jax.models.memory import estimated_step_bytes
from mobilenet_jax.config import Config


class Identity(nn.Module):
    """Not a norm: takes nn.BatchNorm's arguments and returns its input."""
    use_running_average: bool = False
    momentum: float = 0.9
    epsilon: float = 1e-5
    dtype: object = None
    use_fast_variance: bool = True

    @nn.compact
    def __call__(self, x):
        self.variable("batch_stats", "unused", jnp.zeros, (1,))
        return x


class CheapDepthwise(layers._DepthwiseConv):
    """Not a conv: the centre tap only (bounds the depthwise conv's share of the step)."""

    @nn.compact
    def __call__(self, x):
        x, kernel, (sh, sw), _ = self._prepare_depthwise(x)
        return x[:, ::sh, ::sw, :] * kernel[1, 1]


VARIANTS = {
    "base": {},
    "no_bn": {"norm": Identity},
    "flax_bn": {"norm": nn.BatchNorm},
    "cheap_dw": {"depthwise": CheapDepthwise},
    "as_peers": {"config": {"augment": False, "ema_decay": 0.0, "label_smoothing": 0.0}},
}


def run_variant(name, config, timing):
    over = dict(VARIANTS[name])
    config = config.replace(**over.pop("config", {}))
    policy = spec.resolve_kernels(config.compute.kernels)
    saved_kernels = layers.KERNELS[policy]
    steps.clear_caches()  # the builders are cached by config, which a swapped module keeps
    try:
        layers.KERNELS[policy] = dataclasses.replace(saved_kernels, **over)
        res = throughput.bench_train(config, timing, pipeline=False)
    finally:
        layers.KERNELS[policy] = saved_kernels
    return res


def main():
    process.exec_with_tcmalloc()  # the CLIs' allocator, where the system has it
    ap = argparse.ArgumentParser()
    ap.add_argument("--alphas", default="0.1,1.0")
    ap.add_argument("--stem-stride", type=int, default=2)
    ap.add_argument("--kernels", default="cpu")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--min-time", type=float, default=3.0)
    a = ap.parse_args()
    timing = dict(warmup=2, min_steps=10, min_time_s=a.min_time, max_time_s=20.0)
    print(" ".join(sys.argv), flush=True)
    configs = {alpha: Config(width_multiplier=alpha, stem_stride=a.stem_stride,
                             batch_size=a.batch_size, kernels=a.kernels)
               for alpha in [float(v) for v in a.alphas.split(",")]}
    # The CLIs' allocator, set for the largest step: no variant pays page faults they do not.
    process.keep_freed_memory(max(estimated_step_bytes(cfg, a.batch_size)
                                  for cfg in configs.values()))
    for alpha, cfg in configs.items():
        base = None
        for v in a.variants.split(","):
            r = run_variant(v, cfg, timing)
            base = base or r["median_step_s"]
            print(f"alpha {alpha} {a.kernels:>9} {v:<10} {1000 * r['median_step_s']:8.2f} ms  "
                  f"{r['img_per_s']:8.0f} img/s  x{base / r['median_step_s']:.2f} vs first  "
                  f"compile {r['compile_s']:.1f}s", flush=True)


if __name__ == "__main__":
    main()
