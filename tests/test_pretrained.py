"""Weights-only checkpoints, and the model that ships with the package (`pretrained:NAME`)."""
import json
import math
import pathlib
import tarfile

import chex
import jax
import pytest

import mobilenet_jax
from helpers import CLASSES, assert_one_line_error, run
from mobilenet_jax.config import Places, Run
from mobilenet_jax.core import checkpoint as ckpt_lib
from mobilenet_jax.core.restore import restore, write_weights
from shared_data import cifar10_archive

# The dataset's classes as its README lists them, in label order (sorted folder names).
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                   "ship", "truck")


def bytes_under(directory: pathlib.Path) -> int:
    return sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())


def test_weights_only_checkpoint_evaluates_as_its_source(folder, folder_run, tmp_path):
    """It holds what the source evaluates with (its moving average and recomputed statistics)
    and nothing else, no path of the machine that trained it, and evaluates to the same
    numbers on the same data."""
    source = ckpt_lib.resolve(folder_run)
    step_dir = write_weights(source, tmp_path / "weights")
    original, weights = restore(source), restore(step_dir)
    chex.assert_trees_all_equal(weights.state.eval_variables(), original.state.eval_variables())
    # what the network computes is the source's; where and how the source ran is not kept
    for group in ("network", "compute", "data", "recipe"):
        assert getattr(weights.config, group) == getattr(original.config, group)
    assert weights.config.places == Places() and weights.config.run == Run()
    # The source stores the parameters at least twice more (momentum, moving average).
    assert bytes_under(step_dir) < 0.5 * bytes_under(source)
    reports = []
    for flags in (["--ckpt", str(source)],
                  ["--ckpt", str(step_dir), "--image-folder", str(folder)]):
        result = run(["mobilenet_jax.evaluate", *flags, "--json", "e.json"], tmp_path)
        assert result.returncode == 0, result.stderr[-2000:]
        report = json.loads((tmp_path / "e.json").read_text())
        reports.append({k: report[k] for k in ("examples", "top1", "top5", "loss")})
    assert reports[0] == reports[1]
    # Damaged, it is refused like any checkpoint.
    packed = next(p for p in (step_dir / "state").rglob("*") if p.is_file()
                  and p.stat().st_size > 4096)
    data = bytearray(packed.read_bytes())
    data[len(data) // 2] ^= 0xFF
    packed.write_bytes(bytes(data))
    result = run(["mobilenet_jax.evaluate", "--ckpt", str(step_dir), "--image-folder",
                  str(folder)], tmp_path)
    assert_one_line_error(result, str(step_dir))


def test_an_unknown_pretrained_name_is_one_line_naming_the_shipped_ones(tmp_path):
    result = run(["mobilenet_jax.predict", "--pretrained", "imagenet", "x.jpg"], tmp_path)
    assert_one_line_error(result, "no pretrained model 'imagenet'", "cifar10")


def test_the_shipped_model_is_a_cifar10_classifier_for_apply():
    config, variables = mobilenet_jax.pretrained("cifar10")
    assert config.network.num_classes == 10 and config.data.class_names == CIFAR10_CLASSES
    assert config.places.image_folder is None and config.data.dataset == "cifar10"
    assert set(variables) == {"params", "batch_stats"}
    init, apply = mobilenet_jax.functions(config)
    images = jax.numpy.zeros((2, config.data.resolution, config.data.resolution, 3))
    chex.assert_trees_all_equal_shapes(
        variables, jax.eval_shape(lambda key: init(key, images.shape), jax.random.key(0)))
    logits = jax.jit(apply)(variables, images)
    assert logits.shape == (2, 10) and bool(jax.numpy.isfinite(logits).all())


def test_the_shipped_model_finetunes_on_other_classes(folder, tmp_path):
    result = run(["mobilenet_jax.train", "--init-from", "pretrained:cifar10", "--image-folder",
                  str(folder), "--epochs", "1", "--batch-size", "16", "--val-fraction", "0",
                  "--workdir", str(tmp_path / "run"), "--no-progress"], tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"a new classifier for {len(CLASSES)} classes" in result.stdout + result.stderr


@pytest.fixture(scope="module")
def cifar10_test_images(tmp_path_factory):
    """The first 50 test images of each class from the shared CIFAR-10 JPEG archive, as an
    image folder's test split."""
    archive_path = cifar10_archive()
    root = tmp_path_factory.mktemp("cifar10")
    counts = dict.fromkeys(CIFAR10_CLASSES, 0)
    with tarfile.open(archive_path, "r:gz") as archive:
        for member in archive:
            parts = pathlib.PurePosixPath(member.name).parts
            if member.isfile() and parts[0] == "test" and counts[parts[1]] < 50:
                counts[parts[1]] += 1
                target = root / "test" / parts[1] / parts[2]
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(archive.extractfile(member).read())
    assert set(counts.values()) == {50}
    return root


def test_the_shipped_model_has_the_accuracy_it_states(cifar10_test_images, tmp_path):
    """On 500 test images, top-1 within 4 standard errors of binomial sampling of the stated
    test accuracy (of all 10,000); predict names the class of at least 14 of 20."""
    card = json.loads((ckpt_lib.PRETRAINED_DIR / "cifar10" / "card.json").read_text())
    stated = card["test_top1"]
    result = run(["mobilenet_jax.evaluate", "--pretrained", "cifar10", "--image-folder",
                  str(cifar10_test_images), "--json", "e.json"], tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((tmp_path / "e.json").read_text())
    assert report["examples"] == 500
    assert abs(report["top1"] - stated) <= 4 * math.sqrt(stated * (1 - stated) / 500), report
    twenty = [p for c in CIFAR10_CLASSES
              for p in sorted((cifar10_test_images / "test" / c).iterdir())[:2]]
    result = run(["mobilenet_jax.predict", "--pretrained", "cifar10", "--json", "p.json",
                  *map(str, twenty)], tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    named = [p["top_k"][0]["class"] for p in json.loads((tmp_path / "p.json").read_text())]
    assert sum(n == p.parent.name for n, p in zip(named, twenty)) >= 14, named


def test_the_shipped_model_exports_as_a_checkpoint_does(cifar10_test_images, tmp_path):
    result = run(["mobilenet_jax.export", "--pretrained", "cifar10", "--format", "stablehlo",
                  "--image-folder", str(cifar10_test_images), "--parity-images", "100",
                  "--out", str(tmp_path / "export")], tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    parity = json.loads((tmp_path / "export" / "parity.json").read_text())["parity"]
    assert parity["images"] == 100 and parity["stablehlo"]["top1_agreement_with_jax"] == 1.0
