"""The eval-mode network with every BatchNorm folded into the conv before it, as a plain
function of arrays: what the ONNX export converts (deploy/onnx.py).

In eval mode BatchNorm is y = (x - mean) * s + beta with s = gamma / sqrt(var + eps); after a
conv with kernel W (no bias) that is a conv with kernel W * s (per output channel) and bias
beta - mean * s. The folded layers run in the network's order; the result equals the
checkpoint's logits up to float rounding (tests/test_export.py compares them in float64).
"""
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from mobilenet_jax.config import Config
from mobilenet_jax.models.mobilenet import MobileNetV1
from mobilenet_jax.models.spec import HEAD, PAD1, PAPER_BLOCKS


class FoldedConv(NamedTuple):
    kernel: np.ndarray  # (kh, kw, in / groups, out), BatchNorm's scale folded in
    bias: np.ndarray    # (out,)
    strides: int
    groups: int         # 1, or the input channels for a depthwise conv


def _fold(conv: dict, bn_params: dict, bn_stats: dict, strides: int, groups: int = 1,
          epsilon: float = MobileNetV1.bn_epsilon) -> FoldedConv:
    scale = bn_params["scale"] / np.sqrt(bn_stats["var"] + epsilon)
    return FoldedConv(conv["kernel"] * scale, bn_params["bias"] - bn_stats["mean"] * scale,
                      strides, groups)


def fold(config: Config, variables: dict) -> tuple[list, dict]:
    """(folded convs in the network's order, the classifier's {'kernel', 'bias'}) of a
    checkpoint's eval variables (numpy arrays, any float dtype)."""
    params, stats = variables["params"], variables["batch_stats"]
    convs = [_fold(params["stem"], params["stem_bn"], stats["stem_bn"], config.network.stem_stride)]
    for i, (_, strides) in enumerate(PAPER_BLOCKS):
        block, block_stats = params[f"block{i + 1}"], stats[f"block{i + 1}"]
        depthwise = block["depthwise"]["kernel"]
        convs.append(_fold(block["depthwise"], block["depthwise_bn"],
                           block_stats["depthwise_bn"], strides, groups=depthwise.shape[-1]))
        for name in ("pointwise_hidden", "pointwise"):
            if name in block:
                convs.append(_fold(block[name], block[f"{name}_bn"], block_stats[f"{name}_bn"], 1))
    return convs, dict(params[HEAD])


def forward(convs: list, classifier: dict, images: jax.Array) -> jax.Array:
    """Logits of standardised images (N, H, W, 3) through the folded layers."""
    x = images
    for conv in convs:
        padding = PAD1 if conv.kernel.shape[0] == 3 else ((0, 0), (0, 0))
        x = jax.lax.conv_general_dilated(
            x, conv.kernel, (conv.strides, conv.strides), padding,
            dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=conv.groups)
        x = jnp.clip(x + conv.bias, 0.0, 6.0)  # ReLU6
    x = jnp.mean(x, axis=(1, 2))
    return x @ classifier["kernel"] + classifier["bias"]
