"""The suite's environment (set before any test imports JAX) and its fixtures; shared
functions are in helpers.py."""
import json
import os
import subprocess

import pytest

import shared_data
from helpers import E2E_FLAGS, REPO, built_once, optimized, run, write_folder, xla_flags

# Compile each shape once for the whole suite: every test process (the xdist workers and the
# commands they start) shares this cache.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(REPO / ".pytest_cache" / "jax"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
# Most tests compile far more than they run: XLA's costly passes off, for every test process
# (`optimized` turns them on where runs are long or XLA's own buffers are measured).
os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")
# XLA:CPU's older emitters compile a step in two thirds of the time (experiments/suite_time).
FAST_COMPILE = "--xla_cpu_use_fusion_emitters=false"


if FAST_COMPILE not in os.environ.get("XLA_FLAGS", ""):
    os.environ.update(xla_flags(FAST_COMPILE))
# Decoded image folders go to the suite's own cache, never the user's.
os.environ.setdefault("MOBILENET_JAX_DECODED_CACHE", str(REPO / ".pytest_cache" / "decoded"))
# What the commands set for themselves (process.quiet_tensorflow), for the library calls here.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")


@pytest.fixture(scope="session")
def subset_dir():
    return shared_data.subset_dir()


@pytest.fixture(scope="session")
def subset_array_record_dir():
    return shared_data.subset_array_record_dir()


@pytest.fixture
def fresh_steps():
    """For a test that patches a step function: the steps are jitted anew for it (the builder
    shares them between equal configs), and its patched step for no other test."""
    from mobilenet_jax.core import steps
    steps.clear_caches()
    yield
    steps.clear_caches()


@pytest.fixture(scope="session")
def trained_run(subset_dir, tmp_path_factory):
    """A run trained in its cwd (the default workdir) on the subset: (cwd, train's result)."""
    def train(cwd):
        with optimized():  # 230 steps
            result = run(["mobilenet_jax.train", *E2E_FLAGS, "--data-dir", subset_dir], cwd)
        assert result.returncode == 0, result.stderr[-2000:]
        (cwd / "train_result.json").write_text(json.dumps(
            {"stdout": result.stdout, "stderr": result.stderr}))

    cwd = built_once(tmp_path_factory, "trained_run", train)
    saved = json.loads((cwd / "train_result.json").read_text())
    return cwd, subprocess.CompletedProcess(["mobilenet_jax.train"], 0, saved["stdout"],
                                            saved["stderr"])


@pytest.fixture(scope="session")
def folder(tmp_path_factory):
    return built_once(tmp_path_factory, "folder", write_folder)


@pytest.fixture(scope="session")
def folder_run(folder, tmp_path_factory):
    def train(workdir):
        # The default recipe: a run this short (56 steps) must evaluate as it trained.
        # (One checkpoint, at the end: saving more often changes nothing trained.)
        result = run(["mobilenet_jax.train", "--image-folder", str(folder), "--alpha", "0.25",
                      "--epochs", "8", "--batch-size", "16", "--val-fraction", "0",
                      "--checkpoint-every", "8", "--workdir", str(workdir), "--no-progress"],
                     workdir)
        assert result.returncode == 0, result.stderr[-2000:]
    return built_once(tmp_path_factory, "folder_run", train)
