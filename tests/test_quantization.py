"""core/quantization.py: fake int8 rounding for quantization-aware training."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mobilenet_jax as mj
from mobilenet_jax.core import quantization, steps


def test_weights_round_to_127_symmetric_levels_per_output_channel():
    rng = np.random.default_rng(0)
    w = rng.normal(0, 1, (3, 3, 4, 5)) * np.array([1e-3, 0.1, 1.0, 10.0, 0.0])
    q = np.asarray(quantization.fake_quantized_weight(jnp.asarray(w, jnp.float32)))
    for c in range(4):  # the naive formula, channel by channel
        scale = np.abs(w[..., c]).max() / 127
        levels = q[..., c] / scale
        np.testing.assert_allclose(levels, np.round(levels), atol=1e-3)
        assert np.abs(levels).max() == pytest.approx(127, abs=1e-3)  # the largest is kept
        assert np.abs(q[..., c] - w[..., c]).max() <= scale / 2 * (1 + 1e-5)
    assert not q[..., 4].any()  # an all-zero channel stays zero (no division by zero)


def test_activations_round_to_a_grid_of_255_steps_that_holds_zero():
    x = jnp.asarray(np.random.default_rng(1).uniform(-1.5, 6.0, (2, 7, 7, 3)), jnp.float32)
    q = np.asarray(quantization.fake_quantized_activation(x))
    step = (float(x.max()) - float(x.min())) / 255
    np.testing.assert_allclose(q / step, np.round(q / step), atol=1e-3)
    assert np.abs(q - np.asarray(x)).max() <= step / 2 * (1 + 1e-5)
    assert float(quantization.fake_quantized_activation(jnp.array([0.0, 0.3, 6.0]))[0]) == 0.0


def test_rounding_passes_gradients_straight_through():
    x = jnp.linspace(-1.0, 2.0, 12).reshape(3, 4)
    for fake in (quantization.fake_quantized_weight, quantization.fake_quantized_activation):
        np.testing.assert_array_equal(jax.grad(lambda v: (fake(v) * 3.0).sum())(x),
                                      np.full(x.shape, 3.0))


@pytest.mark.parametrize("kernels", ["reference", "cpu"])
def test_every_conv_and_the_classifier_read_a_quantized_input(kernels, monkeypatch):
    init, apply = mj.functions(mj.Config(width_multiplier=0.25, num_classes=10,
                                         kernels=kernels))
    variables = init(jax.random.key(0), (1, 32, 32, 3))
    seen = []
    fake = quantization.fake_quantized_activation
    monkeypatch.setattr(quantization, "fake_quantized_activation",
                        lambda x: (seen.append(x.shape), fake(x))[1])
    with quantization.fake_quantized_inputs():
        apply(variables, jnp.ones((2, 32, 32, 3)))
    assert len(seen) == 1 + 13 * 2 + 1  # stem, 13 depthwise and 13 pointwise convs, classifier
    assert seen[0] == (2, 32, 32, 3) and seen[-1] == (2, 256)


def test_qat_train_step_computes_with_rounded_weights():
    """At one state and batch, --qat gives another (finite) loss, and the state stays float."""
    config = mj.Config(width_multiplier=0.25, num_classes=10, batch_size=8, augment=False)
    batch = {"image": np.random.default_rng(2).integers(0, 256, (8, 32, 32, 3), np.uint8),
             "label": np.arange(8) % 10}
    losses = {}
    for qat in (False, True):
        training = steps.build(config.replace(qat=qat))
        state = training.init_state(jax.random.key(0))
        new_state, metrics = jax.jit(functools.partial(
            steps.train_step, config=training.config, schedule=training.schedule))(
            state, batch, jax.random.key(1))
        losses[qat] = float(metrics["loss"]) / 8
        assert np.isfinite(losses[qat])
        assert jax.tree.leaves(new_state.params)[0].dtype == jnp.float32
    assert losses[True] != losses[False]
