"""The genuine 6-class CIFAR-100 subset laid beside the checkout in ../shared (never copied
into it), as TFRecord (read through TensorFlow) and as ArrayRecord (read without it).

Where it is absent, a test that needs it skips, saying where it looked: a user's checkout.
Under CI (CI=true) it fails instead: CI always has it, and a missing copy must not quietly
test less."""
import os
import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
SUBSET_DIR = pathlib.Path(os.environ.get(
    "MOBILENET_JAX_SUBSET_DIR", REPO.parent / "shared" / "data" / "cifar100-6class-tfds"))
SUBSET_ARRAY_RECORD_DIR = pathlib.Path(os.environ.get(
    "MOBILENET_JAX_SUBSET_ARRAY_RECORD_DIR",
    REPO.parent / "shared" / "data" / "cifar100-6class-arrayrecord"))
# CIFAR-10 as JPEG files, for the shipped model's accuracy; experiments' data, which CI need
# not have: absent, its test skips, under CI too.
CIFAR10_ARCHIVE = pathlib.Path(os.environ.get(
    "MOBILENET_JAX_CIFAR10_ARCHIVE",
    REPO.parent / "shared" / "data" / "cifar10-jpeg" / "cifar10-jpeg.tar.gz"))


def prepared_subset(directory: pathlib.Path, variable: str) -> str:
    """`directory` as a string if it holds the prepared subset; else skip (fail under CI)."""
    if not (directory / "cifar100").is_dir():
        reason = (f"the 6-class CIFAR-100 subset is absent at {directory} (set {variable} to a "
                  f"TFDS data dir holding it)")
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}; CI must test with it", pytrace=False)
        pytest.skip(reason)
    return str(directory)


def subset_dir() -> str:
    return prepared_subset(SUBSET_DIR, "MOBILENET_JAX_SUBSET_DIR")


def subset_array_record_dir() -> str:
    return prepared_subset(SUBSET_ARRAY_RECORD_DIR, "MOBILENET_JAX_SUBSET_ARRAY_RECORD_DIR")


def cifar10_archive() -> pathlib.Path:
    if not CIFAR10_ARCHIVE.exists():
        pytest.skip(f"the CIFAR-10 JPEG archive is absent at {CIFAR10_ARCHIVE} (set "
                    "MOBILENET_JAX_CIFAR10_ARCHIVE to it)")
    return CIFAR10_ARCHIVE
