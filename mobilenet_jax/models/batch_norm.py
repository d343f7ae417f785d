"""BatchNorm with `nn.BatchNorm`'s variables and results, and its training-mode gradient
written by hand.

JAX's autodiff of the batch statistics (mean, then the mean of squared deviations) leaves
XLA more reductions and passes over the activations than the textbook gradient needs: two
channel sums, sum(g) and sum(g * (x - mean)), and one elementwise pass. Sums taken together
are one pass (`_channel_sums`). What each buys the CPU train step: experiments/cpu_layers.
"""
import functools
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn
from jax import lax


def _channel_sums(a, b):
    """(sum of a, sum of b) over all axes but the last, a and b of one shape and dtype.

    Both in one pass of XLA's own reduction over the second-to-last axis, then over the rows
    left: on XLA:CPU faster than two whole sums, which it hands to YNNPACK, at every
    BatchNorm shape measured, on one core and on two (experiments/cpu_layers)."""
    if a.ndim < 3:
        return a.sum(tuple(range(a.ndim - 1))), b.sum(tuple(range(b.ndim - 1)))
    rows = (-1, *a.shape[-2:])
    zero = jnp.zeros((), a.dtype)
    sums = lax.reduce((a.reshape(rows), b.reshape(rows)), (zero, zero),
                      lambda x, y: (x[0] + y[0], x[1] + y[1]), (1,))
    return sums[0].sum(0), sums[1].sum(0)


def _variance(d):
    """The variance over all axes but the last of x, from d = x - K for any constant K per
    channel: (sum(d^2) - sum(d)^2 / n) / n. With K the mean, sum(d) is that mean's rounding
    error only: the corrected two-pass formula (Chan, Golub and LeVeque, 1983)."""
    n = d.size // d.shape[-1]
    sum_squares, sum_d = _channel_sums(d * d, d)
    return (sum_squares - sum_d * sum_d / n) / n


def _stats(x, stats_dtype):
    xf = x.astype(stats_dtype)
    mean = xf.mean(tuple(range(x.ndim - 1)))
    return mean, _variance(xf - mean)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def batch_norm_train(x, scale, bias, epsilon, stats_dtype):
    """(y, mean, var): x normalised over all axes but the last with the batch's mean and
    (biased) variance, nn.BatchNorm(use_fast_variance=False)'s (in exact arithmetic; here
    with the mean's rounding error corrected)."""
    return _fwd(x, scale, bias, epsilon, stats_dtype)[0]


def _fwd(x, scale, bias, epsilon, stats_dtype):
    mean, var = _stats(x, stats_dtype)
    rstd = lax.rsqrt(var + epsilon)
    y = (x - mean) * (rstd * scale) + bias
    return (y, mean, var), (x, scale, mean, rstd)


def _bwd(epsilon, stats_dtype, residuals, cotangents):
    # y = (x - mean) * rstd * scale + bias, with mean and var outputs too: the gradients
    # through the batch statistics (nonzero only where a loss reads them) are the last terms.
    x, scale, mean, rstd = residuals
    gy, gmean, gvar = cotangents
    n = x.size // x.shape[-1]
    centred = x - mean
    gy = gy.astype(centred.dtype)
    sum_gy, sum_gy_centred = _channel_sums(gy, gy * centred)
    a = rstd * scale
    b = 2 * gvar / n - a * rstd * rstd * sum_gy_centred / n
    c = gmean / n - a * sum_gy / n
    gx = (a * gy + b * centred + c).astype(x.dtype)
    return gx, (sum_gy_centred * rstd).astype(scale.dtype), sum_gy.astype(scale.dtype)


batch_norm_train.defvjp(_fwd, _bwd)


class BatchNorm(nn.Module):
    """`nn.BatchNorm` over all axes but the last (use_fast_variance=False): the same 'scale',
    'bias', 'mean' and 'var', the same results; its gradient by the textbook formula."""
    use_running_average: bool = False
    momentum: float = 0.99
    epsilon: float = 1e-5
    dtype: Any = None
    param_dtype: Any = jnp.float32
    use_fast_variance: bool = False

    @nn.compact
    def __call__(self, x):
        if self.use_fast_variance:
            raise ValueError("BatchNorm computes the variance as mean((x - mean)^2) only")
        features = (x.shape[-1],)
        ra_mean = self.variable("batch_stats", "mean", jnp.zeros, features, jnp.float32)
        ra_var = self.variable("batch_stats", "var", jnp.ones, features, jnp.float32)
        scale = self.param("scale", nn.initializers.ones, features, self.param_dtype)
        bias = self.param("bias", nn.initializers.zeros, features, self.param_dtype)
        out_dtype = nn.dtypes.canonicalize_dtype(x, scale, bias, dtype=self.dtype)
        if self.use_running_average:
            y = (x - ra_mean.value) * (lax.rsqrt(ra_var.value + self.epsilon) * scale) + bias
            return jnp.asarray(y, out_dtype)
        stats_dtype = jnp.promote_types(self.dtype or x.dtype, jnp.float32)
        y, mean, var = batch_norm_train(x, scale, bias, self.epsilon, stats_dtype)
        if not self.is_initializing():
            ra_mean.value = self.momentum * ra_mean.value + (1 - self.momentum) * mean
            ra_var.value = self.momentum * ra_var.value + (1 - self.momentum) * var
        return jnp.asarray(y, out_dtype)
