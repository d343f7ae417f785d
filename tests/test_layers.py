"""Every conv formulation computes what the nn.Conv it stands in for computes (values and
both gradients, same parameters), and the kernel policies give the same network."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from mobilenet_jax.models.layers import (DEPTHWISE_FORMS, KERNELS, FewChannelConv,
                                         PointwiseConv, SlicedDepthwiseConv, conv_kernels,
                                         materialize)
from mobilenet_jax.models.mobilenet import MobileNetV1
from mobilenet_jax.models.spec import KERNEL_POLICIES, PAD1, resolve_kernels

OTHERS = [name for name in DEPTHWISE_FORMS if name != "grouped"]


# Modules run under jit, or are only traced (for shapes and refusals): op by op, every small
# shape of every test would compile on its own.
def same_shapes(a, b) -> bool:
    return jax.tree.map(lambda v: v.shape, a) == jax.tree.map(lambda v: v.shape, b)


def _values_and_grads(module, variables, x):
    def loss(variables, x):
        y = module.apply(variables, x)
        return jnp.sum(y * jnp.cos(y)), y  # a non-trivial output gradient

    with jax.default_matmul_precision("highest"):
        (_, y), grads = jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))(
            variables, x)
    return y, grads


@pytest.mark.parametrize("impl", OTHERS)
@pytest.mark.parametrize("channels", [1, 3, 13, 64])
@pytest.mark.parametrize("size", [7, 8])
@pytest.mark.parametrize("strides", [1, 2])
def test_matches_grouped_conv(impl, channels, size, strides):
    x = jax.random.normal(jax.random.key(channels * 100 + size), (2, size, size + 1, channels))
    kwargs = dict(features=channels, kernel_size=(3, 3), strides=strides, padding=PAD1,
                  feature_group_count=channels, use_bias=False)
    ref = nn.Conv(**kwargs)
    variables = jax.jit(ref.init)(jax.random.key(1), x)
    mod = DEPTHWISE_FORMS[impl](**kwargs)
    assert same_shapes(jax.eval_shape(mod.init, jax.random.key(1), x), variables)
    y_ref, (gv_ref, gx_ref) = _values_and_grads(ref, variables, x)
    y, (gv, gx) = _values_and_grads(mod, variables, x)
    assert y.shape == y_ref.shape and y.dtype == y_ref.dtype
    np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(gx, gx_ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(gv["params"]["kernel"], gv_ref["params"]["kernel"],
                               rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("impl", OTHERS)
def test_bfloat16_runs(impl):
    x = jax.random.normal(jax.random.key(0), (2, 8, 8, 16))
    kwargs = dict(features=16, kernel_size=(3, 3), strides=2, padding=PAD1,
                  feature_group_count=16, use_bias=False, dtype=jnp.bfloat16)
    variables = jax.jit(nn.Conv(**kwargs).init)(jax.random.key(1), x)
    y_ref = jax.jit(nn.Conv(**kwargs).apply)(variables, x)
    mod = DEPTHWISE_FORMS[impl](**kwargs)
    y = jax.jit(mod.apply)(variables, x)
    assert y.dtype == jnp.bfloat16
    np.testing.assert_allclose(y.astype(np.float32), y_ref.astype(np.float32), rtol=0.05, atol=0.05)
    g = jax.jit(jax.grad(lambda v: jnp.sum(mod.apply(v, x).astype(jnp.float32))))(variables)
    assert g["params"]["kernel"].dtype == jnp.float32


def test_rejects_non_depthwise():
    for impl in OTHERS:
        mod = DEPTHWISE_FORMS[impl](features=8, kernel_size=(3, 3),
                                               feature_group_count=4)
        with pytest.raises(ValueError):
            jax.eval_shape(mod.init, jax.random.key(0), jnp.zeros((1, 5, 5, 4)))


def test_full_model_same_logits_and_grads_with_every_policy():
    """The network of each policy (and the sliced depthwise conv differentiated by XLA, the
    baseline of the hand-written backward) equals the reference network."""
    x = jax.random.normal(jax.random.key(0), (4, 32, 32, 3))
    labels = jnp.arange(4) % 10

    def run(kernels, variables):
        model = MobileNetV1(num_classes=10, width_multiplier=0.25, kernels=kernels)

        def loss(params):
            logits, _ = model.apply({"params": params, "batch_stats": variables["batch_stats"]},
                                    x, train=True, mutable=["batch_stats"])
            return jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(4), labels]), logits

        with jax.default_matmul_precision("highest"):
            (_, logits), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(
                variables["params"])
        return logits, grads

    variables = jax.jit(MobileNetV1(num_classes=10, width_multiplier=0.25).init)(
        jax.random.key(1), x)
    logits_ref, grads_ref = run("reference", variables)
    sliced = dataclasses.replace(KERNELS["cpu"], depthwise=SlicedDepthwiseConv)
    for kernels in ("cpu", sliced):
        logits, grads = run(kernels, variables)
        np.testing.assert_allclose(logits, logits_ref, rtol=1e-4, atol=1e-4)
        # Through 14 train-mode BatchNorms over 4 examples float32 rounding differences are
        # amplified, so compare each gradient relative to its own scale.
        for g, g_ref in zip(jax.tree.leaves(grads), jax.tree.leaves(grads_ref)):
            g, g_ref = np.asarray(g), np.asarray(g_ref)
            scale = float(np.max(np.abs(g_ref))) + 1e-6
            assert float(np.max(np.abs(g - g_ref))) <= 3e-3 * scale + 5e-5, kernels


def test_reference_policy_is_nn_conv_everywhere():
    """What GPUs and exporters get: every conv an nn.Conv, depthwise by feature_group_count."""
    model = MobileNetV1(num_classes=10, width_multiplier=0.25, kernels="reference")
    x = jnp.zeros((1, 32, 32, 3))
    jaxpr = str(jax.make_jaxpr(lambda x: model.init_with_output(jax.random.key(0), x)[0])(x))
    assert jaxpr.count("conv_general_dilated") == 1 + 2 * 13
    assert "feature_group_count=16" in jaxpr and "dot_general" in jaxpr  # the classifier only
    assert "cond" not in jaxpr and "custom_vjp" not in jaxpr
    cpu = str(jax.make_jaxpr(
        lambda x: MobileNetV1(num_classes=10, width_multiplier=0.25, kernels="cpu")
        .init_with_output(jax.random.key(0), x)[0])(x))
    assert "conv_general_dilated" not in cpu


def test_kernel_policy_names():
    assert resolve_kernels("auto", "cpu") == "cpu"
    assert resolve_kernels("auto", "gpu") == "reference"
    assert resolve_kernels("reference", "cpu") == "reference"
    assert conv_kernels("cpu") is KERNELS["cpu"]
    with pytest.raises(ValueError, match="fft"):
        conv_kernels("fft")


def _assert_same_as_conv(mod, ref, variables, x, atol):
    """mod has ref's (an nn.Conv's) parameters and computes its values and both gradients
    (the kernel gradient at atol 1e-5, as it sums over the batch and positions)."""
    assert same_shapes(jax.eval_shape(mod.init, jax.random.key(1), x), variables)
    y_ref, (gv_ref, gx_ref) = _values_and_grads(ref, variables, x)
    y, (gv, gx) = _values_and_grads(mod, variables, x)
    np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=atol)
    np.testing.assert_allclose(gx, gx_ref, rtol=1e-5, atol=atol)
    np.testing.assert_allclose(gv["params"]["kernel"], gv_ref["params"]["kernel"],
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape,features", [((2, 5, 6, 3), 8), ((3, 1, 1, 16), 4), ((1, 4, 4, 1), 1)])
@pytest.mark.parametrize("max_sliced_inputs", [0, 16])
def test_pointwise_matmul_matches_conv(shape, features, max_sliced_inputs):
    """PointwiseConv (a matmul, or multiply-adds for few inputs) equals nn.Conv with a 1x1
    kernel: same params, values, grads."""
    x = jax.random.normal(jax.random.key(features), shape)
    ref = nn.Conv(features, (1, 1), use_bias=False)
    variables = jax.jit(ref.init)(jax.random.key(1), x)
    mod = PointwiseConv(features, (1, 1), max_sliced_inputs=max_sliced_inputs)
    _assert_same_as_conv(mod, ref, variables, x, atol=1e-6)
    forward = str(jax.make_jaxpr(mod.apply)(variables, x))
    assert ("dot_general" in forward) == (max_sliced_inputs < shape[-1])
    with pytest.raises(ValueError):
        jax.eval_shape(PointwiseConv(features, (3, 3)).init, jax.random.key(0), x)


@pytest.mark.parametrize("in_channels,features", [(3, 3), (3, 32), (1, 5)])
@pytest.mark.parametrize("strides", [1, 2])
@pytest.mark.parametrize("size", [7, 8])
def test_few_channel_conv_matches_conv(in_channels, features, strides, size):
    """The stem's sliced conv equals nn.Conv: same params, values and both gradients."""
    x = jax.random.normal(jax.random.key(size), (2, size, size + 1, in_channels))
    ref = nn.Conv(features, (3, 3), strides=strides, padding=PAD1, use_bias=False)
    variables = jax.jit(ref.init)(jax.random.key(1), x)
    _assert_same_as_conv(FewChannelConv(features, (3, 3), strides=strides, padding=PAD1),
                         ref, variables, x, atol=1e-5)
    with pytest.raises(ValueError):
        jax.eval_shape(FewChannelConv(features, padding="SAME").init, jax.random.key(0), x)


