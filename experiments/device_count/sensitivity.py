"""Why does summation order move a step by a few percent at initialisation? The stem kernel's
gradient of one batch, computed in several equivalent ways, with BatchNorm's epsilon at its
default (1e-5) and at 1e-3, in float32 and float64; and the variance of the channels that
block 13's depthwise BatchNorm normalises.

    python experiments/device_count/sensitivity.py [--alpha 0.25] [--batch 1]

Equivalent ways: the batch passed to the jitted function or folded into it as a constant
(XLA then computes the input normalisation at compile time), and the batch reordered; each
with the `cpu` and the `reference` kernels. Needs the 6-class CIFAR-100 subset.
"""
import argparse

import jax
import jax.numpy as jnp
import numpy as np

from mobilenet_jax.core import steps
from mobilenet_jax.data import arrays, augment, from_tfds
from mobilenet_jax.models.mobilenet import MobileNetV1


def stem_gradient(model, variables, batch, as_argument, dtype=jnp.float32):
    def loss(params, batch):
        images = augment.normalize(batch["image"], 32, dtype=dtype)
        logits, _ = model.apply({"params": params, "batch_stats": variables["batch_stats"]},
                                images, train=True, mutable=["batch_stats"])
        return steps.cross_entropy(logits.astype(dtype), jax.nn.one_hot(batch["label"], 100)).mean()
    grad = jax.grad(loss)
    g = (jax.jit(grad)(variables["params"], batch) if as_argument
         else jax.jit(lambda p: grad(p, batch))(variables["params"]))
    return np.asarray(g["stem"]["kernel"], np.float64)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--alpha", type=float, default=0.25)
    parser.add_argument("--batch", type=int, default=1, help="which batch of epoch 0")
    parser.add_argument("--data-dir", default="../shared/data/cifar100-6class-tfds")
    args = parser.parse_args()
    split = from_tfds.load("cifar100", "train[:10%]", args.data_dir, offline=True)
    split, _ = arrays.split_validation(split, 0.1, seed=0)
    local = list(arrays.train_batches(split, 32, seed=0, epoch=0))[args.batch]
    batch = {"image": np.asarray(augment.augment(jnp.asarray(local["image"]),
                                              jax.random.key(100 + args.batch))),
             "label": local["label"]}
    order = np.random.default_rng(0).permutation(32)
    reordered = {k: v[order] for k, v in batch.items()}
    init = MobileNetV1(num_classes=100, width_multiplier=args.alpha).init(
        jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
    for epsilon in (1e-5, 1e-3):
        def model(kernels, dtype=jnp.float32):
            return MobileNetV1(num_classes=100, width_multiplier=args.alpha, kernels=kernels,
                               bn_epsilon=epsilon, dtype=dtype)
        base = stem_gradient(model("reference"), init, batch, True)
        print(f"epsilon {epsilon}: float32 stem-kernel gradient, largest entry "
              f"{np.abs(base).max():.2f}; largest difference to the reference kernels' "
              "(batch as argument):")
        for kernels in ("reference", "cpu"):
            for name, b, as_argument in (("constant", batch, False),
                                         ("reordered", reordered, True)):
                g = stem_gradient(model(kernels), init, b, as_argument)
                print(f"  {kernels:9} batch {name:9}: {np.abs(g - base).max():.3g}")
        with jax.enable_x64(True):
            variables = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), init)
            f64 = [stem_gradient(model("reference", jnp.float64), variables, b, True,
                                 jnp.float64) for b in (batch, reordered)]
        print(f"  float64: batch vs reordered {np.abs(f64[0] - f64[1]).max():.3g}; float32 "
              f"reference vs float64 {np.abs(base - f64[0]).max():.3g}")
    _, state = MobileNetV1(num_classes=100, width_multiplier=args.alpha).apply(
        init, augment.normalize(batch["image"], 32), train=True, capture_intermediates=True,
        mutable=["batch_stats", "intermediates"])
    out = np.asarray(state["intermediates"]["block13"]["depthwise"]["__call__"][0])
    variance = out.reshape(-1, out.shape[-1]).var(axis=0)
    print(f"block 13 depthwise output {out.shape[1:3]} per example: {int((variance < 1e-4).sum())}"
          f" of {variance.size} channels with variance < 1e-4 (smallest {variance.min():.2g}) "
          "over the batch")


if __name__ == "__main__":
    main()
