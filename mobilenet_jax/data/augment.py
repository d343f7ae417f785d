"""On-device preprocessing, called inside the jitted steps: random crop and flip of uint8
batches, and the network's input (resize and per-channel standardisation)."""
import jax
import jax.numpy as jnp

from mobilenet_jax.config import CIFAR100_MEAN, CIFAR100_STD

CROP_PADDING = 4


def normalize(images_uint8: jax.Array, resolution: int, mean=CIFAR100_MEAN, std=CIFAR100_STD,
              dtype=jnp.float32) -> jax.Array:
    """uint8 NHWC -> float, resized to resolution x resolution, standardised per channel."""
    x = images_uint8.astype(jnp.float32) / 255.0
    n, h, w, c = x.shape
    if (h, w) != (resolution, resolution):
        x = jax.image.resize(x, (n, resolution, resolution, c), method="bilinear")
    x = (x - jnp.asarray(mean)) / jnp.asarray(std)
    return x.astype(dtype)


def augment(images_uint8: jax.Array, rng: jax.Array) -> jax.Array:
    """Random crop with 4-pixel zero padding and random horizontal flip, per image (uint8)."""
    n, h, w, _ = images_uint8.shape
    crop_rng, flip_rng = jax.random.split(rng)
    padded = jnp.pad(images_uint8, ((0, 0), (CROP_PADDING,) * 2, (CROP_PADDING,) * 2, (0, 0)))
    offsets = jax.random.randint(crop_rng, (n, 2), 0, 2 * CROP_PADDING + 1)
    crop = jax.vmap(lambda im, o: jax.lax.dynamic_slice(im, (o[0], o[1], 0), (h, w, im.shape[-1])))
    images = crop(padded, offsets)
    flip = jax.random.bernoulli(flip_rng, 0.5, (n, 1, 1, 1))
    return jnp.where(flip, images[:, :, ::-1, :], images)