@pytest.mark.parametrize("padding,size", [(((3, 0), (0, 2)), 1), (((3, 0), (0, 2)), 6),
                                          (((0, 0), (2, 1)), 5), (((0, 0), (0, 0)), 4)])
@pytest.mark.parametrize("strides", [1, 2])
def test_few_channel_conv_uneven_padding(padding, size, strides):
    """Padding on one side only, and taps that read nothing but padding (size 1 with 3 rows
    before it): the windows are sliced from the unpadded input, so the edges must still be
    zeros in the right places."""
    x = jax.random.normal(jax.random.key(size), (2, size, size + 2, 3))
    ref = nn.Conv(4, (3, 3), strides=strides, padding=padding, use_bias=False)
    variables = jax.jit(ref.init)(jax.random.key(1), x)
    _assert_same_as_conv(FewChannelConv(4, (3, 3), strides=strides, padding=padding),
                         ref, variables, x, atol=1e-5)


def test_materialize_is_identity_and_keeps_nan():
    a = jnp.arange(6.0).reshape(2, 3)
    b = -jnp.ones((4,), jnp.bfloat16)
    out = jax.jit(materialize)(a, b)
    np.testing.assert_array_equal(out[0], a)
    np.testing.assert_array_equal(out[1].astype(np.float32), b.astype(np.float32))
    assert out[1].dtype == jnp.bfloat16
    # A non-finite first element must not be silently dropped: everything turns NaN.
    bad = a.at[0, 0].set(jnp.inf)
    out = jax.jit(materialize)(bad, b)
    assert bool(jnp.all(jnp.isnan(out[0]))) and bool(jnp.all(jnp.isnan(out[1])))


def test_the_policy_names_known_without_flax_are_the_formulations():
    assert tuple(KERNELS) == KERNEL_POLICIES
