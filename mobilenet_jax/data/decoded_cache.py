"""Image folders decoded once: a split's uint8 arrays kept in the user's cache directory and
read back while none of its files has changed (by path, size and modification time), so a
second run skips decoding 60,000 JPEG files (experiments/cifar10_time).

$MOBILENET_JAX_DECODED_CACHE names another directory, or `off`. A cache that cannot be
written or read only costs the decoding: it never stops a run.
"""
import hashlib
import os
import pathlib
from typing import Optional

import numpy as np

FORMAT = 1  # bump when what a split decodes to changes (resizing, colour handling)


def directory() -> Optional[pathlib.Path]:
    setting = os.environ.get("MOBILENET_JAX_DECODED_CACHE")
    if setting == "off":
        return None
    if setting:
        return pathlib.Path(setting).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return pathlib.Path(base) / "mobilenet_jax" / "decoded"


def key(files: list, labels: list, names: tuple, size: int) -> str:
    """Names the decoded split: changes with any file's path, size or mtime, its label, the
    class names, the image size and FORMAT."""
    digest = hashlib.sha256(repr((FORMAT, size, names)).encode())
    for path, label in zip(files, labels):
        stat = os.stat(path)
        digest.update(f"{os.path.abspath(path)}\0{stat.st_size}\0{stat.st_mtime_ns}\0{label}\n"
                      .encode())
    return digest.hexdigest()[:32]


def read(name: str) -> Optional[tuple]:
    """(images, labels, unreadable file names) stored under `name`, or None."""
    where = directory()
    if where is None:
        return None
    try:
        with np.load(where / f"{name}.npz") as stored:
            return stored["images"], stored["labels"], [str(p) for p in stored["unreadable"]]
    except (OSError, KeyError, ValueError, EOFError):  # absent, unreadable or damaged
        return None


def write(name: str, images: np.ndarray, labels: np.ndarray, unreadable: list) -> None:
    where = directory()
    if where is None:
        return
    partial = where / f"{name}.{os.getpid()}.partial.npz"
    try:
        where.mkdir(parents=True, exist_ok=True)
        np.savez(partial, images=images, labels=labels, unreadable=np.asarray(unreadable, str))
        os.replace(partial, where / f"{name}.npz")  # readers see the whole file or none
    except OSError:
        partial.unlink(missing_ok=True)
