"""mobilenet_jax: MobileNet v1 (Howard et al. 2017) in JAX/Flax, trained on CIFAR-100 by
default, or on any TFDS image dataset or image folder.

Pure functions for reuse from other JAX code (no hidden state; fine under jit, grad, vmap):

    init_fn, apply_fn = mobilenet_jax.functions(mobilenet_jax.Config(width_multiplier=0.1))
    variables = init_fn(jax.random.key(0), (1, 32, 32, 3))
    logits = apply_fn(variables, images)                                  # eval mode
    logits, batch_stats = apply_fn(variables, images, train=True, rng=key)  # train mode

A model trained on CIFAR-10 ships with the package:

    config, variables = mobilenet_jax.pretrained("cifar10")
    logits = mobilenet_jax.functions(config)[1](variables, images)  # images: normalised NHWC
"""
import importlib

from mobilenet_jax.config import Config

# Loaded on first use, so that importing the package (or its Config) does not import Flax.
_LAZY = {"ConvKernels": "models.layers", "KERNELS": "models.layers",
         "MobileNetV1": "models.mobilenet", "DepthwiseSeparable": "models.mobilenet",
         "probabilities": "models.mobilenet", "scaled_channels": "models.spec",
         "create_model": "models.functional", "functions": "models.functional",
         "pretrained": "core.restore"}

__all__ = ["Config", "ConvKernels", "KERNELS", "MobileNetV1", "DepthwiseSeparable",
           "create_model", "functions", "pretrained", "probabilities", "scaled_channels"]


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'mobilenet_jax' has no attribute {name!r}")
    return getattr(importlib.import_module(f"mobilenet_jax.{_LAZY[name]}"), name)
