"""Own data: a folder of images, any TFDS image dataset, statistics from the training split,
and fine-tuning from a checkpoint."""
import dataclasses
import json
import os

import chex
import jax
import numpy as np
import pytest

from PIL import Image

from helpers import CLASSES, REPO, assert_one_line_error, run, run_in_one_process, train
from mobilenet_jax import Config
from mobilenet_jax.config import flatten
from mobilenet_jax.data import arrays, from_folder, from_tfds
from mobilenet_jax.data.synthetic import write_colour_folder
from mobilenet_jax.core import checkpoint as ckpt_lib
from mobilenet_jax.core import steps
from mobilenet_jax.evaluators.classification import evaluate_split
from mobilenet_jax.core.restore import restore

def test_folder_loads_as_squares_with_names_from_folders(folder):
    train = from_folder.load(folder, "train", 24)
    assert train.class_names == CLASSES and len(train) == 120
    assert train.images.shape == (120, 24, 24, 3) and train.images.dtype == np.uint8
    np.testing.assert_array_equal(np.bincount(train.labels), [40, 40, 40])
    grayscale = train.images[train.labels == 2][0]  # stripes/0.jpg, saved as grayscale
    assert np.array_equal(grayscale[..., 0], grayscale[..., 1])


def test_folder_trains_above_chance_and_evaluates_from_the_checkpoint_alone(folder, folder_run):
    config = flatten(json.loads((folder_run / "config.json").read_text()))
    assert config["num_classes"] == 3 and tuple(config["class_names"]) == CLASSES
    assert config["image_folder"] == str(folder) and config["image_size"] == 32
    result = run(["mobilenet_jax.evaluate", "--ckpt", str(folder_run), "--json", "e.json"],
                 folder_run)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((folder_run / "e.json").read_text())
    # Chance is 1/3; this run (the defaults) evaluated at 69 % when measured, 61 % with the
    # running statistics instead of recomputed ones.
    assert report["examples"] == 36 and report["top1"] > 0.55, report
    result = run(["mobilenet_jax.predict", "--ckpt", str(folder_run), "--json", "p.json",
                  str(folder / "test" / "stripes")], folder_run)
    assert result.returncode == 0, result.stderr[-2000:]
    classes = [p["top_k"][0]["class"] for p in json.loads((folder_run / "p.json").read_text())]
    assert set(classes) <= set(CLASSES) and classes.count("stripes") > len(classes) / 3


def test_stored_statistics_equal_numpy_over_the_training_split(folder, folder_run):
    """mean/std in the config are the training images' per-channel statistics (pixels in
    [0, 1]), computed here independently with numpy in one pass."""
    config = flatten(json.loads((folder_run / "config.json").read_text()))
    pixels = from_folder.load(folder, "train", 32).images.reshape(-1, 3) / 255.0
    np.testing.assert_allclose(config["mean"], pixels.mean(0), rtol=1e-9)
    np.testing.assert_allclose(config["std"], pixels.std(0), rtol=1e-9)
    stored = restore(ckpt_lib.resolve(folder_run)).config
    assert stored.data.mean == tuple(config["mean"]) and stored.data.std == tuple(config["std"])


def test_another_tfds_image_dataset_trains_through_the_same_path(tmp_path):
    """tfds's mock MNIST (28x28 grayscale, 10 classes) and tf_flowers (images of any size)."""
    tfds = pytest.importorskip("tensorflow_datasets")
    for name, size in (("mnist", 28), ("tf_flowers", 32)):
        with tfds.testing.mock_data(num_examples=64):
            config = Config(dataset=name, width_multiplier=0.1, batch_size=16, epochs=1,
                            val_fraction=0, offline=True, progress=False, precise_bn_batches=2,
                            workdir=str(tmp_path / name))
            result = train(config, num_classes_from_data=True)
        assert result["step"] == 4 and np.isfinite(result["train_loss"])
        stored = restore(ckpt_lib.resolve(tmp_path / name)).config
        assert stored.data.image_size == size
        assert len(stored.data.class_names) == stored.network.num_classes
        assert stored.network.num_classes == (10 if name == "mnist" else 5)


