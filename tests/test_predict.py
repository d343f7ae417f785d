"""predict: image files of any size and mode, classified as evaluate classifies them."""
import json

import numpy as np
import pytest
from PIL import Image

from helpers import assert_one_line_error, run
from numerics import gamma
from mobilenet_jax.config import load_json
from mobilenet_jax.core import checkpoint as ckpt_lib
from mobilenet_jax.data import from_tfds
from mobilenet_jax.evaluators import classification
from mobilenet_jax.data import images as imagefiles


def write_test_images(subset_dir, directory, count=24):
    """The first `count` subset test images as PNG files (lossless): (paths, labels, images)."""
    test = from_tfds.load("cifar100", f"test[:{count}]", subset_dir, offline=True)
    directory.mkdir(exist_ok=True)
    paths = []
    for i, image in enumerate(test.images):
        paths.append(directory / f"{i:03d}.png")
        Image.fromarray(image).save(paths[-1])
    return paths, test.labels, test.images


def test_read_image_modes_hand_made(tmp_path):
    """Every mode becomes RGB uint8: transparency over white, grayscale repeated, palette
    expanded, 16-bit scaled (not clipped), EXIF orientation applied."""
    cases = {
        "rgba.png": (Image.new("RGBA", (3, 2), (10, 20, 30, 0)), [255, 255, 255]),
        "half.png": (Image.new("RGBA", (3, 2), (0, 0, 0, 128)), [127, 127, 127]),
        "gray.jpg": (Image.new("L", (5, 4), 200), [200, 200, 200]),
        "palette.png": (Image.new("RGB", (4, 4), (255, 0, 0)).convert("P"), [255, 0, 0]),
        "gray16.png": (Image.fromarray(np.full((2, 2), 257 * 100, np.uint16)), [100, 100, 100]),
    }
    for name, (image, pixel) in cases.items():
        image.save(tmp_path / name)
        out = imagefiles.read_image(tmp_path / name)
        assert out.dtype == np.uint8 and out.shape == image.size[::-1] + (3,), name
        np.testing.assert_allclose(out[0, 0], pixel, atol=2, err_msg=name)
    rotated = Image.new("RGB", (6, 2), (0, 0, 255))
    exif = rotated.getexif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to view
    rotated.save(tmp_path / "rotated.jpg", exif=exif)
    assert imagefiles.read_image(tmp_path / "rotated.jpg").shape == (6, 2, 3)


def test_centre_square():
    image = np.arange(3 * 5).reshape(3, 5, 1)
    np.testing.assert_array_equal(imagefiles.centre_square(image)[..., 0],
                                  [[1, 2, 3], [6, 7, 8], [11, 12, 13]])
    assert imagefiles.centre_square(image.transpose(1, 0, 2)).shape == (3, 3, 1)


@pytest.mark.numerics
def test_predict_agrees_with_evaluate(trained_run, subset_dir, tmp_path):
    """On test images saved as PNG, predict's top-1 is right exactly where evaluate's is, and
    its accuracy is evaluate's on the same images."""
    cwd, _ = trained_run
    paths, labels, _ = write_test_images(subset_dir, tmp_path / "images")
    result = run(["mobilenet_jax.predict", "--ckpt", str(cwd / "checkpoints" / "latest"),
                  str(tmp_path / "images"), "--json", str(tmp_path / "p.json")], cwd)
    assert result.returncode == 0, result.stderr[-2000:]
    predictions = json.loads((tmp_path / "p.json").read_text())
    assert [p["file"] for p in predictions] == [str(p) for p in paths]
    top1 = np.array([p["top_k"][0]["label"] for p in predictions])
    reference = classification.evaluate(ckpt_lib.resolve(cwd / "checkpoints" / "latest"), "test[:24]",
                                        subset_dir, offline=True)
    assert (top1 == labels).mean() == pytest.approx(reference["top1"])
    assert 0 < reference["top1"] < 1  # right and wrong predictions both checked
    for p in predictions:  # the schema, and probabilities that are probabilities
        assert len(p["top_k"]) == 5 and set(p) == {"file", "top_k"}
        probabilities = [r["probability"] for r in p["top_k"]]
        assert probabilities == sorted(probabilities, reverse=True) and sum(probabilities) <= 1
        for r in p["top_k"]:
            assert set(r) == {"label", "class", "probability"} and isinstance(r["label"], int)
            assert r["class"] == load_json(cwd / "config.json").data.class_names[r["label"]]
    # The printed form names the classes: CIFAR-100's fine labels of the subset.
    assert any(name in result.stdout for name in ("bee", "couch", "girl", "lawn_mower", "whale",
                                                  "wolf"))


