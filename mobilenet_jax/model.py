"""MobileNet v1 (Howard et al. 2017, arXiv 1704.04861) as Flax linen modules.

Modules only: no I/O, no flags, no globals. Blocks receive their convolutions, norm and
activation as arguments, so `MobileNetV1` decides dtype, BatchNorm settings and the depthwise
implementation in one place.
"""
import functools
import math
from typing import Any, Callable, Sequence, Tuple

import jax
import jax.numpy as jnp
from flax import linen as nn

ModuleDef = Any

# (output channels, stride) of the 13 depthwise-separable blocks at width multiplier 1 (Table 1).
PAPER_BLOCKS: Tuple[Tuple[int, int], ...] = (
    (64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
    (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1))
STEM_CHANNELS = 32
BLOCK_TYPES = ("paper", "seed")
# The Julia seed project's hidden pointwise width: round(in * 0.9997).
SEED_HIDDEN_RATIO = 0.9997
# Symmetric padding of 1 for every 3x3 conv, as the reference and PyTorch do. 'SAME' would pad
# stride-2 convs asymmetrically (0 before, 1 after) and change which pixels each output sees.
PAD1 = ((1, 1), (1, 1))


def scaled_channels(channels: int, width_multiplier: float) -> int:
    """The reference's width rule: max(1, round(alpha * c)), round half to even."""
    return max(1, round(width_multiplier * channels))


def check_model_args(width_multiplier, num_classes, block, stem_stride=2) -> None:
    """Raise ValueError naming the bad value; shared by the module and the run config."""
    if (isinstance(width_multiplier, bool) or not isinstance(width_multiplier, (int, float))
            or not math.isfinite(width_multiplier) or width_multiplier <= 0):
        raise ValueError(f"width_multiplier (alpha) must be a finite number > 0, got {width_multiplier!r}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be an integer >= 1, got {num_classes!r}")
    if block not in BLOCK_TYPES:
        raise ValueError(f"block must be one of {BLOCK_TYPES}, got {block!r}")
    if stem_stride not in (1, 2):
        raise ValueError(f"stem_stride must be 1 or 2, got {stem_stride!r}")


class SlicedDepthwiseConv(nn.Module):
    """3x3 depthwise conv as nine shifted (strided) slices times per-channel weights, summed.

    Same parameter ('kernel', shape (kh, kw, 1, C)) and call signature as
    `nn.Conv(feature_group_count=C, use_bias=False)`, so checkpoints are interchangeable.
    XLA lowers these to fused elementwise loops, which on CPU are much faster than its grouped
    convolution, above all in the backward pass (jax issues 13800, 23713).
    """
    features: int
    kernel_size: Sequence[int] = (3, 3)
    strides: Any = 1
    padding: Any = PAD1
    feature_group_count: int = 1
    use_bias: bool = False
    dtype: Any = None
    param_dtype: Any = jnp.float32
    kernel_init: Callable = nn.initializers.lecun_normal()

    @nn.compact
    def __call__(self, x):
        channels = x.shape[-1]
        if self.feature_group_count != channels or self.features != channels or self.use_bias:
            raise ValueError("SlicedDepthwiseConv supports only bias-free depthwise convs "
                             f"(features == feature_group_count == {channels})")
        kh, kw = self.kernel_size
        sh, sw = (self.strides, self.strides) if isinstance(self.strides, int) else self.strides
        kernel = self.param("kernel", self.kernel_init, (kh, kw, 1, channels), self.param_dtype)
        x, kernel = nn.dtypes.promote_dtype(x, kernel, dtype=self.dtype)
        x = jnp.pad(x, ((0, 0), *self.padding, (0, 0)))
        out_h = (x.shape[1] - kh) // sh + 1
        out_w = (x.shape[2] - kw) // sw + 1
        out = None
        for i in range(kh):
            for j in range(kw):
                window = jax.lax.slice(
                    x, (0, i, j, 0),
                    (x.shape[0], i + sh * (out_h - 1) + 1, j + sw * (out_w - 1) + 1, channels),
                    (1, sh, sw, 1))
                term = window * kernel[i, j, 0]
                out = term if out is None else out + term
        return out


DEPTHWISE_IMPLEMENTATIONS = {"xla": nn.Conv, "slices": SlicedDepthwiseConv}


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
    """MobileNet v1. Returns logits (or the pooled features with `features_only=True`)."""
    num_classes: int = 1000
    width_multiplier: float = 1.0
    block: str = "paper"
    stem_stride: int = 2
    dropout: float = 0.0
    dtype: Any = jnp.float32
    depthwise: str = "xla"
    bn_momentum: float = 0.9
    bn_epsilon: float = 1e-5

    def __post_init__(self):
        check_model_args(self.width_multiplier, self.num_classes, self.block, self.stem_stride)
        if self.depthwise not in DEPTHWISE_IMPLEMENTATIONS:
            raise ValueError(f"depthwise must be one of {tuple(DEPTHWISE_IMPLEMENTATIONS)}, "
                             f"got {self.depthwise!r}")
        super().__post_init__()

    @nn.compact
    def __call__(self, x, train: bool = False, features_only: bool = False):
        glorot = nn.initializers.glorot_uniform()
        conv = functools.partial(nn.Conv, use_bias=False, dtype=self.dtype, kernel_init=glorot)
        depthwise_conv = functools.partial(DEPTHWISE_IMPLEMENTATIONS[self.depthwise],
                                           use_bias=False, dtype=self.dtype, kernel_init=glorot)
        # Statistics are reduced in float32 even for bfloat16 activations; under jit over a
        # sharded batch the mean is over the global batch (synchronised BatchNorm).
        norm = functools.partial(nn.BatchNorm, use_running_average=not train,
                                 momentum=self.bn_momentum, epsilon=self.bn_epsilon,
                                 dtype=self.dtype)
        act = nn.relu6
        width = functools.partial(scaled_channels, width_multiplier=self.width_multiplier)

        x = x.astype(self.dtype)
        x = conv(width(STEM_CHANNELS), (3, 3), strides=self.stem_stride, padding=PAD1,
                 name="stem")(x)
        x = act(norm(name="stem_bn")(x))
        for i, (channels, strides) in enumerate(PAPER_BLOCKS):
            hidden = (max(1, round(x.shape[-1] * SEED_HIDDEN_RATIO))
                      if self.block == "seed" else None)
            x = DepthwiseSeparable(width(channels), strides, conv=conv,
                                   depthwise_conv=depthwise_conv, norm=norm, act=act,
                                   hidden_channels=hidden, name=f"block{i + 1}")(x)
        x = jnp.mean(x, axis=(1, 2))
        if features_only:
            return x
        x = nn.Dropout(self.dropout, deterministic=not train)(x)
        x = nn.Dense(self.num_classes, dtype=self.dtype, kernel_init=glorot, name="classifier")(x)
        return x.astype(jnp.float32)  # loss and softmax in float32 whatever the compute dtype


def probabilities(logits):
    """Class probabilities from logits (the seed project ended its network with a softmax)."""
    return jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