def test_finetune_from_a_subset_checkpoint(trained_run, folder, tmp_path):
    """Backbone from the source (the moving average it evaluates with), a new head for 3
    classes, and with --freeze-backbone every backbone weight and BatchNorm statistic
    unchanged after training."""
    source_dir, _ = trained_run
    restored = restore(ckpt_lib.resolve(source_dir))
    source_state, source = restored.state, restored.config
    workdir = tmp_path / "ft"
    result = run(["mobilenet_jax.train", "--image-folder", str(folder), "--init-from",
                  str(source_dir), "--freeze-backbone", "--epochs", "2", "--batch-size", "16",
                  "--workdir", str(workdir), "--no-progress"], tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "a new classifier for 3 classes" in result.stdout
    restored = restore(ckpt_lib.resolve(workdir))
    state, config = restored.state, restored.config
    # the source's network, with the new data's number of classes
    assert config.network == dataclasses.replace(source.network, num_classes=3)
    assert config.start.init_from == str(source_dir) and config.network.num_classes == 3
    for name in ("params", "batch_stats"):
        new, old = getattr(state, name), source_state.eval_variables()[name]
        for module in old:
            if module == "classifier":
                continue
            chex.assert_trees_all_equal(new[module], old[module])
    assert state.params["classifier"]["kernel"].shape[-1] == 3
    # Resuming the fine-tune run resumes it, not the source.
    again = run(["mobilenet_jax.train", "--workdir", str(workdir), "--epochs", "2",
                 "--no-progress"], tmp_path)
    assert again.returncode == 0 and "starting from" not in again.stdout


@pytest.mark.numerics
def test_backbone_lr_scale_scales_the_backbone_step(trained_run, folder, tmp_path):
    """The first step's backbone update with --backbone-lr-scale 0.1 is 0.1 times the one
    without it (same data, same start; SGD's first step is lr * gradient); the head's equal."""
    source_dir, _ = trained_run
    source_state = restore(ckpt_lib.resolve(source_dir)).state
    updates = {}
    for scale in (1.0, 0.1):
        config = Config(image_folder=str(folder), init_from=str(source_dir), num_classes=3,
                        width_multiplier=0.25, backbone_lr_scale=scale, warmup_epochs=0,
                        batch_size=16, epochs=1, val_fraction=0, progress=False,
                        precise_bn_batches=0, workdir=str(tmp_path / str(scale)), max_steps=1)
        train(config)
        state = restore(tmp_path / str(scale) / "checkpoints" / "1").state
        updates[scale] = state.params
    before = np.asarray(source_state.eval_variables()["params"]["block13"]["pointwise"]["kernel"],
                        np.float64)
    full, scaled = (np.asarray(updates[s]["block13"]["pointwise"]["kernel"], np.float64) - before
                    for s in (1.0, 0.1))
    assert np.abs(full).max() > 0
    # Two compiled steps: their gradients differ by rounding, and the updates read back from
    # float32 weights by the weights' rounding, both far below 1e-3 of the update; another
    # scale (1, 0.01) is off by 10x. test_steps checks the exact scaling of one optimizer.
    assert abs(np.vdot(scaled, full) / np.vdot(full, full) - 0.1) <= 1e-3 * 0.1
    heads = [np.asarray(updates[s]["classifier"]["kernel"]) for s in (1.0, 0.1)]
    assert np.linalg.norm(heads[1] - heads[0]) <= 1e-3 * np.linalg.norm(heads[0])


def test_own_data_bad_input_is_one_line(folder, trained_run, tmp_path):
    flags = ["--epochs", "1", "--batch-size", "16", "--workdir", "w", "--no-progress"]
    (tmp_path / "empty").mkdir()
    assert_one_line_error(run(["mobilenet_jax.train", "--image-folder", "empty", *flags],
                              tmp_path), "train/")
    (tmp_path / "noclass" / "train").mkdir(parents=True)
    assert_one_line_error(run(["mobilenet_jax.train", "--image-folder", "noclass", *flags],
                              tmp_path), "no class folders")
    (tmp_path / "hollow" / "train" / "cats").mkdir(parents=True)
    (tmp_path / "hollow" / "train" / "cats" / "notes.txt").write_text("no images")
    assert_one_line_error(run(["mobilenet_jax.train", "--image-folder", "hollow", *flags],
                              tmp_path), "cats", "holds no PNG or JPEG")
    assert_one_line_error(run(["mobilenet_jax.train", "--image-folder", str(folder),
                               "--num-classes", "5", *flags], tmp_path), "3 classes",
                          "--num-classes")
    source_dir, _ = trained_run
    assert_one_line_error(run(["mobilenet_jax.train", "--image-folder", str(folder),
                               "--init-from", str(source_dir), "--alpha", "0.5", *flags],
                              tmp_path), "cannot fine-tune", "width_multiplier=0.25")
    assert_one_line_error(run(["mobilenet_jax.train", "--image-folder", str(folder),
                               "--init-from", "nowhere", *flags], tmp_path), "nowhere")
    assert not (tmp_path / "w" / "checkpoints" / "latest").exists()


def test_unreadable_files_are_counted_named_and_left_out(folder, tmp_path, capsys):
    import shutil
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    (copy / "train" / "circles" / "broken.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    (copy / "train" / "squares" / "empty.png").write_bytes(b"")
    train = from_folder.load(copy, "train", 16)
    line = capsys.readouterr().out
    assert len(train) == 120 and "2 of 122 files" in line
    assert "circles/broken.jpg" in line and "squares/empty.png" in line and "going on" in line


def test_a_decoded_folder_is_read_back_until_a_file_changes(folder, tmp_path, monkeypatch,
                                                             capsys):
    import shutil
    from mobilenet_jax.data import decoded_cache, images as imagefiles
    monkeypatch.setenv("MOBILENET_JAX_DECODED_CACHE", str(tmp_path / "cache"))
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    (copy / "train" / "circles" / "broken.jpg").write_bytes(b"not an image")
    first = from_folder.load(copy, "train", 16)
    decoding = imagefiles.read_image
    monkeypatch.setattr(imagefiles, "read_image", lambda path: pytest.fail(f"decoded {path}"))
    again = from_folder.load(copy, "train", 16)  # from the cache: nothing decoded
    np.testing.assert_array_equal(again.images, first.images)
    np.testing.assert_array_equal(again.labels, first.labels)
    assert capsys.readouterr().out.count("circles/broken.jpg") == 2  # the note, both times
    # A file rewritten (another image, so another size and mtime) is decoded afresh.
    changed = copy / "train" / "squares" / "0.jpg"
    Image.new("RGB", (16, 16), (255, 0, 0)).save(changed)
    monkeypatch.setattr(imagefiles, "read_image", decoding)
    fresh = from_folder.load(copy, "train", 16)
    assert not np.array_equal(fresh.images, first.images)
    # A damaged entry costs only the decoding.
    for entry in (tmp_path / "cache").glob("*.npz"):
        entry.write_bytes(b"damaged")
    np.testing.assert_array_equal(from_folder.load(copy, "train", 16).images, fresh.images)
    monkeypatch.setenv("MOBILENET_JAX_DECODED_CACHE", "off")
    assert decoded_cache.directory() is None


def test_a_dataset_without_image_and_label_features_is_refused():
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=8):
        with pytest.raises(arrays.DataError, match="not an image classification dataset"):
            from_tfds.load("imdb_reviews", "train", offline=True)


def test_a_dataset_too_large_for_memory_is_refused_before_reading(monkeypatch):
    monkeypatch.setattr(arrays, "_available_memory", lambda: 2**30)
    with pytest.raises(arrays.DataError, match=r"1\.4 GiB .* more than half of the 1\.0 GiB"):
        arrays.check_fits(1_281_167, 20, "'imagenet2012' split 'train'")
    arrays.check_fits(1000, 32, "small")  # 3 MB: fine


def test_a_short_run_evaluates_as_it_trained(tmp_path):
    """30 steps with the defaults (one checkpoint, at the end): the checkpoint's recomputed
    BatchNorm statistics evaluate the test split near perfectly, the same weights with the
    running statistics (what evaluate ran before) worse: after 30 steps those are still
    mostly their initial values, and such runs evaluated at chance (one class of three) or
    with two classes right (experiments/eval_statistics), as seed and rounding fall."""
    write_colour_folder(tmp_path / "colours")  # the short-run case of experiments/eval_statistics
    train(Config(image_folder=str(tmp_path / "colours"), width_multiplier=0.25, epochs=6,
                 batch_size=32, val_fraction=0, progress=False, checkpoint_every=6,
                 workdir=str(tmp_path / "run")), num_classes_from_data=True)
    model = restore(ckpt_lib.resolve(tmp_path / "run"))
    test = from_folder.load(tmp_path / "colours", "test", model.config.data.image_size)
    evaluate = steps.build(model.config).jit_steps(model.devices).eval

    def top1(state):
        sums = evaluate_split(state, test, 32, model.devices, evaluate)
        return sums["top1"] / sums["count"]

    assert model.state.precise_batch_stats is not None
    recomputed = top1(model.state)
    assert recomputed >= 0.9
    assert top1(model.state.replace(precise_batch_stats=None)) < recomputed


def test_an_array_record_dataset_trains_and_evaluates_where_tensorflow_cannot_be_imported(
        subset_array_record_dir, subset_dir, tmp_path):
    """A process in which `import tensorflow` fails (as on a machine without it) trains on the
    subset prepared as ArrayRecord (streamed), evaluates the checkpoint (read into memory) and
    predicts an image file; the subset prepared as TFRecord is one line naming the extra."""
    blocker = tmp_path / "no_tensorflow" / "tensorflow"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text('raise ImportError("TensorFlow is not installed")\n')
    env = {**os.environ, "PYTHONPATH": f"{blocker.parent}{os.pathsep}{REPO}"}
    data = ["--data-dir", subset_array_record_dir, "--offline"]
    Image.fromarray(np.full((40, 40, 3), 120, np.uint8)).save(tmp_path / "grey.png")
    trained, evaluated, result, tfrecord = run_in_one_process([
        ["mobilenet_jax.train", *data, "--split", "train[:10%]", "--alpha", "0.1",
         "--epochs", "1", "--batch-size", "32", "--val-fraction", "0",
         "--precise-bn-batches", "2", "--input", "stream", "--data-workers", "1",
         "--no-progress", "--workdir", "run"],
        ["mobilenet_jax.evaluate", "--ckpt", "run", *data, "--input", "memory",
         "--json", "e.json"],
        ["mobilenet_jax.predict", "--ckpt", "run", "grey.png"],
        ["mobilenet_jax.train", "--data-dir", subset_dir, "--offline", "--no-progress",
         "--workdir", "tfrecord_run"]],
        tmp_path, env)
    assert trained.returncode == 0, trained.stderr[-2000:]
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    assert json.loads((tmp_path / "e.json").read_text())["examples"] == 600
    assert result.returncode == 0 and "grey.png" in result.stdout, result.stderr[-2000:]
    assert_one_line_error(tfrecord, "not prepared as ArrayRecord", "pip install -e '.[tfrecord]'")

