"""CIFAR-100 input pipeline.

TensorFlow (through tensorflow-datasets) only reads the data once, into uint8 numpy arrays
(CIFAR-100 is ~180 MB). From then on a batch is an index gather on the host (a few hundred KB)
and all per-image work — crop, flip, resize, normalisation — runs inside the jitted train step
on the device. The order of examples is a function of (seed, epoch) alone, so a resumed or
re-sharded run sees the same batches.
"""
import dataclasses
import os
from typing import Iterator, Optional

import jax
import jax.numpy as jnp
import numpy as np

# Per-channel mean and standard deviation of the CIFAR-100 training images, pixels in [0, 1].
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)
CROP_PADDING = 4


class DataError(Exception):
    """The dataset cannot be had; the message says where we looked and how to fix it."""


@dataclasses.dataclass(frozen=True)
class Split:
    images: np.ndarray  # uint8 (N, H, W, 3)
    labels: np.ndarray  # int32 (N,)
    class_names: tuple = ()

    def __len__(self):
        return len(self.labels)

    def take(self, indices) -> "Split":
        return Split(self.images[indices], self.labels[indices], self.class_names)


def resolve_data_dir(data_dir: Optional[str]) -> str:
    return os.path.expanduser(data_dir or os.environ.get("TFDS_DATA_DIR")
                              or "~/tensorflow_datasets")


def load(name: str, split: str, data_dir: Optional[str] = None, offline: bool = False) -> Split:
    """Read a TFDS split into memory. Downloads on first use unless `offline`."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow_datasets as tfds  # imported here: only data loading needs TensorFlow
    from absl import logging as absl_logging
    absl_logging.set_verbosity(absl_logging.ERROR)  # tfds warns about what we report ourselves
    try:
        import tensorflow as tf
        tf.config.set_visible_devices([], "GPU")  # TensorFlow must not take GPU memory from JAX
    except (ImportError, RuntimeError):
        pass

    where = resolve_data_dir(data_dir)
    try:
        dataset, info = tfds.load(name, split=split, data_dir=where, download=not offline,
                                  with_info=True)
        # Read in large batches and concatenate (batch_size=-1 needs a known cardinality).
        chunks = list(tfds.as_numpy(dataset.map(lambda ex: (ex["image"], ex["label"])).batch(8192)))
        names = tuple(info.features["label"].names)
    except Exception as e:  # tfds raises many kinds (absent data, network, split syntax)
        reason = " ".join(str(e).split())[:200] or type(e).__name__
        if offline:
            raise DataError(f"dataset {name!r} (split {split!r}) not found in {where} and "
                            f"--offline forbids downloading ({reason}); pass --data-dir DIR "
                            f"holding a prepared TFDS {name}, or drop --offline") from None
        raise DataError(f"could not load {name!r} split {split!r} from {where}: {reason}. Check "
                        f"--split and network access, or pass --data-dir DIR holding a prepared "
                        f"TFDS {name} (add --offline to never download)") from None
    if not chunks:
        raise DataError(f"split {split!r} of {name!r} in {where} is empty; check --split")
    return Split(np.concatenate([c[0] for c in chunks]),
                 np.concatenate([c[1] for c in chunks]).astype(np.int32), names)


def split_validation(train: Split, fraction: float, seed: int) -> tuple[Split, Optional[Split]]:
    """Carve a validation set off the training split, fixed by the seed."""
    if fraction <= 0:
        return train, None
    order = np.random.default_rng([seed, 0xDA7A]).permutation(len(train))
    n_val = max(1, int(round(fraction * len(train))))
    return train.take(np.sort(order[n_val:])), train.take(np.sort(order[:n_val]))


def epoch_order(num_examples: int, seed: int, epoch: int) -> np.ndarray:
    """The permutation of one epoch: a function of (seed, epoch) only."""
    return np.random.default_rng([seed, epoch]).permutation(num_examples)


def train_batches(split: Split, batch_size: int, seed: int, epoch: int, start: int = 0,
                  process_index: int = 0, process_count: int = 1) -> Iterator[dict]:
    """This process's share of every global batch of one epoch, from batch `start` on.

    The last incomplete batch is dropped so every step has the same shape (no recompiles).
    """
    order = epoch_order(len(split), seed, epoch)
    local = batch_size // process_count
    for b in range(start, len(split) // batch_size):
        idx = order[b * batch_size + process_index * local:b * batch_size + (process_index + 1) * local]
        yield {"image": split.images[idx], "label": split.labels[idx]}


def eval_batches(split: Split, batch_size: int, process_index: int = 0,
                 process_count: int = 1) -> Iterator[dict]:
    """Every example once, in order; the last batch is padded and carries a 0/1 `mask`."""
    local = batch_size // process_count
    for start in range(0, len(split), batch_size):
        idx = np.arange(start + process_index * local, start + (process_index + 1) * local)
        mask = idx < len(split)
        idx = np.where(mask, idx, 0)
        yield {"image": split.images[idx], "label": split.labels[idx],
               "mask": mask.astype(np.float32)}


# ---- on-device preprocessing (called inside jit) ----------------------------------------------

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
