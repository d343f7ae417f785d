"""deploy/folded.py: the eval-mode network with BatchNorm folded into the convs."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from numerics import as_float64, assert_same, float64

import mobilenet_jax as mj
from mobilenet_jax.deploy import folded
from mobilenet_jax.models.mobilenet import MobileNetV1


def random_batch_stats(variables, rng):
    """Running statistics far from init's (0, 1), so that folding them in matters."""
    def stats(path, a):
        name = path[-1].key
        return (rng.uniform(0.2, 3.0, a.shape) if name == "var" else rng.normal(0, 1, a.shape))
    return jax.tree_util.tree_map_with_path(stats, variables)


@pytest.mark.numerics
@pytest.mark.parametrize("block, stem_stride", [("paper", 2), ("seed", 1)])
def test_folded_network_equals_the_network_in_float64(block, stem_stride):
    config = mj.Config(width_multiplier=0.25, num_classes=7, block=block,
                       stem_stride=stem_stride, kernels="reference")
    init, _ = mj.functions(config)
    variables = jax.jit(init, static_argnums=1)(jax.random.key(0), (1, 32, 32, 3))
    rng = np.random.default_rng(0)
    variables = as_float64({
        "params": jax.tree.map(lambda a: a + rng.normal(0, 0.1, a.shape), variables["params"]),
        "batch_stats": random_batch_stats(variables["batch_stats"], rng)})
    images = rng.normal(0, 1, (3, 32, 32, 3))
    model = MobileNetV1(**{**config.model_kwargs(), "dtype": jnp.float64})
    with float64():
        expected = model.apply(variables, images, train=False)
        convs, classifier = folded.fold(config, variables)
        actual = folded.forward(convs, classifier, images)
    assert len(convs) == 1 + 13 * (3 if block == "seed" else 2)
    assert_same(actual, expected)
