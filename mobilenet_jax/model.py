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
# With depthwise="vjp", pointwise convs with at most this many inputs use `few_channel_conv`.
SLICED_POINTWISE_MAX_INPUTS = 4


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


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def _window(xp, i, j, out_hw, strides):
    """xp[:, s*y+i, s*x+j, :] for every output position (y, x): tap (i, j)'s input window."""
    (sh, sw), (out_h, out_w) = strides, out_hw
    return jax.lax.slice(
        xp, (0, i, j, 0),
        (xp.shape[0], i + sh * (out_h - 1) + 1, j + sw * (out_w - 1) + 1, xp.shape[3]),
        (1, sh, sw, 1))


def _window_of_padded(x, i, j, out_hw, strides, padding):
    """_window(pad(x, padding), ...) sliced from x itself, zeros where it reads the padding.

    No padded copy of x: XLA:CPU writes the windows that touch the padding into buffers of
    their own (a quarter of x each at stride 2) and reads the others straight from x, and
    the stem's sum then reads unit-stride windows. The stride-2 stem of an even-sized image
    never reads its bottom and right padding at all. (4-5% off the α=0.1 network's fastest
    inference step at batch 1024, more with the input's normalisation: stem_cpu.md.)
    """
    starts, limits, pads = [], [], []
    for size, tap, stride, (lo, _), out in zip(x.shape[1:3], (i, j), strides, padding, out_hw):
        first = max(0, -(-(lo - tap) // stride))             # first output reading x, not pad
        last = min(out - 1, (size - 1 + lo - tap) // stride)  # last one
        if last < first:  # this tap only ever reads padding
            return jnp.zeros((x.shape[0], *out_hw, x.shape[3]), x.dtype)
        starts.append(stride * first + tap - lo)
        limits.append(stride * last + tap - lo + 1)
        pads.append((first, out - 1 - last, 0))
    window = jax.lax.slice(x, (0, *starts, 0), (x.shape[0], *limits, x.shape[3]),
                           (1, *strides, 1))
    return jax.lax.pad(window, jnp.zeros((), x.dtype), ((0, 0, 0), *pads, (0, 0, 0)))


def _shifted_sum(xp, kernel, out_hw, strides):
    """sum_ij xp[:, s*y+i, s*x+j, :] * kernel[i, j]: a 'valid' depthwise conv of padded xp."""
    kh, kw, _ = kernel.shape
    out = None
    for i in range(kh):
        for j in range(kw):
            term = _window(xp, i, j, out_hw, strides) * kernel[i, j]
            out = term if out is None else out + term
    return out


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def depthwise_conv_vjp(x, kernel, strides, padding):
    """Depthwise conv, NHWC x (kh, kw, C) kernel, explicit ((lo, hi), (lo, hi)) padding.

    Forward as shifted slices; the backward pass is written by hand instead of XLA's
    autodiff of the slices: the input gradient is the same shifted-slice sum over the
    (stride-dilated, padded) output gradient with the kernel flipped, and the kernel gradient
    is nine column sums, one per tap, of the shifted input window times the output gradient.
    """
    return _depthwise_fwd(x, kernel, strides, padding)[0]


def _out_hw(x, kernel, strides, padding):
    (kh, kw), (sh, sw) = kernel.shape[:2], strides
    (pt, pb), (pl, pr) = padding
    return ((x.shape[1] + pt + pb - kh) // sh + 1, (x.shape[2] + pl + pr - kw) // sw + 1)


def materialize(*arrays):
    """The arrays, computed once into buffers of their own (an identity for finite values).

    XLA:CPU drops `optimization_barrier` before fusion, so a cheap producer (BatchNorm, the
    activation, a pad) is recomputed inside every consumer: nine times over in a 3x3
    depthwise conv, each time with a bounds check per element for the pad. A conditional's
    operands are always materialized. Its branches must differ or XLA merges them away: the
    untaken one turns a non-finite first element into all-NaN, so a NaN still propagates.
    """
    first = arrays[0].reshape(-1)[0]
    return jax.lax.cond(jnp.isfinite(first), lambda *a: a,
                        lambda *a: tuple(v + (first * 0).astype(v.dtype) for v in a), *arrays)


def _depthwise_fwd(x, kernel, strides, padding):
    # The padded input is the residual: the backward slices its windows from it, no second pad.
    xp = jnp.pad(x, ((0, 0), *padding, (0, 0)))
    out = _shifted_sum(xp, kernel, _out_hw(x, kernel, strides, padding), strides)
    return out, (xp, kernel)


def _depthwise_bwd(strides, padding, residuals, g):
    xp, kernel = residuals
    # Each once: else BatchNorm's and the activation's backward (in g), and the pad, BatchNorm
    # and activation of the previous layer (in xp), are recomputed in each consumer below.
    # (In the profile, experiments/profile_train_step.py, those recomputing fusions were the
    # largest cost of this backward before.)
    g, xp = materialize(g, xp)
    (kh, kw, _), (sh, sw) = kernel.shape, strides
    (pt, pb), (pl, pr) = padding
    c = xp.shape[3]
    h, w = xp.shape[1] - pt - pb, xp.shape[2] - pl - pr
    out_h, out_w = g.shape[1], g.shape[2]
    # Input gradient: a stride-1 'valid' conv of the dilated, padded gradient, kernel flipped.
    lo_h, lo_w = kh - 1 - pt, kw - 1 - pl
    hi_h = h + kh - 1 - lo_h - ((out_h - 1) * sh + 1)
    hi_w = w + kw - 1 - lo_w - ((out_w - 1) * sw + 1)
    zero = jnp.zeros((), g.dtype)
    gp = jax.lax.pad(g, zero, ((0, 0, 0), (lo_h, hi_h, sh - 1), (lo_w, hi_w, sw - 1), (0, 0, 0)))
    dx = _shifted_sum(gp, kernel[::-1, ::-1].astype(g.dtype), (h, w), (1, 1))
    # Kernel gradient: for each tap, the sum over batch and positions of window * gradient.
    taps = [jnp.sum((_window(xp, i, j, (out_h, out_w), strides) * g)
                    .reshape(-1, c).astype(jnp.float32), axis=0)
            for i in range(kh) for j in range(kw)]
    dk = jnp.stack(taps).reshape(kernel.shape).astype(kernel.dtype)
    return dx.astype(xp.dtype), dk


depthwise_conv_vjp.defvjp(_depthwise_fwd, _depthwise_bwd)


def _pointwise(x, kernel):
    """A 1x1 conv (kernel (1, 1, in, out)) as one matmul over the channel axis."""
    rows = x.reshape(-1, x.shape[-1]) @ kernel[0, 0]
    return rows.reshape(*x.shape[:-1], kernel.shape[-1])


def _conv(x, kernel, strides, padding):
    if kernel.shape[:2] == (1, 1) and strides == (1, 1) and padding == ((0, 0), (0, 0)):
        return _pointwise(x, kernel)
    return jax.lax.conv_general_dilated(x, kernel, strides, padding,
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def few_channel_conv(x, kernel, strides, padding):
    """Dense conv, NHWC x HWIO kernel, for a handful of input channels (the RGB stem, the
    first pointwise convs of narrow networks).

    Forward as kh*kw*C_in shifted slices times a row of the kernel, summed: XLA:CPU's
    convolution of a 3-channel input is up to 2.4x slower (experiments/stem_cpu.md), and a
    matmul with 3 inputs 4-6x slower (experiments/pointwise_cpu.md). The backward
    is the convolution's (for 1x1, the matmul's) own VJP, which the sliced form's autodiff (a
    reduction over the batch per kernel entry) does not beat.
    """
    out_hw = _out_hw(x, kernel, strides, padding)
    out = None
    for i in range(kernel.shape[0]):
        for j in range(kernel.shape[1]):
            window = _window_of_padded(x, i, j, out_hw, strides, padding)
            for c in range(kernel.shape[2]):
                term = window[..., c:c + 1] * kernel[i, j, c]
                out = term if out is None else out + term
    # Its own buffer: else XLA folds the middle tap of the next depthwise conv, a slice of
    # the padded input, back into this sum and recomputes all of it there (in inference).
    out, = materialize(out)
    return out


def _few_channel_fwd(x, kernel, strides, padding):
    return few_channel_conv(x, kernel, strides, padding), (x, kernel)


def _few_channel_bwd(strides, padding, residuals, g):
    return jax.vjp(lambda x, k: _conv(x, k, strides, padding), *residuals)[1](g)


few_channel_conv.defvjp(_few_channel_fwd, _few_channel_bwd)


class _SlicedConvBase(nn.Module):
    """nn.Conv's fields, shared by the hand-written convs (sliced, pointwise as a matmul)."""
    features: int
    kernel_size: Sequence[int] = (3, 3)
    strides: Any = 1
    padding: Any = PAD1
    use_bias: bool = False
    dtype: Any = None
    param_dtype: Any = jnp.float32
    kernel_init: Callable = nn.initializers.lecun_normal()

    def _prepare(self, x, kernel_shape):
        """(x, kernel, strides pair, padding tuple): 'kernel' of kernel_shape, checked and
        dtype-promoted."""
        if self.use_bias:
            raise ValueError(f"{type(self).__name__} supports only bias-free convs")
        if isinstance(self.padding, str):
            raise ValueError(f"{type(self).__name__} needs explicit padding, got {self.padding!r}")
        kernel = self.param("kernel", self.kernel_init, kernel_shape, self.param_dtype)
        x, kernel = nn.dtypes.promote_dtype(x, kernel, dtype=self.dtype)
        return x, kernel, _pair(self.strides), tuple(tuple(p) for p in self.padding)


class FewChannelConv(_SlicedConvBase):
    """`nn.Conv` (bias-free, explicit padding, same 'kernel') computed by `few_channel_conv`."""

    @nn.compact
    def __call__(self, x):
        kernel_shape = (*self.kernel_size, x.shape[-1], self.features)
        return few_channel_conv(*self._prepare(x, kernel_shape))


class _DepthwiseBase(_SlicedConvBase):
    """The depthwise implementations: nn.Conv's signature, features == groups == channels."""
    feature_group_count: int = 1

    def _prepare_depthwise(self, x):
        """(x, kernel (kh, kw, C), strides pair, padding tuple), checked and dtype-promoted."""
        channels = x.shape[-1]
        if self.feature_group_count != channels or self.features != channels:
            raise ValueError(f"{type(self).__name__} supports only depthwise convs "
                             f"(features == feature_group_count == {channels})")
        x, kernel, strides, padding = self._prepare(x, (*self.kernel_size, 1, channels))
        return x, kernel[:, :, 0, :], strides, padding


class SlicedDepthwiseConv(_DepthwiseBase):
    """3x3 depthwise conv as nine shifted (strided) slices times per-channel weights, summed.

    Same parameter ('kernel', shape (kh, kw, 1, C)) and call signature as
    `nn.Conv(feature_group_count=C, use_bias=False)`, so checkpoints are interchangeable.
    XLA lowers these to fused elementwise loops, which on CPU are much faster than its grouped
    convolution, above all in the backward pass (jax issues 13800, 23713).
    """

    @nn.compact
    def __call__(self, x):
        x, kernel, strides, padding = self._prepare_depthwise(x)
        xp = jnp.pad(x, ((0, 0), *padding, (0, 0)))
        return _shifted_sum(xp, kernel, _out_hw(x, kernel, strides, padding), strides)


class VJPDepthwiseConv(_DepthwiseBase):
    """Shifted slices forward, hand-written backward (`depthwise_conv_vjp`).

    Made for XLA:CPU (`auto` there). On a GPU its `materialize` conditionals may each have to
    read their predicate back to the host (unmeasured); `auto` keeps `xla` there.
    """

    @nn.compact
    def __call__(self, x):
        return depthwise_conv_vjp(*self._prepare_depthwise(x))


class PointwiseConv(_SlicedConvBase):
    """1x1 conv as one matmul over the channel axis, `nn.Conv`'s 'kernel' (1, 1, in, out).

    XLA:CPU runs the convolution form, and above all its kernel gradient (a convolution whose
    window spans the whole image, after transposing both operands), about half as fast as
    the same contraction written as a dot (experiments/pointwise_cpu.md).
    """
    kernel_size: Sequence[int] = (1, 1)
    padding: Any = ((0, 0), (0, 0))
    # Up to this many input channels the forward is `few_channel_conv`'s multiply-adds: a
    # matmul that thin runs far below XLA:CPU's elementwise loops (pointwise_cpu.md; with
    # 6 or 8 inputs neither wins).
    max_sliced_inputs: int = 0

    @nn.compact
    def __call__(self, x):
        if tuple(self.kernel_size) != (1, 1):
            raise ValueError("PointwiseConv supports only 1x1 convs")
        args = self._prepare(x, (1, 1, x.shape[-1], self.features))
        # `_conv` is the matmul for a stride-1 unpadded 1x1 conv (the network's only kind).
        return (few_channel_conv if x.shape[-1] <= self.max_sliced_inputs else _conv)(*args)


DEPTHWISE_IMPLEMENTATIONS = {"xla": nn.Conv, "slices": SlicedDepthwiseConv,
                             "vjp": VJPDepthwiseConv}


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
        # The hand-written CPU formulations ("vjp") also get the sliced form of the stem and
        # of the pointwise convs with few inputs.
        cpu_forms = self.depthwise == "vjp"
        pointwise_conv = functools.partial(
            PointwiseConv, dtype=self.dtype, kernel_init=glorot,
            max_sliced_inputs=SLICED_POINTWISE_MAX_INPUTS if cpu_forms else 0)
        depthwise_conv = functools.partial(DEPTHWISE_IMPLEMENTATIONS[self.depthwise],
                                           use_bias=False, dtype=self.dtype, kernel_init=glorot)
        # Statistics are reduced in float32 even for bfloat16 activations; under jit over a
        # sharded batch the mean is over the global batch (synchronised BatchNorm). The variance
        # is mean((x - mean)^2), not mean(x^2) - mean^2, which cancels badly on the
        # low-variance channels of narrow (small alpha) layers.
        norm = functools.partial(nn.BatchNorm, use_running_average=not train,
                                 momentum=self.bn_momentum, epsilon=self.bn_epsilon,
                                 dtype=self.dtype, use_fast_variance=False)
        act = nn.relu6
        width = functools.partial(scaled_channels, width_multiplier=self.width_multiplier)

        stem_conv = (functools.partial(FewChannelConv, dtype=self.dtype, kernel_init=glorot)
                     if cpu_forms else conv)
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
        x = nn.Dense(self.num_classes, dtype=self.dtype, kernel_init=glorot, name="classifier")(x)
        return x.astype(jnp.float32)  # loss and softmax in float32 whatever the compute dtype


def probabilities(logits):
    """Class probabilities from logits (the seed project ended its network with a softmax)."""
    return jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
