"""A dataset split held in memory as uint8 arrays, and the batches of a run drawn from it.

A batch is an index gather on the host (a few hundred KB); all per-image work runs inside the
jitted step on the device (augment.py). The order of examples is a function of (seed, epoch)
alone, so a resumed or re-sharded run sees the same batches.
"""
import dataclasses
from typing import Iterator, Optional

import numpy as np


class DataError(Exception):
    """The dataset cannot be had; the message says where we looked and how to fix it."""


@dataclasses.dataclass(frozen=True)
class Split:
    images: np.ndarray  # uint8 (N, H, W, 3)
    labels: np.ndarray  # int32 (N,)
    class_names: tuple = ()

    def __len__(self):
        return len(self.labels)

    @property
    def side(self) -> int:
        return self.images.shape[1]

    def take(self, indices) -> "Split":
        return Split(self.images[indices], self.labels[indices], self.class_names)

    def images_at(self, positions) -> np.ndarray:
        return self.images[positions]

    def channel_statistics(self) -> tuple[tuple, tuple]:
        return channel_statistics(self.images)

    def train_batches(self, batch_size: int, seed: int, epoch: int, start: int = 0,
                      process_index: int = 0, process_count: int = 1,
                      random_crops: bool = False) -> Iterator[dict]:
        if random_crops:
            raise ValueError("random-resized crops need the full images: a split held in "
                             "memory holds their centre squares (stream it: --input stream)")
        return train_batches(self, batch_size, seed, epoch, start, process_index, process_count)

    def eval_batches(self, batch_size: int, process_index: int = 0,
                     process_count: int = 1) -> Iterator[dict]:
        return eval_batches(self, batch_size, process_index, process_count)


def too_large(count: int, side: int, what: str) -> Optional[str]:
    """Why a dataset would not fit comfortably in memory as uint8 arrays (more than half of
    the memory available), or None when it does."""
    needed = count * side * side * 3
    available = _available_memory()
    if available and needed > available / 2:
        return (f"{what} holds {count} images: {needed / 2**30:.1f} GiB as {side}x{side} uint8 "
                f"arrays, more than half of the {available / 2**30:.1f} GiB of memory available")
    return None


def check_fits(count: int, side: int, what: str) -> None:
    """Stop, with a line saying what to do, before a dataset that would not fit comfortably
    in memory is read into it."""
    reason = too_large(count, side, what)
    if reason:
        raise DataError(f"{reason}; stream it (--input stream or auto), train on part of it "
                        "(e.g. --split 'train[:50%]'), or at a lower --resolution")


def _available_memory() -> Optional[int]:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def channel_statistics(images: np.ndarray) -> tuple[tuple, tuple]:
    """Per-channel mean and standard deviation of uint8 images, pixels in [0, 1]: from each
    channel's histogram of the 256 values, a pass of counting instead of float arithmetic."""
    counts = np.zeros((3, 256), np.int64)
    for start in range(0, len(images), 4096):
        pixels = images[start:start + 4096].reshape(-1, 3)
        for channel in range(3):
            counts[channel] += np.bincount(pixels[:, channel], minlength=256)
    values = np.arange(256) / 255.0
    total = counts.sum(1)
    mean = counts @ values / total
    std = np.sqrt((counts * (values - mean[:, None]) ** 2).sum(1) / total)
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


def train_positions(num_examples: int, batch_size: int, seed: int, epoch: int,
                    process_index: int = 0, process_count: int = 1) -> np.ndarray:
    """(batches, batch_size // process_count): this process's positions in every global batch
    of one epoch. The last incomplete batch is dropped so every step has the same shape (no
    recompiles)."""
    order = epoch_order(num_examples, seed, epoch)
    steps, local = num_examples // batch_size, batch_size // process_count
    return order[:steps * batch_size].reshape(steps, process_count, local)[:, process_index]


def eval_positions(num_examples: int, batch_size: int, process_index: int = 0,
                   process_count: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """(batches, batch_size // process_count) positions of this process's share of every
    example once, in order, the last batch padded with position 0; and the float32 0/1 mask
    of the real ones."""
    local = batch_size // process_count
    positions = (np.arange(0, num_examples, batch_size)[:, None] + process_index * local
                 + np.arange(local))
    mask = positions < num_examples
    return np.where(mask, positions, 0), mask.astype(np.float32)


def train_batches(split: Split, batch_size: int, seed: int, epoch: int, start: int = 0,
                  process_index: int = 0, process_count: int = 1) -> Iterator[dict]:
    """This process's share of every global batch of one epoch, from batch `start` on
    (`train_positions`)."""
    for idx in train_positions(len(split), batch_size, seed, epoch, process_index,
                               process_count)[start:]:
        yield {"image": split.images[idx], "label": split.labels[idx]}


def eval_batches(split: Split, batch_size: int, process_index: int = 0,
                 process_count: int = 1) -> Iterator[dict]:
    """Every example once, in order; the last batch is padded and carries a 0/1 `mask`
    (`eval_positions`)."""
    positions, mask = eval_positions(len(split), batch_size, process_index, process_count)
    for idx, real in zip(positions, mask):
        yield {"image": split.images[idx], "label": split.labels[idx], "mask": real}
