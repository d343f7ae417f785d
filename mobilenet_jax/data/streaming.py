"""Datasets read image by image while a run goes on (grain): data larger than memory, and
images of any size, whose training crops are taken from the full image on the host.

A `StreamedSplit` holds where its records are, not their pixels. Its batches are those an
in-memory `arrays.Split` of the same records gives: the order a function of (seed, epoch)
alone, each process reading only its share of every global batch, the last incomplete batch
dropped in training and padded (with a 0/1 mask) in evaluation. Images are decoded by grain's
threads (or `workers` processes); a random-resized crop draws from a generator seeded by
(seed, epoch, record), so no batch depends on which worker made it, and a resumed run reads
from its step on exactly the batches an uninterrupted one would have.
"""
import dataclasses
import functools
import os
import threading
import time
from typing import Callable, Iterator, Optional, Sequence

from absl import flags
import numpy as np

from mobilenet_jax.data import arrays
from mobilenet_jax.data import images as imagefiles

READ_THREADS = 16  # batches made at once; decoding releases the GIL, so threads overlap
STATISTICS_SAMPLE = 10_000  # images the channel mean and std are estimated from


def chooses_streaming(input: str, too_large: Optional[str], say: Callable[[str], None]) -> bool:
    """Whether to stream a split: `input` 'stream' always, 'memory' never, 'auto' when it is
    `too_large` to hold in memory (the reason, or None), saying so in one line."""
    if input == "auto" and too_large:
        say(f"note: {too_large}: streaming it from disk instead (--input stream)")
    return input == "stream" or (input == "auto" and too_large is not None)


class FolderRecords:
    """(image, label) of image files, each read when asked for."""

    def __init__(self, paths: Sequence, labels: Sequence[int]):
        self.paths, self.labels = [str(p) for p in paths], np.asarray(labels, np.int32)

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i: int):
        try:
            return imagefiles.read_image(self.paths[i]), self.labels[i]
        except imagefiles.ImageError as e:
            raise arrays.DataError(f"{e}; remove or replace the file and rerun (a streamed "
                                   "folder's files are decoded only when read)") from None


class TfdsRecords:
    """(image, label) of a TFDS dataset prepared as ArrayRecord (`tfds.data_source`)."""

    def __init__(self, source, image_key: str, label_key: str):
        self.source, self.image_key, self.label_key = source, image_key, label_key

    def __len__(self):
        return len(self.source)

    def __getitem__(self, i: int):
        example = self.source[int(i)]
        return example[self.image_key], np.int32(example[self.label_key])


@dataclasses.dataclass(frozen=True)
class StreamedSplit:
    records: Sequence  # FolderRecords, TfdsRecords: (uint8 (H, W, C) image, label) by index
    indices: np.ndarray  # the records of this split, in order
    side: int  # images come as side x side squares
    fixed_size: bool  # every record is already a side x side image
    class_names: tuple = ()
    workers: int = 0  # processes making training batches (0: threads of this process)

    def __len__(self):
        return len(self.indices)

    def take(self, indices) -> "StreamedSplit":
        return dataclasses.replace(self, indices=self.indices[indices])

    def images_at(self, positions) -> np.ndarray:
        """uint8 (n, side, side, 3): the examples at `positions`, as evaluation sees them."""
        read = _Read(self, seed=0, epoch=0, random_crops=False)
        return np.concatenate([images for images, _ in
                               self._batches(np.asarray(positions), read, 256)])

    def channel_statistics(self) -> tuple[tuple, tuple]:
        """Per-channel mean and std (pixels in [0, 1]) of up to STATISTICS_SAMPLE images
        spread evenly over the split."""
        sample = np.unique(np.linspace(0, len(self) - 1, min(len(self), STATISTICS_SAMPLE))
                           .astype(np.int64))
        return arrays.channel_statistics(self.images_at(sample))

    def train_batches(self, batch_size: int, seed: int, epoch: int, start: int = 0,
                      process_index: int = 0, process_count: int = 1,
                      random_crops: bool = False) -> Iterator[dict]:
        """This process's share of every global batch of one epoch, from batch `start` on;
        with `random_crops`, random-resized crops (images.random_resized_crop), flipped at
        random, instead of the stored images."""
        mine = arrays.train_positions(len(self), batch_size, seed, epoch, process_index,
                                      process_count)[start:]
        read = _Read(self, seed, epoch, random_crops)
        for images, labels in self._batches(mine.reshape(-1), read, mine.shape[1],
                                            self.workers):
            yield {"image": images, "label": labels}

    def eval_batches(self, batch_size: int, process_index: int = 0,
                     process_count: int = 1) -> Iterator[dict]:
        """Every example once, in order; the last batch is padded and carries a 0/1 `mask`."""
        positions, mask = arrays.eval_positions(len(self), batch_size, process_index,
                                                process_count)
        read = _Read(self, seed=0, epoch=0, random_crops=False)
        batches = self._batches(positions.reshape(-1), read, positions.shape[1])
        for (images, labels), real in zip(batches, mask):
            yield {"image": images, "label": labels, "mask": real}

    def _batches(self, positions: np.ndarray, read: "_Read", size: int,
                 workers: int = 0) -> Iterator[tuple]:
        """(uint8 images, int32 labels) of `size` consecutive positions at a time (fewer in
        the last), decoded ahead by grain's threads, or by `workers` processes."""
        import grain  # here: only streaming needs it, and importing it slows every start

        # Batched before the iterator: threads and worker processes each make whole batches.
        dataset = grain.MapDataset.source(positions).map(read).batch(size, batch_fn=_stack)
        dataset = dataset.to_iter_dataset(grain.ReadOptions(num_threads=READ_THREADS,
                                                            prefetch_buffer_size=READ_THREADS))
        if workers:
            if not flags.FLAGS.is_parsed():
                raise ValueError("grain's worker processes need absl's flags parsed (grain "
                                 "0.2.18); call mobilenet_jax.process.absl_flags_parsed() "
                                 "first, as the commands do")
            dataset = dataset.mp_prefetch(grain.MultiprocessingOptions(num_workers=workers),
                                          worker_init_fn=functools.partial(
                                              _exit_with_parent, os.getpid()))
        iterator = iter(dataset)
        try:  # copied out of the workers' shared memory, which is released at once
            for images, labels in iterator:
                yield np.array(images), np.array(labels)
        finally:
            iterator.close()


@dataclasses.dataclass(frozen=True)
class _Read:
    """The example at a position of `split`: for training with random crops, seeded by
    (seed, epoch, record); else the image's centre square at the split's side (as every
    command reads an image: images.square_image)."""
    split: StreamedSplit
    seed: int
    epoch: int
    random_crops: bool

    def __call__(self, position) -> tuple:
        record = int(self.split.indices[position])
        image, label = self.split.records[record]
        if self.random_crops:
            rng = np.random.default_rng([self.seed, self.epoch, record])
            return imagefiles.random_resized_crop(image, self.split.side, rng), np.int32(label)
        return imagefiles.square_image(image, self.split.side), np.int32(label)


def _exit_with_parent(parent: int, worker_index: int, worker_count: int) -> None:
    """Run in each worker process: it ends when `parent`, the process that started it, is
    gone (killed by SIGKILL, say, even before this ran), instead of waiting for batches
    nobody reads."""

    def watch():
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(0)
    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def _stack(examples: Sequence[tuple]) -> tuple:
    return np.stack([e[0] for e in examples]), np.asarray([e[1] for e in examples], np.int32)
