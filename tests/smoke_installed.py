"""Smoke test of an installed mobilenet_jax, as a user runs it: the commands as processes.

`make test-lowest` runs it (pytest --noconftest: none of the suite's settings) in a venv of
the lowest versions setup.cfg allows: first a plain install, where TensorFlow is absent (the
tests not marked `extras`), then with the `tfrecord`, `export` and `stablehlo` extras (those
marked).
"""
import importlib.metadata
import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import shared_data

TRAIN = ["--alpha", "0.1", "--batch-size", "32", "--split", "train[:10%]", "--val-fraction",
         "0.1", "--precise-bn-batches", "2", "--offline", "--no-progress"]


def run(*args, cwd):
    """`python -m mobilenet_jax.<args>` in `cwd`, with a compilation cache of its own."""
    env = {**os.environ, "JAX_COMPILATION_CACHE_DIR": str(cwd / ".jax_cache")}
    return subprocess.run([sys.executable, "-m", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=900)


def succeeded(result) -> str:
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def one_line_error(result, *fragments):
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error:") and all(f in last for f in fragments), last


def write_images(root, classes=("dark", "light"), per_class=(20, 6)):
    """A folder of two classes of flat colours, odd sizes: root/{train,test}/<class>/*.png."""
    rng = np.random.default_rng(0)
    for split, count in zip(("train", "test"), per_class):
        for k, name in enumerate(classes):
            (root / split / name).mkdir(parents=True)
            for i in range(count):
                shape = tuple(int(v) for v in rng.integers(20, 60, 2)) + (3,)
                pixels = rng.integers(0, 100, shape) + 150 * k
                Image.fromarray(pixels.astype(np.uint8)).save(root / split / name / f"{i}.png")


def test_a_plain_install_has_no_tensorflow():
    assert importlib.util.find_spec("tensorflow") is None
    for distribution in ("tensorflow", "tensorflow-cpu"):
        with pytest.raises(importlib.metadata.PackageNotFoundError):
            importlib.metadata.distribution(distribution)


def test_array_record_trains_resumes_evaluates_and_predicts(tmp_path):
    data = ["--data-dir", shared_data.subset_array_record_dir()]
    succeeded(run("mobilenet_jax.train", *TRAIN, *data, "--epochs", "2", "--max-steps", "3",
                  "--workdir", "run", cwd=tmp_path))
    assert "resuming" in succeeded(run("mobilenet_jax.train", *data, "--workdir", "run",
                                       "--no-progress", cwd=tmp_path))
    succeeded(run("mobilenet_jax.evaluate", "--ckpt", "run", *data, "--json", "e.json",
                  cwd=tmp_path))
    evaluated = json.loads((tmp_path / "e.json").read_text())
    assert evaluated["examples"] == 600 and 0 <= evaluated["top1"] <= 1
    Image.fromarray(np.full((40, 40, 3), 120, np.uint8)).save(tmp_path / "grey.png")
    assert "grey.png" in succeeded(run("mobilenet_jax.predict", "--ckpt", "run", "grey.png",
                                       cwd=tmp_path))


def test_an_image_folder_trains_evaluates_and_predicts(tmp_path):
    write_images(tmp_path / "images")
    succeeded(run("mobilenet_jax.train", "--image-folder", "images", "--alpha", "0.1",
                  "--epochs", "2", "--batch-size", "8", "--val-fraction", "0",
                  "--precise-bn-batches", "2", "--no-progress", "--workdir", "run", cwd=tmp_path))
    assert "12 examples" in succeeded(run("mobilenet_jax.evaluate", "--ckpt", "run",
                                          cwd=tmp_path))
    assert "light/0.png" in succeeded(run("mobilenet_jax.predict", "--ckpt", "run",
                                          "images/test/light/0.png", cwd=tmp_path))


def test_the_shipped_model_predicts_with_no_data(tmp_path):
    Image.fromarray(np.full((40, 40, 3), 120, np.uint8)).save(tmp_path / "grey.png")
    out = succeeded(run("mobilenet_jax.predict", "--pretrained", "cifar10", "--top-k", "10",
                        "grey.png", cwd=tmp_path))
    assert all(name in out for name in ("airplane", "ship", "truck")), out


def test_tfrecord_data_and_export_name_the_extra_they_need(tmp_path):
    one_line_error(run("mobilenet_jax.train", *TRAIN, "--data-dir", shared_data.subset_dir(),
                       "--epochs", "1", "--workdir", "run", cwd=tmp_path), "[tfrecord]")
    write_images(tmp_path / "images")
    succeeded(run("mobilenet_jax.train", "--image-folder", "images", "--alpha", "0.1",
                  "--epochs", "1", "--batch-size", "8", "--val-fraction", "0", "--no-progress",
                  "--precise-bn-batches", "0", "--workdir", "run", cwd=tmp_path))
    one_line_error(run("mobilenet_jax.export", "--ckpt", "run", "--out", "export",
                       cwd=tmp_path), "[export]")
    one_line_error(run("mobilenet_jax.export", "--ckpt", "run", "--out", "export", "--format",
                       "stablehlo", cwd=tmp_path), "[stablehlo]")


@pytest.mark.extras
def test_with_the_extras_tfrecord_data_trains_and_exports(tmp_path):
    data = ["--data-dir", shared_data.subset_dir()]
    succeeded(run("mobilenet_jax.train", *TRAIN, *data, "--epochs", "1", "--workdir", "run",
                  cwd=tmp_path))
    succeeded(run("mobilenet_jax.export", "--ckpt", "run", "--out", "export", "--int8",
                  "--calibration-images", "50", *data, "--offline", cwd=tmp_path))
    parity = json.loads((tmp_path / "export" / "parity.json").read_text())["parity"]
    assert parity["float"]["top1_agreement_with_jax"] == 1.0
    Image.fromarray(np.full((40, 40, 3), 120, np.uint8)).save(tmp_path / "grey.png")
    assert "grey.png" in succeeded(run("mobilenet_jax.predict", "--tflite",
                                       "export/model.tflite", "grey.png", cwd=tmp_path))
    succeeded(run("mobilenet_jax.export", "--ckpt", "run", "--out", "stablehlo", "--format",
                  "stablehlo", "--parity-images", "50", *data, "--offline", cwd=tmp_path))
    parity = json.loads((tmp_path / "stablehlo" / "parity.json").read_text())["parity"]
    assert parity["stablehlo"]["top1_agreement_with_jax"] == 1.0
