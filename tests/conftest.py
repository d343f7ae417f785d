import os
import pathlib
import subprocess
import sys

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


@pytest.fixture(scope="session")
def subset_dir():
    if not (SUBSET_DIR / "cifar100").is_dir():
        pytest.skip(f"the 6-class CIFAR-100 subset is absent at {SUBSET_DIR} "
                    "(set MOBILENET_JAX_SUBSET_DIR to a TFDS data dir holding it)")
    return str(SUBSET_DIR)


# These flags (with the default recipe), then evaluate on the test split, reached 65.3% and
# 58.8% test top-1 on the 6 classes with seeds 0 and 1 (the dev VM). Chance is 1/6 = 16.7%;
# 40% leaves a wide margin for run-to-run noise while still failing for a model that does not
# learn.
E2E_FLAGS = ["--alpha", "0.25", "--epochs", "10", "--batch-size", "64", "--val-fraction", "0",
             "--offline", "--no-progress"]
MIN_TEST_TOP1 = 0.40


def run(args, cwd, timeout=600, **kw):
    return subprocess.run([sys.executable, "-m", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, **kw)


def assert_one_line_error(result, *fragments):
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(("error:", "python -m")) and "error" in last
    for fragment in fragments:
        assert fragment in last, last


@pytest.fixture(scope="session")
def trained_run(subset_dir, tmp_path_factory):
    """A run trained in its cwd (the default workdir) on the subset: (cwd, train's result)."""
    cwd = tmp_path_factory.mktemp("run")
    result = run(["mobilenet_jax.train", *E2E_FLAGS, "--data-dir", subset_dir], cwd)
    assert result.returncode == 0, result.stderr[-2000:]
    return cwd, result
