import os
import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
# Compile each shape once for the whole suite (subprocess CLI tests inherit it too).
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(REPO / ".pytest_cache" / "jax"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# The genuine 6-class CIFAR-100 subset laid beside the checkout (never copied into it).
SUBSET_DIR = pathlib.Path(os.environ.get(
    "MOBILENET_JAX_SUBSET_DIR", REPO.parent / "shared" / "data" / "cifar100-6class-tfds"))
SUBSET_CLASSES = (6, 25, 35, 41, 95, 97)


@pytest.fixture
def subset_dir():
    if not (SUBSET_DIR / "cifar100").is_dir():
        pytest.skip(f"the 6-class CIFAR-100 subset is absent at {SUBSET_DIR} "
                    "(set MOBILENET_JAX_SUBSET_DIR to a TFDS data dir holding it)")
    return str(SUBSET_DIR)
