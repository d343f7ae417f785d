"""The hand-written BatchNorm is nn.BatchNorm (use_fast_variance=False): the same variables,
and in float64 the same outputs, statistics and gradients (tests/numerics.py), in training
and in eval mode."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn
from numerics import U_BFLOAT16, as_float64, assert_same, float64

from mobilenet_jax.models.batch_norm import BatchNorm, _variance

pytestmark = pytest.mark.numerics

ARGS = dict(momentum=0.9, epsilon=1e-5)


def _perturbed(variables):
    """Variables away from their initial ones and 1, so no term of the gradient vanishes."""
    leaves, tree = jax.tree.flatten(variables)
    keys = jax.random.split(jax.random.key(7), len(leaves))
    return jax.tree.unflatten(tree, [v + 0.3 * jax.random.normal(k, v.shape, v.dtype)
                                     for v, k in zip(leaves, keys)])


def _train_outputs_and_grads(module, variables, x, weights):
    """Outputs, updated statistics, and the gradients of a loss that depends on the outputs
    and on the updated statistics too, with respect to the parameters and the input."""
    def loss(params, x):
        y, updates = module.apply({"params": params, "batch_stats": variables["batch_stats"]},
                                  x, mutable=["batch_stats"])
        stats = updates["batch_stats"]
        value = (jnp.sum(jnp.sin(y) * weights)
                 + jnp.sum(jnp.tanh(stats["mean"]) + stats["var"] ** 2))
        return value, (y, stats)

    (_, aux), grads = jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))(
        variables["params"], x)
    return aux, grads


@pytest.mark.parametrize("shape", [(4, 5, 6, 3), (2, 1, 1, 8), (3, 5, 4), (7, 16)])
def test_same_as_flax_batch_norm_in_training(shape):
    x = 3 * jax.random.normal(jax.random.key(0), shape) + 2  # a mean far from 0
    weights = jax.random.normal(jax.random.key(1), shape)
    reference = nn.BatchNorm(use_running_average=False, use_fast_variance=False, **ARGS)
    module = BatchNorm(use_running_average=False, **ARGS)
    variables = jax.jit(reference.init)(jax.random.key(2), x)
    shapes = functools.partial(jax.tree.map, lambda v: (v.shape, v.dtype))
    assert shapes(jax.eval_shape(module.init, jax.random.key(2), x)) == shapes(variables)
    with float64():
        x, weights, variables = as_float64((x, weights, _perturbed(variables)))
        assert_same(_train_outputs_and_grads(module, variables, x, weights),
                    _train_outputs_and_grads(reference, variables, x, weights))


def test_variance_from_deviations_about_any_constant():
    """The variance from deviations about the mean (the statistics' case, where the correction
    is only the mean's rounding error) and about constants far from it (where the correction
    is most of the sum), against numpy's in float64. The constants are at most 5 standard
    deviations from the mean, so cancellation costs at most a factor 26 over float64's
    roundoff, summed over 24 values per channel: 1e-12 relative bounds it with room."""
    with float64():
        x = 3 * jax.random.normal(jax.random.key(0), (2, 3, 4, 5), jnp.float64) + 2
        want = np.var(np.asarray(x), axis=(0, 1, 2))
        for shift in (x.mean((0, 1, 2)), 0.0, x.mean((0, 1, 2)) + 15 * jnp.arange(5) / 4):
            np.testing.assert_allclose(_variance(x - shift), want, rtol=1e-12)


def test_same_as_flax_batch_norm_in_eval_mode():
    x = jax.random.normal(jax.random.key(0), (3, 4, 4, 5))
    reference = nn.BatchNorm(use_running_average=True, use_fast_variance=False, **ARGS)
    module = BatchNorm(use_running_average=True, **ARGS)
    with float64():
        x = as_float64(x)
        variables = _perturbed(as_float64(jax.jit(reference.init)(jax.random.key(2), x)))
        variables["batch_stats"]["var"] = np.abs(variables["batch_stats"]["var"])
        grad = jax.grad(lambda x, m: jnp.sum(jnp.sin(m.apply(variables, x))))
        assert_same((module.apply(variables, x), grad(x, module)),
                    (reference.apply(variables, x), grad(x, reference)))


def test_bfloat16_output_float32_statistics_and_gradients():
    """In bfloat16 the output is bfloat16 and everything else float32, as nn.BatchNorm keeps
    them; the output is the float32 result rounded once (within bfloat16's unit roundoff)."""
    x = jax.random.normal(jax.random.key(0), (4, 3, 3, 6))
    module = BatchNorm(use_running_average=False, dtype=jnp.bfloat16, **ARGS)
    variables = _perturbed(jax.jit(module.init)(jax.random.key(2), x))
    (y, stats), grads = _train_outputs_and_grads(module, variables, x, jnp.ones(x.shape))
    assert y.dtype == jnp.bfloat16
    assert {v.dtype for v in jax.tree.leaves((stats, grads))} == {jnp.dtype(jnp.float32)}
    float32 = BatchNorm(use_running_average=False, **ARGS)
    (y32, stats32), _ = _train_outputs_and_grads(float32, variables, x, jnp.ones(x.shape))
    np.testing.assert_allclose(np.asarray(y, np.float32), y32, rtol=U_BFLOAT16, atol=0)
    np.testing.assert_array_equal(stats["mean"], stats32["mean"])


def test_refuses_the_fast_variance():
    with pytest.raises(ValueError, match="variance"):
        jax.eval_shape(BatchNorm(use_fast_variance=True).init, jax.random.key(0),
                       jnp.zeros((2, 3)))
