"""A folder of image files as a dataset: PATH/train/<class>/* and PATH/test/<class>/*.

Class names are the train folder's subfolder names, sorted (label i is the i-th). Held in
memory, every image becomes a uint8 square of the run's resolution (images.py), and files that
cannot be read are named in one line and left out; streamed, each file is read when a batch
needs it (streaming.py).
"""
import pathlib
from typing import Callable, Optional

import numpy as np

from mobilenet_jax.data import decoded_cache
from mobilenet_jax.data import images as imagefiles
from mobilenet_jax.data import streaming
from mobilenet_jax.data.arrays import DataError, Split, check_fits, too_large

SPLITS = ("train", "test")
LAYOUT = "PATH/train/<class>/<images> and PATH/test/<class>/<images> (PNG or JPEG)"


def class_folders(root: pathlib.Path, split: str) -> dict:
    """{class name: its folder} of one split."""
    if split not in SPLITS:
        raise DataError(f"an image folder has the splits {SPLITS}, not {split!r}")
    directory = root / split
    if not directory.is_dir():
        raise DataError(f"{root} has no {split}/ folder; an image folder is laid out as {LAYOUT}")
    classes = {d.name: d for d in sorted(directory.iterdir()) if d.is_dir()}
    if not classes:
        raise DataError(f"{directory} holds no class folders; an image folder is laid out as "
                        f"{LAYOUT}")
    return classes


def load(root, split: str, size: int, class_names: Optional[tuple] = None,
         say: Callable[[str], None] = print, input: str = "memory",
         workers: int = 0) -> Split | streaming.StreamedSplit:
    """One split as uint8 (N, size, size, 3) images, held in memory or streamed as `input`
    says (streaming.chooses_streaming). `class_names` (the training split's, for the test
    split) fixes the labels; by default they are this split's folder names."""
    root = pathlib.Path(root)
    folders = class_folders(root, split)
    names = tuple(class_names) if class_names else tuple(folders)
    unknown = sorted(set(folders) - set(names))
    if unknown:
        raise DataError(f"{root / split} has classes {unknown} that the training split does "
                        f"not have; the classes are {list(names)}")
    files, labels = [], []
    for label, name in enumerate(names):
        if name not in folders:
            continue  # a test split may lack a class
        found = sorted(p for p in folders[name].iterdir() if imagefiles.is_image_file(p))
        if not found:
            raise DataError(f"class folder {folders[name]} holds no PNG or JPEG images; add "
                            "some or remove the folder")
        files += found
        labels += [label] * len(found)
    if streaming.chooses_streaming(input, too_large(len(files), size, f"{root / split}"), say):
        return streaming.StreamedSplit(streaming.FolderRecords(files, labels),
                                       np.arange(len(files)), size, False, names, workers)
    check_fits(len(files), size, f"{root / split}")
    cache_key = decoded_cache.key(files, labels, names, size)
    cached = decoded_cache.read(cache_key)
    if cached is None:
        images, kept, unreadable = decode(files, labels, size)
        unreadable = [str(p.relative_to(root / split)) for p in unreadable]
        if len(kept):
            decoded_cache.write(cache_key, images, kept, unreadable)
    else:
        images, kept, unreadable = cached
    if len(unreadable):
        shown = ", ".join(unreadable[:5]) + (", ..." if len(unreadable) > 5 else "")
        say(f"note: {len(unreadable)} of {len(files)} files in {root / split} are not readable "
            f"images and are left out ({shown}); going on with the other {len(kept)}")
    if not len(kept):
        raise DataError(f"none of the {len(files)} files in {root / split} is a readable image")
    return Split(images, kept, names)


def decode(files: list, labels: list, size: int) -> tuple:
    """(uint8 images, int32 labels, the unreadable files): every readable file as a square
    of side `size`."""
    images, kept, unreadable = [], [], []
    for path, label in zip(files, labels):
        try:
            images.append(imagefiles.square_image(imagefiles.read_image(path), size))
            kept.append(label)
        except imagefiles.ImageError:
            unreadable.append(path)
    return (np.stack(images) if images else None), np.asarray(kept, np.int32), unreadable
