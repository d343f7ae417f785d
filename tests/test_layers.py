"""Every conv formulation computes what the nn.Conv it stands in for computes (values and
both gradients, same parameters), and the kernel policies give the same network: compared in
float64, where only a wrong formulation could exceed the tolerance (tests/numerics.py)."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn
from numerics import U_BFLOAT16, as_float64, assert_same, assert_within, float64, gamma

from mobilenet_jax.models.layers import (DEPTHWISE_FORMS, KERNELS, PATCH_MATMUL_MIN_FEATURES,
                                         FewChannelConv, PointwiseConv, SlicedDepthwiseConv,
                                         conv_kernels, materialize, on_buffers)
from mobilenet_jax.models.mobilenet import MobileNetV1
from mobilenet_jax.models.spec import KERNEL_POLICIES, PAD1, resolve_kernels

pytestmark = pytest.mark.numerics  # .ci/run runs these again on another instruction set

OTHERS = [name for name in DEPTHWISE_FORMS if name != "grouped"]


# Modules run under jit, or are only traced (for shapes and refusals): op by op, every small
# shape of every test would compile on its own.
def same_shapes(a, b) -> bool:
    return jax.tree.map(lambda v: v.shape, a) == jax.tree.map(lambda v: v.shape, b)


def _values_and_grads(module, variables, x):
    def loss(variables, x):
        y = module.apply(variables, x)
        return jnp.sum(y * jnp.cos(y)), y  # a non-trivial output gradient

    (_, y), grads = jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))(
        variables, x)
    return y, grads


def _assert_same_as_conv(mod, ref, x):
    """mod has ref's (an nn.Conv's) parameters and, in float64, computes its values and both
    gradients."""
    with float64():
        x = as_float64(x)
        variables = as_float64(jax.jit(ref.init)(jax.random.key(1), x))
        assert same_shapes(jax.eval_shape(mod.init, jax.random.key(1), x), variables)
        assert_same(_values_and_grads(mod, variables, x), _values_and_grads(ref, variables, x))


@pytest.mark.parametrize("impl", OTHERS)
@pytest.mark.parametrize("channels", [1, 3, 13, 64])
@pytest.mark.parametrize("size", [7, 8])
@pytest.mark.parametrize("strides", [1, 2])
def test_matches_grouped_conv(impl, channels, size, strides):
    x = jax.random.normal(jax.random.key(channels * 100 + size), (2, size, size + 1, channels))
    kwargs = dict(features=channels, kernel_size=(3, 3), strides=strides, padding=PAD1,
                  feature_group_count=channels, use_bias=False)
    _assert_same_as_conv(DEPTHWISE_FORMS[impl](**kwargs), nn.Conv(**kwargs), x)


@pytest.mark.parametrize("impl", DEPTHWISE_FORMS)
def test_bfloat16_runs(impl):
    """In bfloat16 each output, a sum of 9 products of the bfloat16-rounded input and kernel,
    is within gamma(10) (9 terms, the output's own rounding) of that sum's sum of |terms|
    around the exact sum; the kernel gradient stays float32."""
    x = jax.random.normal(jax.random.key(0), (2, 8, 8, 16))
    kwargs = dict(features=16, kernel_size=(3, 3), strides=2, padding=PAD1,
                  feature_group_count=16, use_bias=False)
    variables = jax.jit(nn.Conv(**kwargs).init)(jax.random.key(1), x)
    mod = DEPTHWISE_FORMS[impl](**kwargs, dtype=jnp.bfloat16)
    y = jax.jit(mod.apply)(variables, x)
    assert y.dtype == jnp.bfloat16
    with float64():
        rounded = as_float64((variables, x.astype(jnp.bfloat16)))
        exact = jax.jit(nn.Conv(**kwargs).apply)(*rounded)
        magnitude = jax.jit(nn.Conv(**kwargs).apply)(*jax.tree.map(np.abs, rounded))
    assert_within(y, exact, gamma(10, U_BFLOAT16) * np.asarray(magnitude))
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
    baseline of the hand-written backward) equals the reference network, in float64: in
    float32 the rounding differences, amplified through 14 train-mode BatchNorms over 4
    examples, depend on the CPU's instruction set."""
    x = jax.random.normal(jax.random.key(0), (4, 32, 32, 3))
    labels = jnp.arange(4) % 10

    def run(kernels, variables):
        model = MobileNetV1(num_classes=10, width_multiplier=0.25, kernels=kernels,
                            dtype=jnp.float64)

        def loss(params):
            logits, _ = model.apply({"params": params, "batch_stats": variables["batch_stats"]},
                                    x, train=True, mutable=["batch_stats"])
            return jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(4), labels]), logits

        (_, logits), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(
            variables["params"])
        return logits, grads

    variables = jax.jit(MobileNetV1(num_classes=10, width_multiplier=0.25).init)(
        jax.random.key(1), x)
    with float64():
        x, variables = as_float64((x, variables))
        reference = run("reference", variables)
        sliced = dataclasses.replace(KERNELS["cpu"], depthwise=SlicedDepthwiseConv)
        for kernels in ("cpu", sliced):
            assert_same(run(kernels, variables), reference)


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


