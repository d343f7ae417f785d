"""The network against independent references: the paper's channel rule, a naive depthwise
convolution written as numpy loops, hand-derived output shapes and BatchNorm's definition
(values compared in float64: tests/numerics.py)."""
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from numerics import RTOL, as_float64, assert_same, float64

import mobilenet_jax as mj
from mobilenet_jax.models import layers
from mobilenet_jax.models.mobilenet import MobileNetV1
from mobilenet_jax.models.summary import summarize

pytestmark = pytest.mark.numerics  # .ci/run runs these again on another instruction set


def naive_depthwise(x, kernel, stride):
    """x (N,H,W,C), kernel (3,3,1,C), symmetric zero padding 1: a per-channel loop."""
    n, h, w, c = x.shape
    xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    oh, ow = (h + 2 - 3) // stride + 1, (w + 2 - 3) // stride + 1
    out = np.zeros((n, oh, ow, c), np.float64)
    for ch in range(c):
        for i in range(oh):
            for j in range(ow):
                patch = xp[:, i * stride:i * stride + 3, j * stride:j * stride + 3, ch]
                out[:, i, j, ch] = (patch * kernel[:, :, 0, ch]).sum(axis=(1, 2))
    return out


def test_width_rule_channels_in_param_tree():
    init, _ = mj.functions(mj.Config(width_multiplier=0.1))
    params = init(jax.random.key(0), (1, 32, 32, 3))["params"]
    channels = [params["stem"]["kernel"].shape[-1]]
    channels += [params[f"block{i}"]["pointwise"]["kernel"].shape[-1] for i in range(1, 14)]
    # max(1, round(0.1*c)) with round half to even, as the seed project's table gives them
    assert channels == [3, 6, 13, 13, 26, 26, 51, 51, 51, 51, 51, 51, 102, 102]
    assert params["classifier"]["kernel"].shape == (102, 100)


@pytest.mark.parametrize("channels,alpha,expected", [
    (64, 0.005, 1), (64, 1 / 64, 1), (64, 0.5, 32), (64, 2.0, 128),
    (20, 0.125, 2), (28, 0.125, 4)])  # 2.5 -> 2 and 3.5 -> 4: round half to even
def test_width_rule_tiny_large_and_ties(channels, alpha, expected):
    assert mj.scaled_channels(channels, alpha) == expected


def test_seed_block_has_two_pointwise_convs():
    init, _ = mj.functions(mj.Config(width_multiplier=0.1, block="seed"))
    block = init(jax.random.key(0), (1, 32, 32, 3))["params"]["block13"]
    # hidden = max(1, round(102 * 0.9997)) = 102
    assert block["pointwise_hidden"]["kernel"].shape == (1, 1, 102, 102)
    assert block["pointwise"]["kernel"].shape == (1, 1, 102, 102)


@pytest.mark.parametrize("implementation", list(layers.DEPTHWISE_FORMS.values()))
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("size", [7, 8])
def test_depthwise_equals_naive_loop(implementation, stride, size):
    rng = np.random.default_rng(stride * 100 + size)
    x = rng.normal(size=(2, size, size, 5))
    kernel = rng.normal(size=(3, 3, 1, 5))
    conv = implementation(5, (3, 3), strides=stride, padding=((1, 1), (1, 1)), feature_group_count=5,
               use_bias=False)
    with float64():
        y = jax.jit(conv.apply)({"params": {"kernel": kernel}}, x)
    assert_same(np.asarray(y), naive_depthwise(x, kernel, stride))


@pytest.mark.parametrize("stem_stride,final", [(2, 1), (1, 2)])
def test_output_shapes_32x32(stem_stride, final):
    model = MobileNetV1(num_classes=100, width_multiplier=0.25, stem_stride=stem_stride)
    x = jnp.zeros((3, 32, 32, 3))
    variables = jax.eval_shape(lambda: model.init(jax.random.key(0), x, capture_intermediates=True))
    last = variables["intermediates"]["block13"]["__call__"][0]
    assert last.shape == (3, final, final, 256)
    logits = jax.eval_shape(lambda v: model.apply(v, x), {"params": variables["params"],
                                                         "batch_stats": variables["batch_stats"]})
    assert logits.shape == (3, 100)
    features = jax.eval_shape(lambda v: model.apply(v, x, features_only=True),
                              {"params": variables["params"],
                               "batch_stats": variables["batch_stats"]})
    assert features.shape == (3, 256)


@pytest.fixture(scope="module")
def tiny():
    init, apply = mj.functions(mj.Config(width_multiplier=0.1, num_classes=10,
                                         kernels="reference"))
    variables = jax.jit(init, static_argnums=1)(jax.random.key(0), (1, 32, 32, 3))
    images = jax.random.normal(jax.random.key(1), (4, 32, 32, 3))
    return init, apply, variables, images


@pytest.fixture(scope="module")
def tiny64(tiny):
    """`tiny`'s network, variables and images in float64."""
    _, _, variables, images = tiny
    model = MobileNetV1(num_classes=10, width_multiplier=0.1, kernels="reference",
                        dtype=jnp.float64)
    return model, as_float64(variables), as_float64(images)


def test_apply_under_jit_matches_eager(tiny, tiny64):
    _, apply, variables, images = tiny
    assert jax.jit(apply)(variables, images).shape == (4, 10)
    model, variables, images = tiny64
    with float64():
        eager = model.apply(variables, images)
        jitted = jax.jit(model.apply)(variables, images)
    assert_same(jitted, eager)


