"""Mixup and CutMix: each training image is blended with, or patched by, another image of its
batch, and its target distribution is mixed in the same proportion (Zhang et al. 2018,
arXiv 1710.09412; Yun et al. 2019, arXiv 1905.04899). One proportion per batch, as timm does.
"""
import jax
import jax.numpy as jnp


def mixup(images, targets, lam, partner):
    """lam * each image + (1 - lam) * its partner `images[partner]`; the targets alike."""
    mixed = lam.astype(images.dtype) * images + (1 - lam).astype(images.dtype) * images[partner]
    return mixed, lam * targets + (1 - lam) * targets[partner]


def cutmix(images, targets, lam, partner, centre):
    """Each image with a box of its partner's pasted in: the box's sides are sqrt(1 - lam) of
    the image's, centred at `centre` (row, column), clipped at the border. The targets are
    weighted by the areas that show, so clipping is accounted for."""
    _, h, w, _ = images.shape
    half_h = jnp.round(h * jnp.sqrt(1 - lam)).astype(jnp.int32) // 2
    half_w = jnp.round(w * jnp.sqrt(1 - lam)).astype(jnp.int32) // 2
    rows, cols = jnp.arange(h)[:, None], jnp.arange(w)[None, :]
    inside = ((rows >= centre[0] - half_h) & (rows < centre[0] + half_h)
              & (cols >= centre[1] - half_w) & (cols < centre[1] + half_w))
    mixed = jnp.where(inside[None, :, :, None], images[partner], images)
    shown = 1 - jnp.mean(inside, dtype=jnp.float32)
    return mixed, shown * targets + (1 - shown) * targets[partner]


def mix_batch(images, targets, rng, mixup_alpha: float, cutmix_alpha: float):
    """Mixup with lam ~ Beta(mixup_alpha, mixup_alpha), or CutMix with lam ~ Beta(cutmix_alpha,
    cutmix_alpha); with both alphas > 0, one of the two per batch at even odds. Partners are a
    random permutation of the batch. At least one alpha must be > 0."""
    n, h, w, _ = images.shape
    perm_rng, choice_rng, mix_rng, cut_rng, centre_rng = jax.random.split(rng, 5)
    partner = jax.random.permutation(perm_rng, n)
    options = []  # (images, targets) of CutMix, then of mixup
    if cutmix_alpha:
        centre = jax.random.randint(centre_rng, (2,), 0, jnp.array([h, w]))
        options.append(cutmix(images, targets, jax.random.beta(cut_rng, cutmix_alpha,
                                                               cutmix_alpha), partner, centre))
    if mixup_alpha:
        options.append(mixup(images, targets, jax.random.beta(mix_rng, mixup_alpha, mixup_alpha),
                             partner))
    if len(options) == 1:
        return options[0]
    use_cutmix = jax.random.bernoulli(choice_rng)
    return jax.tree.map(lambda c, m: jnp.where(use_cutmix, c, m), *options)
