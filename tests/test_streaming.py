"""The streaming input path: the same batches as the in-memory one, random-resized crops on
the host, exact resume, and `--input auto` choosing it for what does not fit."""
import json
import pathlib
import random
import shutil
import signal
import subprocess
import sys
import time

import chex
import jax
import numpy as np
import pytest

from PIL import Image

from helpers import CLASSES, run, tiny_config, train
from mobilenet_jax import process
from mobilenet_jax.config import flatten
from mobilenet_jax.core.restore import restore
from mobilenet_jax.data import arrays, from_folder, from_tfds, images, streaming


class FixedDraws:
    """A generator that returns the given draws in order (uniform, integers, random)."""

    def __init__(self, *draws):
        self.draws = list(draws)

    def uniform(self, low, high):
        return self.draws.pop(0)

    def integers(self, low, high):
        value = self.draws.pop(0)
        assert low <= value < high
        return value

    def random(self):
        return self.draws.pop(0)


def test_random_crop_box_by_hand():
    # 100x200 image: area fraction 0.5 -> 10000 px, log-aspect 0 -> 100x100, at (0, 42).
    assert images.random_crop_box(100, 200, FixedDraws(0.5, 0.0, 0, 42)) == (0, 42, 100, 100)
    # aspect exp(log 4/3): w = round(sqrt(10000 * 4/3)) = 115, h = round(sqrt(7500)) = 87.
    box = images.random_crop_box(100, 200, FixedDraws(0.5, np.log(4 / 3), 13, 85))
    assert box == (13, 85, 87, 115)
    # a box larger than the image ten times: the centre box, aspect clamped to 4/3 (w = 133).
    wide = FixedDraws(*[1.0, np.log(4 / 3)] * 10)
    assert images.random_crop_box(100, 1000, wide) == (0, 433, 100, 133)
    tall = FixedDraws(*[1.0, np.log(3 / 4)] * 10)
    assert images.random_crop_box(1000, 60, tall) == (460, 0, 80, 60)


def test_random_resized_crop_is_the_box_resized_and_flipped():
    coords = np.stack(np.meshgrid(np.arange(60), np.arange(80), indexing="ij"), -1)
    image = np.concatenate([coords, np.zeros((60, 80, 1), int)], -1).astype(np.uint8)
    # area 900/4800 and aspect 1: a 30x30 box at (5, 11), no resize; then flipped (0.2 < 0.5).
    out = images.random_resized_crop(image, 30, FixedDraws(900 / 4800, 0.0, 5, 11, 0.2))
    np.testing.assert_array_equal(out, image[5:35, 11:41][:, ::-1])
    out = images.random_resized_crop(image, 30, FixedDraws(900 / 4800, 0.0, 5, 11, 0.7))
    np.testing.assert_array_equal(out, image[5:35, 11:41])
    # a 60x60 box resized to 30: each output pixel averages a 2x2 block (bilinear, antialiased)
    out = images.random_resized_crop(image, 30, FixedDraws(0.75, 0.0, 0, 20, 0.9))
    np.testing.assert_allclose(out[..., 0], image[0:60:2, 20:80:2, 0] + 0.5, atol=0.51)
    np.testing.assert_allclose(out[..., 1], image[0:60:2, 20:80:2, 1] + 0.5, atol=0.51)


def test_streamed_batches_are_the_in_memory_ones(folder):
    held = from_folder.load(folder, "train", 24)
    streamed = from_folder.load(folder, "train", 24, input="stream")
    assert isinstance(streamed, streaming.StreamedSplit) and len(streamed) == len(held) == 120
    shares = []
    for index in range(2):  # each process's share of every global batch, in epoch order
        a = list(held.train_batches(32, 3, 1, 1, index, 2))
        b = list(streamed.train_batches(32, 3, 1, 1, index, 2))
        assert len(a) == len(b) == 2
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x["image"], y["image"])
            np.testing.assert_array_equal(x["label"], y["label"])
        shares.append(b)
    for whole, first, second in zip(streamed.train_batches(32, 3, 1, 1), *shares, strict=True):
        np.testing.assert_array_equal(whole["image"],  # two halves, disjoint, of one batch
                                      np.concatenate([first["image"], second["image"]]))
    for x, y in zip(held.eval_batches(50), streamed.eval_batches(50), strict=True):
        for key in ("image", "label", "mask"):
            np.testing.assert_array_equal(x[key], y[key])
    assert streamed.channel_statistics() == held.channel_statistics()
    sub = [3, 5, 20]
    np.testing.assert_array_equal(streamed.take(sub).images_at([0, 2]), held.images_at([3, 20]))


