"""Input pipeline: CIFAR-100 by default, any TFDS image classification dataset, or a folder.

TensorFlow (through tensorflow-datasets) only reads the data once, into uint8 numpy arrays
(CIFAR-100 is ~180 MB; larger datasets are refused before they are read, `check_fits`).
From then on a batch is an index gather on the host (a few hundred KB)
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


def load(name: str, split: str, data_dir: Optional[str] = None, offline: bool = False,
         size: int = 32) -> Split:
    """Read a TFDS image classification split into memory (downloading it on first use unless
    `offline`). Images of a fixed square size are kept as they are; others become squares of
    side `size` (imagefiles.square_image); grayscale becomes RGB."""
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
    except Exception as e:  # tfds raises many kinds (absent data, network, split syntax)
        reason = " ".join(str(e).split())[:200] or type(e).__name__
        if offline:
            raise DataError(f"dataset {name!r} (split {split!r}) not found in {where} and "
                            f"--offline forbids downloading ({reason}); pass --data-dir DIR "
                            f"holding a prepared TFDS {name}, or drop --offline") from None
        raise DataError(f"could not load {name!r} split {split!r} from {where}: {reason}. Check "
                        f"--split and network access, or pass --data-dir DIR holding a prepared "
                        f"TFDS {name} (add --offline to never download)") from None
    image_key, label_key = _image_and_label(info, name)
    shape = info.features[image_key].shape
    fixed = shape[0] is not None and shape[0] == shape[1]
    side = shape[0] if fixed else size
    try:
        count = info.splits[split].num_examples
    except (KeyError, ValueError):  # no split metadata (tfds's mock data): nothing to check
        count = 0
    check_fits(count, side, f"{name!r} split {split!r}")
    pairs = dataset.map(lambda ex: (ex[image_key], ex[label_key]))
    if fixed:  # read in large batches and concatenate
        chunks = list(tfds.as_numpy(pairs.batch(8192)))
        images = np.concatenate([c[0] for c in chunks]) if chunks else np.zeros((0, side, side, 3))
        labels = np.concatenate([c[1] for c in chunks]) if chunks else np.zeros((0,))
        if images.shape[-1] == 1:
            images = np.repeat(images, 3, axis=-1)
    else:
        from mobilenet_jax.imagefiles import square_image
        read = [(square_image(image, size), label) for image, label in tfds.as_numpy(pairs)]
        images = np.stack([r[0] for r in read]) if read else np.zeros((0, side, side, 3))
        labels = np.array([r[1] for r in read])
    if not len(labels):
        raise DataError(f"split {split!r} of {name!r} in {where} is empty; check --split")
    return Split(images.astype(np.uint8), labels.astype(np.int32),
                 tuple(info.features[label_key].names))


def _image_and_label(info, name: str) -> tuple[str, str]:
    """The names of the dataset's image feature and class-label feature."""
    import tensorflow_datasets as tfds
    features = info.features
    images = [k for k, f in features.items() if isinstance(f, tfds.features.Image)]
    labels = [k for k, f in features.items() if isinstance(f, tfds.features.ClassLabel)]
    if not images or not labels:
        raise DataError(f"{name!r} is not an image classification dataset: it needs an image "
                        f"feature and a class-label feature, and has {dict(features)!r:.200}")
    return images[0], ("label" if "label" in labels else labels[0])


def check_fits(count: int, side: int, what: str) -> None:
    """Stop, with a line saying what to do, before a dataset that would not fit comfortably
    in memory as uint8 arrays (more than half of the memory available) is read."""
    needed = count * side * side * 3
    available = _available_memory()
    if available and needed > available / 2:
        raise DataError(f"{what} holds {count} images: {needed / 2**30:.1f} GiB as {side}x{side} "
                        f"uint8 arrays, more than half of the {available / 2**30:.1f} GiB of "
                        "memory available; train on part of it (e.g. --split 'train[:50%]'), "
                        "at a lower --resolution, or on a machine with more memory")


def _available_memory() -> Optional[int]:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def load_split(config, split: str, data_dir: Optional[str] = None, offline: bool = False) -> Split:
    """A split of the run's data: its image folder, or its TFDS dataset."""
    if config.image_folder:
        from mobilenet_jax import imagefolder
        return imagefolder.load(config.image_folder, split, config.resolution,
                                config.class_names if split != "train" else None)
    return load(config.dataset, split, data_dir or config.data_dir,
                offline or config.offline, config.resolution)


def channel_statistics(images: np.ndarray) -> tuple[tuple, tuple]:
    """Per-channel mean and standard deviation of uint8 images, pixels in [0, 1]."""
    sums, squares, count = np.zeros(3), np.zeros(3), 0
    for start in range(0, len(images), 4096):
        chunk = images[start:start + 4096].reshape(-1, 3).astype(np.float64) / 255.0
        sums += chunk.sum(0)
        squares += (chunk ** 2).sum(0)
        count += len(chunk)
    mean = sums / count
    std = np.sqrt(np.maximum(squares / count - mean ** 2, 0.0))
    return tuple(float(m) for m in mean), tuple(float(s) for s in std)


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