def test_grad_is_finite_and_nonzero_for_every_parameter(tiny):
    _, apply, variables, images = tiny
    labels = jnp.arange(4) % 10

    def loss(params):
        logits, _ = apply({"params": params, "batch_stats": variables["batch_stats"]}, images,
                          train=True)
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], 1))

    grads = jax.jit(jax.grad(loss))(variables["params"])
    flat = jax.tree_util.tree_leaves_with_path(grads)
    assert len(flat) == len(jax.tree.leaves(variables["params"]))
    for path, g in flat:
        assert np.all(np.isfinite(np.asarray(g))), path
        assert np.abs(np.asarray(g)).max() > 0, path


def test_vmap_over_examples_matches_batch(tiny, tiny64):
    _, apply, variables, images = tiny
    assert jax.jit(jax.vmap(lambda im: apply(variables, im[None])[0]))(images).shape == (4, 10)
    model, variables, images = tiny64
    with float64():
        per_example = jax.jit(jax.vmap(lambda im: model.apply(variables, im[None])[0]))(images)
        batch = jax.jit(model.apply)(variables, images)
    assert_same(per_example, batch)


def test_batchnorm_train_uses_batch_stats_eval_uses_running(tiny64):
    """Train mode normalises with the batch's own statistics and moves the running averages by
    (1 - momentum) toward them; eval mode uses the stored averages."""
    model, variables, images = tiny64
    x = 3.0 + 2.0 * images  # far from the initial running stats (mean 0, var 1)
    with float64():
        _, state = jax.jit(functools.partial(
            model.apply, train=True, mutable=["batch_stats", "intermediates"],
            capture_intermediates=True))(variables, x)
        out = jax.jit(functools.partial(model.apply, capture_intermediates=True,
                                        mutable=["intermediates"]))(variables, x)[1]
    stem_out = np.asarray(state["intermediates"]["stem"]["__call__"][0])
    mean, var = stem_out.mean(axis=(0, 1, 2)), stem_out.var(axis=(0, 1, 2))
    new = state["batch_stats"]["stem_bn"]
    assert_same((new["mean"], new["var"]), (0.1 * mean, 0.9 + 0.1 * var))
    bn_out = np.asarray(state["intermediates"]["stem_bn"]["__call__"][0])
    # batch-normalised: a mean of zero up to rounding of the outputs' scale
    assert np.abs(bn_out.mean(axis=(0, 1, 2))).max() <= RTOL * np.abs(bn_out).max()
    # eval: y = (x - running_mean) / sqrt(running_var + eps), gamma=1, beta=0 at init
    eval_in, eval_bn = (np.asarray(out["intermediates"][name]["__call__"][0])
                        for name in ("stem", "stem_bn"))
    assert_same(eval_bn, eval_in / math.sqrt(1 + 1e-5))


def test_train_mode_returns_updated_batch_stats_and_dropout_uses_rng():
    init, apply = mj.functions(mj.Config(width_multiplier=0.1, dropout=0.5, num_classes=10))
    variables = jax.jit(init, static_argnums=1)(jax.random.key(0), (1, 32, 32, 3))
    images = jax.random.normal(jax.random.key(1), (4, 32, 32, 3))
    apply = jax.jit(apply, static_argnames="train")
    a, stats = apply(variables, images, train=True, rng=jax.random.key(1))
    b, _ = apply(variables, images, train=True, rng=jax.random.key(2))
    assert not np.allclose(np.asarray(a), np.asarray(b))  # different dropout masks
    changed = jax.tree.map(lambda u, v: not np.allclose(u, v), stats, variables["batch_stats"])
    assert all(jax.tree.leaves(changed))


def test_bfloat16_computes_in_bf16_with_float32_params():
    model = MobileNetV1(num_classes=10, width_multiplier=0.25, dtype=jnp.bfloat16)
    x = jnp.ones((2, 32, 32, 3))
    variables = jax.jit(model.init)(jax.random.key(0), x)
    assert {p.dtype for p in jax.tree.leaves(variables)} == {jnp.dtype(jnp.float32)}
    _, state = jax.jit(functools.partial(model.apply, capture_intermediates=True,
                                         mutable=["intermediates"]))(variables, x)
    assert state["intermediates"]["block5"]["__call__"][0].dtype == jnp.bfloat16
    assert jax.jit(model.apply)(variables, x).dtype == jnp.float32


def test_probabilities_sum_to_one():
    with float64():
        p = mj.probabilities(jnp.array([[0.0, np.log(3.0)]]))
    assert_same(np.asarray(p), np.array([[0.25, 0.75]]))


@pytest.mark.parametrize("kwargs,bad", [
    (dict(width_multiplier=0.0), "0.0"), (dict(width_multiplier=-1.0), "-1.0"),
    (dict(width_multiplier=float("nan")), "nan"), (dict(width_multiplier=float("inf")), "inf"),
    (dict(num_classes=0), "0"), (dict(block="resnet"), "resnet"),
    (dict(kernels="fft"), "fft"),
])
def test_invalid_model_configurations_raise_value_error(kwargs, bad):
    with pytest.raises(ValueError, match=bad):
        MobileNetV1(**kwargs)
    with pytest.raises(ValueError, match=bad):
        mj.Config(**kwargs)


def test_invalid_resolution_raises_value_error():
    with pytest.raises(ValueError, match="resolution.*0"):
        mj.Config(resolution=0)
    with pytest.raises(ValueError, match="resolution.*-3"):
        summarize(MobileNetV1(), -3)
