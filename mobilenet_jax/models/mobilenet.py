"""MobileNet v1 (Howard et al. 2017, arXiv 1704.04861, Table 1) as Flax linen modules.

Architecture only: no I/O, no flags, no kernel code. Blocks receive their convolutions, norm
and activation as arguments; `MobileNetV1` decides dtype, BatchNorm settings and which conv
formulation computes each conv (`kernels`, see layers.py) in one place.
"""
import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
from flax import linen as nn

from mobilenet_jax.models import layers
from mobilenet_jax.models.spec import (HEAD, PAD1, PAPER_BLOCKS, SEED_HIDDEN_RATIO, STEM_CHANNELS,
                                       check_model_args, scaled_channels)

ModuleDef = Any


class DepthwiseSeparable(nn.Module):
    """Depthwise 3x3 conv -> norm -> act -> pointwise 1x1 conv(s) -> norm -> act.

    `hidden_channels` set gives the seed project's block: two pointwise convs,
    in -> hidden -> out, each followed by norm and act.
    """
    out_channels: int
    strides: int
    conv: ModuleDef
    depthwise_conv: ModuleDef
    norm: ModuleDef
    act: Callable
    hidden_channels: int | None = None

    @nn.compact
    def __call__(self, x):
        in_channels = x.shape[-1]
        x = self.depthwise_conv(in_channels, (3, 3), strides=self.strides, padding=PAD1,
                                feature_group_count=in_channels, name="depthwise")(x)
        x = self.act(self.norm(name="depthwise_bn")(x))
        if self.hidden_channels is not None:
            x = self.conv(self.hidden_channels, (1, 1), name="pointwise_hidden")(x)
            x = self.act(self.norm(name="pointwise_hidden_bn")(x))
        x = self.conv(self.out_channels, (1, 1), name="pointwise")(x)
        return self.act(self.norm(name="pointwise_bn")(x))


class MobileNetV1(nn.Module):
    """MobileNet v1. Returns logits (or the pooled features with `features_only=True`).

    `kernels`: a policy of `layers.KERNELS` ('reference': nn.Conv everywhere, 'cpu') or a
    `layers.ConvKernels`; every policy has the same parameters.
    """
    num_classes: int = 1000
    width_multiplier: float = 1.0
    block: str = "paper"
    stem_stride: int = 2
    dropout: float = 0.0
    dtype: Any = jnp.float32
    kernels: Any = "reference"
    bn_momentum: float = 0.9
    bn_epsilon: float = 1e-5

    def __post_init__(self):
        check_model_args(self.width_multiplier, self.num_classes, self.block, self.stem_stride)
        layers.conv_kernels(self.kernels)
        super().__post_init__()

    @nn.compact
    def __call__(self, x, train: bool = False, features_only: bool = False):
        kernels = layers.conv_kernels(self.kernels)
        conv_args = dict(use_bias=False, dtype=self.dtype,
                         kernel_init=nn.initializers.glorot_uniform())
        stem_conv = functools.partial(kernels.stem, **conv_args)
        depthwise_conv = functools.partial(kernels.depthwise, **conv_args)
        pointwise_conv = functools.partial(kernels.pointwise, **conv_args)
        # Statistics are reduced in float32 even for bfloat16 activations; under jit over a
        # sharded batch the mean is over the global batch (synchronised BatchNorm). The variance
        # is mean((x - mean)^2), not mean(x^2) - mean^2, which cancels badly on the
        # low-variance channels of narrow (small alpha) layers.
        norm = functools.partial(kernels.norm, use_running_average=not train,
                                 momentum=self.bn_momentum, epsilon=self.bn_epsilon,
                                 dtype=self.dtype, use_fast_variance=False)
        act = nn.relu6
        width = functools.partial(scaled_channels, width_multiplier=self.width_multiplier)

        x = x.astype(self.dtype)
        x = stem_conv(width(STEM_CHANNELS), (3, 3), strides=self.stem_stride, padding=PAD1,
                      name="stem")(x)
        x = act(norm(name="stem_bn")(x))
        for i, (channels, strides) in enumerate(PAPER_BLOCKS):
            hidden = (max(1, round(x.shape[-1] * SEED_HIDDEN_RATIO))
                      if self.block == "seed" else None)
            x = DepthwiseSeparable(width(channels), strides, conv=pointwise_conv,
                                   depthwise_conv=depthwise_conv, norm=norm, act=act,
                                   hidden_channels=hidden, name=f"block{i + 1}")(x)
        x = jnp.mean(x, axis=(1, 2))
        if features_only:
            return x
        x = nn.Dropout(self.dropout, deterministic=not train)(x)
        x = nn.Dense(self.num_classes, dtype=self.dtype,
                     kernel_init=nn.initializers.glorot_uniform(), name=HEAD)(x)
        # Loss and softmax in float32 at least, whatever the compute dtype.
        return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def probabilities(logits):
    """Class probabilities from logits (the seed project ended its network with a softmax)."""
    return jax.nn.softmax(logits.astype(jnp.promote_types(logits.dtype, jnp.float32)), axis=-1)
