"""Mixup and CutMix against hand-computed cases: what each pixel and target becomes."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from numerics import gamma

from mobilenet_jax.data import mixing

pytestmark = pytest.mark.numerics  # .ci/run runs these again on another instruction set

# float32 against the exact values: lam's rounding, 1 - lam, two products and a sum of
# positive terms err by at most gamma(5) = 3e-7 of the result.
EXACT_RTOL = gamma(5)


def batch_of_constants(n=3, side=8, classes=4):
    """Image k is filled with the value k + 1; its target is one-hot class k."""
    images = jnp.broadcast_to(jnp.arange(1.0, n + 1)[:, None, None, None], (n, side, side, 3))
    return images, jax.nn.one_hot(jnp.arange(n), classes)


def test_mixup_is_the_convex_combination_with_the_partner():
    images, targets = batch_of_constants()
    partner = jnp.array([2, 0, 1])
    mixed, mixed_targets = mixing.mixup(images, targets, jnp.float32(0.7), partner)
    np.testing.assert_allclose(mixed[:, 0, 0, 0], [0.7 * 1 + 0.3 * 3, 0.7 * 2 + 0.3 * 1,
                                                   0.7 * 3 + 0.3 * 2], rtol=EXACT_RTOL)
    np.testing.assert_allclose(mixed_targets[0], [0.7, 0, 0.3, 0], rtol=EXACT_RTOL)


def test_cutmix_pastes_the_partners_box_and_weights_targets_by_area():
    images, targets = batch_of_constants()
    partner = jnp.array([1, 2, 0])
    # lam 0.75: box sides round(8 * 0.5) = 4, centred at (4, 4): rows and columns 2..5.
    mixed, mixed_targets = mixing.cutmix(images, targets, jnp.float32(0.75), partner,
                                         jnp.array([4, 4]))
    inside = np.zeros((8, 8), bool)
    inside[2:6, 2:6] = True
    np.testing.assert_array_equal(mixed[0, ..., 0], np.where(inside, 2.0, 1.0))
    np.testing.assert_allclose(mixed_targets[0], [0.75, 0.25, 0, 0], rtol=EXACT_RTOL)
    # At a corner the box is clipped to 2x2 of 64 pixels, and the targets say so.
    mixed, mixed_targets = mixing.cutmix(images, targets, jnp.float32(0.75), partner,
                                         jnp.array([0, 0]))
    assert int(jnp.sum(mixed[0, ..., 0] == 2.0)) == 4
    np.testing.assert_allclose(mixed_targets[0], [60 / 64, 4 / 64, 0, 0], rtol=EXACT_RTOL)


@pytest.mark.parametrize("mixup_alpha,cutmix_alpha", [(0.4, 0.0), (0.0, 1.0), (0.4, 1.0)])
def test_mix_batch_keeps_targets_distributions_and_mixes_in_proportion(mixup_alpha,
                                                                       cutmix_alpha):
    """Over draws: every target row sums to 1, the image's own class keeps the larger share
    on average (lam has mean 1/2, so its share is >= the partner's in expectation), and each
    pixel is one of the mixed images' (CutMix) or between them (mixup)."""
    images, targets = batch_of_constants(n=8, classes=8)
    own = []
    for seed in range(64):
        mixed, mixed_targets = mixing.mix_batch(images, targets, jax.random.key(seed),
                                                mixup_alpha, cutmix_alpha)
        np.testing.assert_allclose(mixed_targets.sum(-1), 1.0, rtol=gamma(8 + 5))
        assert float(mixed.min()) >= 1.0 and float(mixed.max()) <= 8.0
        # A pixel's value is the target-weighted mean of the classes' fills, averaged over it
        # (float32, positive terms: the mean's 192-term sum, the 8-term product, the mixing).
        np.testing.assert_allclose(mixed.mean(axis=(1, 2, 3)),
                                   mixed_targets @ jnp.arange(1.0, 9.0), rtol=gamma(192 + 8 + 5))
        own.append(float(jnp.mean(jnp.diagonal(mixed_targets))))
    assert 0.4 < np.mean(own) < 0.75