@pytest.mark.numerics
def test_odd_sizes_and_modes_and_the_centre_crop(trained_run, subset_dir, tmp_path):
    """A wide image whose centre square is a test image is predicted as that image; odd sizes
    and modes are all predicted; input order is kept; top-k is clipped to the classes."""
    cwd, _ = trained_run
    _, _, images = write_test_images(subset_dir, tmp_path / "plain", count=2)
    wide = np.zeros((32, 50, 3), np.uint8)
    wide[:, 9:41] = images[0]
    Image.fromarray(wide).save(tmp_path / "wide.png")
    Image.fromarray(images[0]).save(tmp_path / "same.png")
    Image.fromarray(images[1]).resize((97, 61)).convert("L").save(tmp_path / "gray.jpg")
    Image.fromarray(images[1]).convert("RGBA").resize((7, 300)).save(tmp_path / "tall.png")
    Image.fromarray(images[1]).convert("P").save(tmp_path / "palette.png")
    files = ["wide.png", "gray.jpg", "same.png", "tall.png", "palette.png"]
    result = run(["mobilenet_jax.predict", "--ckpt", str(cwd), *files, "--top-k", "500",
                  "--json", "out.json"], tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    predictions = json.loads((tmp_path / "out.json").read_text())
    assert [p["file"] for p in predictions] == files
    assert all(len(p["top_k"]) == 100 for p in predictions)
    by_file = {p["file"]: p["top_k"] for p in predictions}
    assert by_file["wide.png"] == by_file["same.png"]
    total = sum(r["probability"] for r in by_file["gray.jpg"])
    # softmax divides each exp by their float32 sum: that sum's rounding and each division's
    assert total == pytest.approx(1.0, abs=gamma(100 + 1))


def test_unreadable_files_are_named_and_the_rest_predicted(trained_run, tmp_path):
    cwd, _ = trained_run
    Image.new("RGB", (40, 40), (0, 128, 255)).save(tmp_path / "good.jpg")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    result = run(["mobilenet_jax.predict", "--ckpt", str(cwd), "good.jpg", "broken.png",
                  "missing.jpg", "--json", "out.json"], tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 2 and "broken.png" in errors[0] and "missing.jpg" in errors[1]
    assert [p["file"] for p in json.loads((tmp_path / "out.json").read_text())] == ["good.jpg"]
    assert "good.jpg" in result.stdout


def test_predict_bad_input_is_one_line(trained_run, tmp_path):
    cwd, _ = trained_run
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    assert_one_line_error(run(["mobilenet_jax.predict", "a.png"], tmp_path), "--ckpt", "--tflite")
    assert_one_line_error(run(["mobilenet_jax.predict", "--ckpt", "nowhere", "a.png"], tmp_path),
                          "nowhere")
    assert_one_line_error(run(["mobilenet_jax.predict", "--ckpt", str(cwd), "--top-k", "0",
                               "a.png"], tmp_path), "--top-k")
    (tmp_path / "fake.tflite").write_bytes(b"not a model")
    assert_one_line_error(run(["mobilenet_jax.predict", "--tflite", "fake.tflite", "a.png"],
                              tmp_path), "metadata.json")
    (tmp_path / "metadata.json").write_text(json.dumps(
        {"config": json.loads((cwd / "config.json").read_text())}))
    assert_one_line_error(run(["mobilenet_jax.predict", "--tflite", "fake.tflite", "a.png"],
                              tmp_path), "fake.tflite", "export it again")
    (tmp_path / "fake.onnx").write_bytes(b"not a model")
    assert_one_line_error(run(["mobilenet_jax.predict", "--onnx", "fake.onnx", "a.png"],
                              tmp_path), "fake.onnx", "export it again")
    assert_one_line_error(run(["mobilenet_jax.predict", "--onnx", "fake.onnx", "--tflite",
                               "fake.tflite", "a.png"], tmp_path), "--onnx", "--tflite")
    result = run(["mobilenet_jax.predict", "--ckpt", str(cwd), "a.png", "--json",
                  str(tmp_path / "a.png" / "out.json")], tmp_path)
    assert_one_line_error(result, "--json")
    assert "a.png" in result.stdout  # the predictions were still printed
