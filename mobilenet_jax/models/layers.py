"""Conv formulations with `nn.Conv`'s arguments and parameters, and the policy that picks them.

Every module here has the same 'kernel' parameter (shape and layout) as the `nn.Conv` it
stands in for, so a checkpoint is the same whichever formulation computed it. `KERNELS` names
the two policies: `reference` (nn.Conv for every conv and nn.BatchNorm: the paper's form, and
what GPUs and model exporters get) and `cpu` (hand-written forms, and batch_norm.BatchNorm,
that XLA:CPU runs faster); `auto` picks by backend (`spec.resolve_kernels`).
"""
import dataclasses
import functools
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
from flax import linen as nn

from mobilenet_jax.models.batch_norm import BatchNorm

ModuleDef = Any


# ---- the formulations as functions ----------------------------------------------------------

def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def _out_hw(x, kernel, strides, padding):
    (kh, kw), (sh, sw) = kernel.shape[:2], strides
    (pt, pb), (pl, pr) = padding
    return ((x.shape[1] + pt + pb - kh) // sh + 1, (x.shape[2] + pl + pr - kw) // sw + 1)


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
    their own and reads the others straight from x; the stride-2 stem of an even-sized image
    never reads its bottom and right padding at all (experiments/stem_cpu).
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


def on_buffers(f, *args):
    """f(*args) in a conditional's branch: its operands are computed once into buffers of their
    own, and its outputs written once.

    XLA:CPU drops `optimization_barrier` before fusion, so a cheap producer (BatchNorm, the
    activation, a pad) is recomputed inside every consumer: nine times over in a 3x3
    depthwise conv. A conditional's operands are always materialized. Its branches must
    differ or XLA merges them away: the untaken one, for a non-finite first element of
    args[0], gives all-NaN outputs, so a NaN still propagates.
    """
    first = args[0].reshape(-1)[0]

    def nans(*a):
        return jax.tree.map(lambda o: jnp.full(o.shape, jnp.nan, o.dtype), jax.eval_shape(f, *a))

    return jax.lax.cond(jnp.isfinite(first), f, nans, *args)


def materialize(*arrays):
    """The arrays, computed once into buffers of their own (an identity for finite values;
    all-NaN for a non-finite first element). The branch copies them: where their consumer
    can run in the branch, `on_buffers(consumer, *arrays)` saves the copy."""
    return on_buffers(lambda *a: a, *arrays)


# A reduction block's operands fit in the L2 cache of any x86-64 core (256 KiB and up); block
# sizes from 8 to 512 KiB ran alike (experiments/cpu_layers).
REDUCTION_BLOCK_BYTES = 128 * 1024


def _rows_per_block(rows, row_bytes):
    """The largest divisor of `rows` whose rows take at most REDUCTION_BLOCK_BYTES (at least 1)."""
    fit = max(1, REDUCTION_BLOCK_BYTES // row_bytes)
    return max(d for d in range(1, min(rows, fit) + 1) if rows % d == 0)


def _depthwise_kernel_grad(xp, g, kernel_shape, strides):
    """dk[i, j, c]: the sum over batch and positions of tap (i, j)'s window of the padded
    input xp times the output gradient g, in float32 at least (bfloat16 sums in float32).

    All taps in one variadic reduction: one pass over xp and g instead of one per tap
    (experiments/cpu_layers). It sums blocks of rows first, each small enough to stay in
    cache: XLA:CPU reduces one channel after another, re-reading every row per channel.
    """
    (kh, kw, _), (n, out_h, out_w, channels) = kernel_shape, g.shape
    accumulate = jnp.promote_types(g.dtype, jnp.float32)
    rows = _rows_per_block(n * out_h, out_w * channels * (g.dtype.itemsize + xp.dtype.itemsize))
    products = tuple((_window(xp, i, j, (out_h, out_w), strides) * g).astype(accumulate)
                     .reshape(n * out_h // rows, rows * out_w, channels)
                     for i in range(kh) for j in range(kw))
    blocks = jax.lax.reduce(products, (jnp.zeros((), accumulate),) * len(products),
                            lambda a, b: tuple(u + v for u, v in zip(a, b)), (1,))
    return jnp.stack(blocks).sum(1).reshape(kernel_shape)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def depthwise_conv_vjp(x, kernel, strides, padding):
    """Depthwise conv, NHWC x (kh, kw, C) kernel, explicit ((lo, hi), (lo, hi)) padding.

    Forward as shifted slices; the backward pass is written by hand instead of XLA's
    autodiff of the slices: the input gradient is the same shifted-slice sum over the
    (stride-dilated, padded) output gradient with the kernel flipped, and the kernel gradient
    is nine column sums, one per tap, of the shifted input window times the output gradient.
    """
    return _depthwise_fwd(x, kernel, strides, padding)[0]


def _depthwise_fwd(x, kernel, strides, padding):
    # The padded input is the residual: the backward slices its windows from it, no second pad.
    xp = jnp.pad(x, ((0, 0), *padding, (0, 0)))
    out = _shifted_sum(xp, kernel, _out_hw(x, kernel, strides, padding), strides)
    return out, (xp, kernel)


def _depthwise_grads(g, xp, kernel, strides, padding):
    (kh, kw, _), (sh, sw) = kernel.shape, strides
    (pt, pb), (pl, pr) = padding
    h, w = xp.shape[1] - pt - pb, xp.shape[2] - pl - pr
    out_h, out_w = g.shape[1], g.shape[2]
    # Input gradient: a stride-1 'valid' conv of the dilated, padded gradient, kernel flipped.
    lo_h, lo_w = kh - 1 - pt, kw - 1 - pl
    hi_h = h + kh - 1 - lo_h - ((out_h - 1) * sh + 1)
    hi_w = w + kw - 1 - lo_w - ((out_w - 1) * sw + 1)
    zero = jnp.zeros((), g.dtype)
    gp = jax.lax.pad(g, zero, ((0, 0, 0), (lo_h, hi_h, sh - 1), (lo_w, hi_w, sw - 1), (0, 0, 0)))
    dx = _shifted_sum(gp, kernel[::-1, ::-1].astype(g.dtype), (h, w), (1, 1))
    dk = _depthwise_kernel_grad(xp, g, kernel.shape, strides).astype(kernel.dtype)
    return dx.astype(xp.dtype), dk


def _depthwise_bwd(strides, padding, residuals, g):
    xp, kernel = residuals
    # Operands once, outputs once: else the backward of BatchNorm and the activation (in g)
    # and the previous layer's pad, BatchNorm and activation (in xp) are recomputed in every
    # nine-tap consumer, and the input gradient in both passes of the previous BatchNorm's
    # backward (experiments/depthwise_cpu).
    grads = functools.partial(_depthwise_grads, strides=strides, padding=padding)
    return on_buffers(grads, g, xp, kernel)


depthwise_conv_vjp.defvjp(_depthwise_fwd, _depthwise_bwd)


def pointwise_matmul(x, kernel):
    """A 1x1 conv (kernel (1, 1, in, out)) as one matmul over the channel axis."""
    rows = x.reshape(-1, x.shape[-1]) @ kernel[0, 0]
    return rows.reshape(*x.shape[:-1], kernel.shape[-1])


def _conv(x, kernel, strides, padding):
    if kernel.shape[:2] == (1, 1) and strides == (1, 1) and padding == ((0, 0), (0, 0)):
        return pointwise_matmul(x, kernel)
    return jax.lax.conv_general_dilated(x, kernel, strides, padding,
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def few_channel_conv(x, kernel, strides, padding):
    """Dense conv, NHWC x HWIO kernel, for a handful of input channels (the RGB stem, the
    first pointwise convs of narrow networks).

    Forward as kh*kw*C_in shifted slices times a row of the kernel, summed: XLA:CPU's
    convolution of a 3-channel input is slower (experiments/stem_cpu), and so is a matmul
    with 3 inputs (experiments/pointwise_cpu). The backward is the
    convolution's (for 1x1, the matmul's) own VJP, which the sliced form's autodiff (a
    reduction over the batch per kernel entry) does not beat; from PATCH_MATMUL_MIN_FEATURES
    outputs on, the kernel gradient is one matmul of the input's patches instead.
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


# XLA:CPU's kernel gradient of a conv with this many outputs of 3 inputs took longer than
# building the patches and one matmul, natively and at AVX2 (experiments/stem_cpu).
PATCH_MATMUL_MIN_FEATURES = 16


def _patch_kernel_grad(x, g, kernel_shape, strides, padding):
    """The kernel gradient of a conv as (patches)ᵀ x (output gradient): patches is
    (positions, kh*kw*C_in), each output position's input window in the kernel's HWIO order."""
    kh, kw = kernel_shape[:2]
    windows = [_window_of_padded(x, i, j, g.shape[1:3], strides, padding)
               for i in range(kh) for j in range(kw)]
    patches = jnp.concatenate(windows, -1).reshape(-1, kh * kw * x.shape[-1])
    accumulate = jnp.promote_types(g.dtype, jnp.float32)
    dk = jnp.matmul(patches.T, g.reshape(-1, g.shape[-1]), preferred_element_type=accumulate)
    return dk.reshape(kernel_shape)


def _few_channel_bwd(strides, padding, residuals, g):
    x, kernel = residuals
    if kernel.shape[:2] == (1, 1) or kernel.shape[-1] < PATCH_MATMUL_MIN_FEATURES:
        return jax.vjp(lambda x, k: _conv(x, k, strides, padding), x, kernel)[1](g)
    dx, = jax.vjp(lambda x: _conv(x, kernel, strides, padding), x)[1](g)
    return dx, _patch_kernel_grad(x, g, kernel.shape, strides, padding).astype(kernel.dtype)


few_channel_conv.defvjp(_few_channel_fwd, _few_channel_bwd)


# ---- the formulations as modules with nn.Conv's fields and parameter ------------------------

class _HandWrittenConv(nn.Module):
    """nn.Conv's fields, shared by the hand-written convs (bias-free, explicit padding)."""
    features: int
    kernel_size: Sequence[int] = (3, 3)
    strides: Any = 1
    padding: Any = ((1, 1), (1, 1))
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


class FewChannelConv(_HandWrittenConv):
    """`nn.Conv` (bias-free, explicit padding, same 'kernel') computed by `few_channel_conv`."""

    @nn.compact
    def __call__(self, x):
        kernel_shape = (*self.kernel_size, x.shape[-1], self.features)
        return few_channel_conv(*self._prepare(x, kernel_shape))


class _DepthwiseConv(_HandWrittenConv):
    """nn.Conv's signature with features == feature_group_count == channels."""
    feature_group_count: int = 1

    def _prepare_depthwise(self, x):
        """(x, kernel (kh, kw, C), strides pair, padding tuple), checked and dtype-promoted."""
        channels = x.shape[-1]
        if self.feature_group_count != channels or self.features != channels:
            raise ValueError(f"{type(self).__name__} supports only depthwise convs "
                             f"(features == feature_group_count == {channels})")
        x, kernel, strides, padding = self._prepare(x, (*self.kernel_size, 1, channels))
        return x, kernel[:, :, 0, :], strides, padding


class SlicedDepthwiseConv(_DepthwiseConv):
    """3x3 depthwise conv as nine shifted (strided) slices times per-channel weights, summed,
    differentiated by XLA. `VJPDepthwiseConv` has the same forward and a faster backward on
    CPU; this one is the baseline it is measured against (experiments/depthwise_cpu)."""

    @nn.compact
    def __call__(self, x):
        x, kernel, strides, padding = self._prepare_depthwise(x)
        xp = jnp.pad(x, ((0, 0), *padding, (0, 0)))
        return _shifted_sum(xp, kernel, _out_hw(x, kernel, strides, padding), strides)


class VJPDepthwiseConv(_DepthwiseConv):
    """3x3 depthwise conv as shifted slices, with a hand-written backward
    (`depthwise_conv_vjp`): on XLA:CPU far faster than its grouped convolution, above all in
    the backward pass (experiments/depthwise_cpu; jax issues 13800, 23713)."""

    @nn.compact
    def __call__(self, x):
        return depthwise_conv_vjp(*self._prepare_depthwise(x))


class PointwiseConv(_HandWrittenConv):
    """1x1 conv as one matmul over the channel axis, `nn.Conv`'s 'kernel' (1, 1, in, out).

    XLA:CPU runs the convolution form, and above all its kernel gradient, about half as fast
    as the same contraction written as a dot (experiments/pointwise_cpu).
    """
    kernel_size: Sequence[int] = (1, 1)
    padding: Any = ((0, 0), (0, 0))
    # Up to this many input channels the forward is `few_channel_conv`'s multiply-adds: a
    # matmul that thin runs far below XLA:CPU's elementwise loops (experiments/pointwise_cpu).
    max_sliced_inputs: int = 0

    @nn.compact
    def __call__(self, x):
        if tuple(self.kernel_size) != (1, 1):
            raise ValueError("PointwiseConv supports only 1x1 convs")
        args = self._prepare(x, (1, 1, x.shape[-1], self.features))
        # `_conv` is the matmul for a stride-1 unpadded 1x1 conv (the network's only kind).
        return (few_channel_conv if x.shape[-1] <= self.max_sliced_inputs else _conv)(*args)


# Every depthwise formulation by name, for tests and experiments that compare them.
DEPTHWISE_FORMS = {"grouped": nn.Conv, "slices": SlicedDepthwiseConv, "vjp": VJPDepthwiseConv}


# ---- the policy -----------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class ConvKernels:
    """The module that computes each kind of conv in the network, and the norm. Each takes
    `nn.Conv`'s (`nn.BatchNorm`'s) arguments and has its parameters, so policies share
    checkpoints."""
    stem: ModuleDef       # the 3x3 conv of the RGB image
    depthwise: ModuleDef  # the 3x3 depthwise convs (feature_group_count == channels)
    pointwise: ModuleDef  # the 1x1 convs
    norm: ModuleDef = nn.BatchNorm  # the BatchNorm after each conv


KERNELS = {
    "reference": ConvKernels(stem=nn.Conv, depthwise=nn.Conv, pointwise=nn.Conv),
    # Pointwise convs with at most 4 inputs (block 1 at alpha=0.1) as multiply-adds.
    "cpu": ConvKernels(stem=FewChannelConv, depthwise=VJPDepthwiseConv,
                       pointwise=functools.partial(PointwiseConv, max_sliced_inputs=4),
                       norm=BatchNorm),
}

# Every module a policy computes a conv with is an instance of one of these.
CONV_MODULES = (nn.Conv, _HandWrittenConv)


def conv_kernels(kernels) -> ConvKernels:
    """A policy name of `KERNELS` (or a `ConvKernels`, for experiments) -> its ConvKernels."""
    if isinstance(kernels, ConvKernels):
        return kernels
    if kernels not in KERNELS:
        raise ValueError(f"kernels must be one of {tuple(KERNELS)} (or 'auto' in a Config), "
                         f"got {kernels!r}")
    return KERNELS[kernels]