@pytest.mark.parametrize("shape,features", [((2, 5, 6, 3), 8), ((3, 1, 1, 16), 4), ((1, 4, 4, 1), 1)])
@pytest.mark.parametrize("max_sliced_inputs", [0, 16])
def test_pointwise_matmul_matches_conv(shape, features, max_sliced_inputs):
    """PointwiseConv (a matmul, or multiply-adds for few inputs) equals nn.Conv with a 1x1
    kernel: same params, values, grads."""
    x = jax.random.normal(jax.random.key(features), shape)
    ref = nn.Conv(features, (1, 1), use_bias=False)
    mod = PointwiseConv(features, (1, 1), max_sliced_inputs=max_sliced_inputs)
    _assert_same_as_conv(mod, ref, x)
    variables = jax.eval_shape(ref.init, jax.random.key(1), x)
    forward = str(jax.make_jaxpr(mod.apply)(variables, x))
    assert ("dot_general" in forward) == (max_sliced_inputs < shape[-1])
    with pytest.raises(ValueError):
        jax.eval_shape(PointwiseConv(features, (3, 3)).init, jax.random.key(0), x)


@pytest.mark.parametrize("in_channels,features", [(3, 3), (1, 5), (3, PATCH_MATMUL_MIN_FEATURES),
                                                  (3, 32)])
@pytest.mark.parametrize("strides", [1, 2])
@pytest.mark.parametrize("size", [7, 8])
def test_few_channel_conv_matches_conv(in_channels, features, strides, size):
    """The stem's sliced conv equals nn.Conv: same params, values and both gradients (the
    kernel gradient as the conv's and, from PATCH_MATMUL_MIN_FEATURES outputs, as a matmul)."""
    x = jax.random.normal(jax.random.key(size), (2, size, size + 1, in_channels))
    ref = nn.Conv(features, (3, 3), strides=strides, padding=PAD1, use_bias=False)
    _assert_same_as_conv(FewChannelConv(features, (3, 3), strides=strides, padding=PAD1), ref, x)
    with pytest.raises(ValueError):
        jax.eval_shape(FewChannelConv(features, padding="SAME").init, jax.random.key(0), x)


@pytest.mark.parametrize("padding,size", [(((3, 0), (0, 2)), 1), (((3, 0), (0, 2)), 6),
                                          (((0, 0), (2, 1)), 5), (((0, 0), (0, 0)), 4)])
@pytest.mark.parametrize("strides", [1, 2])
@pytest.mark.parametrize("features", [4, PATCH_MATMUL_MIN_FEATURES])
def test_few_channel_conv_uneven_padding(padding, size, strides, features):
    """Padding on one side only, and taps that read nothing but padding (size 1 with 3 rows
    before it): the windows are sliced from the unpadded input, so the edges must still be
    zeros in the right places."""
    x = jax.random.normal(jax.random.key(size), (2, size, size + 2, 3))
    ref = nn.Conv(features, (3, 3), strides=strides, padding=padding, use_bias=False)
    _assert_same_as_conv(FewChannelConv(features, (3, 3), strides=strides, padding=padding),
                         ref, x)


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


def test_on_buffers_is_the_function_and_keeps_nan():
    def f(a, b):
        return {"sum": a.sum(0), "scaled": b * 2}

    a = jnp.arange(6.0).reshape(2, 3)
    b = -jnp.ones((4,), jnp.bfloat16)
    out = jax.jit(lambda a, b: on_buffers(f, a, b))(a, b)
    np.testing.assert_array_equal(out["sum"], [3.0, 5.0, 7.0])
    np.testing.assert_array_equal(out["scaled"].astype(np.float32), np.full(4, -2.0))
    assert out["scaled"].dtype == jnp.bfloat16
    # A non-finite first element of the first operand must not be silently dropped.
    out = jax.jit(lambda a, b: on_buffers(f, a, b))(a.at[0, 0].set(jnp.nan), b)
    assert all(bool(jnp.all(jnp.isnan(v))) for v in jax.tree.leaves(out))


def test_the_policy_names_known_without_flax_are_the_formulations():
    assert tuple(KERNELS) == KERNEL_POLICIES
