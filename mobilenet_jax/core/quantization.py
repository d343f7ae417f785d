"""Fake int8 quantization for quantization-aware training (`--qat`): the forward pass computes
with weights and layer inputs rounded to the grids a full-integer int8 TFLite model uses, the
backward pass as if unrounded (the straight-through estimator).

- Weights (every conv and dense 'kernel'): symmetric, per output channel, 255 levels,
  scale = max|w| / 127, as the TFLite converter quantizes them. BatchNorm folded into a conv
  scales each output channel, which scales that channel's grid alike: the same rounding.
- Layer inputs (the image and every activation a conv or the classifier reads): per tensor,
  256 levels between the batch's minimum and maximum (the converter's from calibration).

Nothing else changes: the parameters stay float, and a QAT checkpoint exports, evaluates and
predicts as any other.
"""
import contextlib

import jax
import jax.numpy as jnp
from flax import linen as nn

from mobilenet_jax.models import layers

LEVELS = 255  # int8 weights in [-127, 127] (the converter never uses -128 for them)
QUANTIZED_MODULES = (*layers.CONV_MODULES, nn.Dense)


def _straight_through(x, rounded):
    return x + jax.lax.stop_gradient(rounded - x)


def fake_quantized_weight(w: jax.Array) -> jax.Array:
    """`w` rounded to 127 symmetric levels per output channel (its last axis)."""
    half = (LEVELS - 1) // 2
    scale = jnp.max(jnp.abs(w), axis=tuple(range(w.ndim - 1)), keepdims=True) / half
    scale = jax.lax.stop_gradient(jnp.where(scale > 0, scale, 1.0))
    return _straight_through(w, jnp.clip(jnp.round(w / scale), -half, half) * scale)


def fake_quantized_activation(x: jax.Array) -> jax.Array:
    """`x` rounded to the multiples of one step, 255 steps spanning its minimum and maximum
    (and 0: an int8 zero point is an integer, so 0 is a grid point)."""
    low = jax.lax.stop_gradient(jnp.minimum(jnp.min(x), 0.0))
    high = jax.lax.stop_gradient(jnp.maximum(jnp.max(x), 0.0))
    step = jnp.where(high > low, (high - low) / LEVELS, 1.0)
    return _straight_through(x, jnp.round(x / step) * step)


def fake_quantized_params(params: dict) -> dict:
    """`params` with every 'kernel' fake-quantized."""
    return jax.tree_util.tree_map_with_path(
        lambda path, a: fake_quantized_weight(a) if path[-1].key == "kernel" else a, params)


def _quantize_inputs(next_fun, args, kwargs, context):
    if context.method_name == "__call__" and isinstance(context.module, QUANTIZED_MODULES):
        args = (fake_quantized_activation(args[0]), *args[1:])
    return next_fun(*args, **kwargs)


def fake_quantized_inputs() -> contextlib.AbstractContextManager:
    """Inside it (while tracing), every conv and dense layer reads a fake-quantized input."""
    return nn.intercept_methods(_quantize_inputs)