def test_random_crops_are_a_function_of_seed_epoch_and_record(folder):
    streamed = from_folder.load(folder, "train", 16, input="stream").take(np.arange(0, 120, 5))
    epoch = list(streamed.train_batches(4, 0, 2, random_crops=True))
    assert len(epoch) == 6 and epoch[0]["image"].shape == (4, 16, 16, 3)
    resumed = list(streamed.train_batches(4, 0, 2, start=4, random_crops=True))
    in_workers = streaming.StreamedSplit(**{**streamed.__dict__, "workers": 2})
    process.absl_flags_parsed()  # what a command's entry point does for grain's workers
    for a, b in zip(epoch[4:], resumed, strict=True):
        np.testing.assert_array_equal(a["image"], b["image"])
    for a, b in zip(epoch, in_workers.train_batches(4, 0, 2, random_crops=True), strict=True):
        np.testing.assert_array_equal(a["image"], b["image"])
    other_epoch = next(streamed.train_batches(4, 0, 3, random_crops=True))
    assert not np.array_equal(epoch[0]["image"], other_epoch["image"])
    with pytest.raises(ValueError, match="full images"):
        next(from_folder.load(folder, "train", 16).train_batches(4, 0, 0, random_crops=True))


def test_the_subset_streams_as_array_records_and_trains_as_in_memory(subset_array_record_dir,
                                                                     tmp_path):
    """The same training run from memory and streamed: bit-identical parameters."""
    results = {}
    for input in ("memory", "stream"):
        train(tiny_config(subset_array_record_dir, tmp_path / input, max_steps=8,
                          input=input))  # one epoch
        results[input] = restore(tmp_path / input / "checkpoints" / "8").state
    assert isinstance(from_tfds.load("cifar100", "test", subset_array_record_dir, True,
                                     input="stream"), streaming.StreamedSplit)
    chex.assert_trees_all_equal(results["memory"].params, results["stream"].params)


def test_auto_streams_what_does_not_fit(folder, tmp_path, monkeypatch):
    """A folder over the memory budget: `--input auto` streams it (one line) and trains on
    random-resized crops; evaluate and predict read it as training did."""
    monkeypatch.setattr(arrays, "_available_memory", lambda: 400_000)  # 120 images: 369 KB
    result = run(["mobilenet_jax.train", "--image-folder", str(folder), "--alpha", "0.1",
                  "--resolution", "32", "--epochs", "1", "--batch-size", "8",
                  "--val-fraction", "0.25", "--precise-bn-batches", "2", "--no-progress",
                  "--workdir", "straight"], tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.count("streaming it from disk instead") == 1, result.stdout
    config = flatten(json.loads((tmp_path / "straight" / "config.json").read_text()))
    assert config["random_resized_crops"] is True and config["image_size"] == 32
    monkeypatch.undo()  # the memory evaluated from
    for input in ("stream", "memory"):
        result = run(["mobilenet_jax.evaluate", "--ckpt", "straight", "--input", input,
                      "--json", f"{input}.json"], tmp_path)
        assert result.returncode == 0, result.stderr[-2000:]
    streamed, held = (json.loads((tmp_path / f"{input}.json").read_text())
                      for input in ("stream", "memory"))
    assert streamed["examples"] == held["examples"] == 36
    assert streamed["top1"] == held["top1"] and streamed["loss"] == held["loss"]
    image = next((folder / "test" / "squares").iterdir())
    result = run(["mobilenet_jax.predict", "--ckpt", "straight", str(image)], tmp_path)
    assert result.returncode == 0 and image.name in result.stdout, result.stderr[-2000:]


def test_streaming_needs_array_record(subset_dir):
    with pytest.raises(arrays.DataError, match="not prepared as ArrayRecord.*array_record"):
        from_tfds.load("cifar100", "test", subset_dir, True, input="stream")


def test_an_unreadable_file_met_while_streaming_is_named(folder, tmp_path):
    root = tmp_path / "images"
    shutil.copytree(folder, root)
    (root / "train" / "squares" / "broken.jpg").write_bytes(b"not a jpeg")
    streamed = from_folder.load(root, "train", 16, input="stream")
    with pytest.raises(arrays.DataError, match=r"broken\.jpg is not a readable .*remove or "):
        list(streamed.train_batches(4, 0, 0, random_crops=True))


def test_a_streamed_run_killed_at_a_random_moment_resumes_bit_identically(folder, tmp_path):
    """SIGKILL at a random moment of a streamed run with a worker process (random-resized
    crops): its workers end too, and rerunning the command (stopped once more within an
    epoch, and resumed) ends where a run never stopped ends, to the bit."""
    common = ["mobilenet_jax.train", "--image-folder", str(folder), "--alpha", "0.1",
              "--resolution", "16", "--epochs", "2", "--batch-size", "8", "--val-fraction", "0",
              "--precise-bn-batches", "1", "--input", "stream", "--no-progress"]
    # one worker process where it is killed; threads (the same batches) for the rest
    killed = subprocess.Popen([sys.executable, "-m", *common, "--data-workers", "1",
                               "--workdir", "killed"],
                              cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    time.sleep(random.Random().uniform(4.0, 11.0))
    workers = children(killed.pid)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    for workdir, more in (("killed", ["--max-steps", "20"]), ("killed", []), ("straight", [])):
        result = run([*common, "--workdir", workdir, *more], tmp_path)  # 20: in epoch 2
        assert result.returncode == 0, result.stderr[-2000:]
    for _ in range(50):  # the worker processes end with the run (they poll every 0.5 s)
        left = [pid for pid in workers if pathlib.Path(f"/proc/{pid}").exists()]
        if not left:
            break
        time.sleep(0.1)
    assert not left, [pathlib.Path(f"/proc/{pid}/cmdline").read_bytes()[:200] for pid in left]
    a, b = (restore(tmp_path / w / "checkpoints" / "30").state for w in ("killed", "straight"))
    chex.assert_trees_all_equal((a.params, a.opt_state, a.precise_batch_stats),
                                (b.params, b.opt_state, b.precise_batch_stats))


def children(pid: int) -> list[int]:
    """The worker processes `pid` started (Linux)."""
    found = pathlib.Path(f"/proc/{pid}/task/{pid}/children")
    workers = []
    for child in found.read_text().split() if found.exists() else []:
        try:
            if b"spawn_main" in pathlib.Path(f"/proc/{child}/cmdline").read_bytes():
                workers.append(int(child))
        except OSError:  # it ended meanwhile
            pass
    return workers


def test_a_tfds_dataset_of_large_images_prepared_as_array_record_streams(folder, tmp_path):
    """A TFDS dataset of images of varied sizes (the test folder's, made a TFDS builder and
    prepared as ArrayRecord, as imagenet2012 would be) trains through the streaming path on
    random-resized crops and evaluates."""
    tfds = pytest.importorskip("tensorflow_datasets")

    class ShapesOfManySizes(tfds.core.GeneratorBasedBuilder):
        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(None, None, 3)),
                "label": tfds.features.ClassLabel(names=list(CLASSES))}))

        def _split_generators(self, dl_manager):
            return {split: self._generate_examples(split) for split in ("train", "test")}

        def _generate_examples(self, split):
            for label, name in enumerate(CLASSES):
                for path in sorted((folder / split / name).iterdir()):
                    yield path.name + name, {
                        "image": np.asarray(Image.open(path).convert("RGB")), "label": label}

    data_dir = tmp_path / "tfds"
    ShapesOfManySizes(data_dir=str(data_dir), file_format="array_record").download_and_prepare()
    data = ["--data-dir", str(data_dir), "--offline"]
    result = run(["mobilenet_jax.train", "--dataset", "shapes_of_many_sizes", *data,
                  "--alpha", "0.1", "--resolution", "24",
                  "--epochs", "1", "--batch-size", "16", "--val-fraction", "0",
                  "--precise-bn-batches", "1", "--input", "stream", "--no-progress",
                  "--workdir", "run"], tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    config = flatten(json.loads((tmp_path / "run" / "config.json").read_text()))
    assert config["random_resized_crops"] and config["class_names"] == list(CLASSES)
    result = run(["mobilenet_jax.evaluate", "--ckpt", "run", *data, "--json", "e.json"], tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads((tmp_path / "e.json").read_text())["examples"] == 36
