"""Input pipeline: the real tfds path (mocked and real subset), augmentation, order, shares."""
import socket

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import shared_data
from numerics import assert_within, gamma

from mobilenet_jax.config import CIFAR100_MEAN, CIFAR100_STD
from mobilenet_jax.data import arrays, augment, from_tfds


def test_real_loading_path_with_tfds_mock_data():
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=40, policy=tfds.testing.MockPolicy.USE_CODE):
        split = from_tfds.load("cifar100", "train", "/nonexistent/tfds", offline=True)
    assert split.images.shape == (40, 32, 32, 3) and split.images.dtype == np.uint8
    assert split.labels.dtype == np.int32 and 0 <= split.labels.min() <= split.labels.max() < 100
    assert len(split.class_names) == 100


def test_offline_missing_dataset_is_a_data_error_naming_the_dir(tmp_path):
    with pytest.raises(arrays.DataError, match=str(tmp_path)) as e:
        from_tfds.load("cifar100", "train", str(tmp_path), offline=True)
    assert "--offline" in str(e.value) and "--data-dir" in str(e.value)


def _unresolvable(host, *args):
    raise socket.gaierror(-2, f"Name or service not known: {host}")


def test_download_without_a_resolvable_host_is_refused_at_once(tmp_path, monkeypatch):
    """tfds would retry the download for minutes; the host it names is checked first."""
    monkeypatch.setattr(socket, "getaddrinfo", _unresolvable)
    with pytest.raises(arrays.DataError) as e:
        from_tfds.load("cifar100", "train", str(tmp_path))
    assert "cannot be resolved" in str(e.value) and "--data-dir" in str(e.value)
    assert "--image-folder" in str(e.value)


def test_prepared_data_needs_no_network(subset_dir, monkeypatch):
    monkeypatch.setattr(socket, "getaddrinfo", _unresolvable)
    assert len(from_tfds.load("cifar100", "test", subset_dir)) == 600


def test_real_subset_loads_with_split_expressions(subset_dir):
    test = from_tfds.load("cifar100", "test", subset_dir, offline=True)
    assert len(test) == 600
    assert sorted(set(test.labels.tolist())) == [6, 25, 35, 41, 95, 97]
    assert np.bincount(test.labels, minlength=100)[[6, 25, 35, 41, 95, 97]].tolist() == [100] * 6
    half = from_tfds.load("cifar100", "train[:50%]", subset_dir, offline=True)
    assert len(half) == 1500


def test_array_record_subset_reads_the_records_the_tfrecord_one_holds(subset_dir,
                                                                      subset_array_record_dir):
    """The same records prepared as ArrayRecord (read by random access, without TensorFlow)
    and as TFRecord (read through TensorFlow): the same images, labels and order."""
    for split in ("test", "train[:10%]"):
        array_record = from_tfds.load("cifar100", split, subset_array_record_dir, offline=True)
        tfrecord = from_tfds.load("cifar100", split, subset_dir, offline=True)
        assert len(array_record) == (600 if split == "test" else 300)
        np.testing.assert_array_equal(array_record.images, tfrecord.images)
        np.testing.assert_array_equal(array_record.labels, tfrecord.labels)
        assert array_record.class_names == tfrecord.class_names


@pytest.mark.numerics
def test_normalisation_hand_computed():
    """(pixel / 255 - mean) / std in float32 against the exact value: the rounding of pixel / 255,
    of the mean and of their difference (at most gamma(2) of |pixel / 255| + mean, divided by
    std), then of std and of the division (gamma(3) of the result, covering the first's
    higher-order terms)."""
    pixels = jnp.array([[[[0, 255, 128]]]], jnp.uint8)
    for mean, std in ((CIFAR100_MEAN, CIFAR100_STD), ((0.5, 0.5, 0.5), (0.25, 0.5, 1.0))):
        out = np.asarray(augment.normalize(pixels, 1, mean=mean, std=std))[0, 0, 0]
        scaled, mean, std = np.array([0, 1, 128 / 255]), np.array(mean), np.array(std)
        expected = (scaled - mean) / std
        assert_within(out, expected, gamma(2) * (scaled + mean) / std + gamma(3) * abs(expected))
    assert expected.tolist() == [-2.0, 1.0, (128 / 255 - 0.5) / 1.0]  # by hand
    default = np.asarray(augment.normalize(pixels, resolution=1))[0, 0, 0]
    assert default[0] == pytest.approx(-0.5071 / 0.2673, rel=gamma(3))  # CIFAR-100's own


def test_normalised_real_images_are_roughly_standardised(subset_dir):
    """On real CIFAR-100 pixels (6 classes only, so only roughly) the published statistics give
    per-channel mean near 0 and std near 1; a missing /255 or a wrong std would not."""
    images = from_tfds.load("cifar100", "train", subset_dir, offline=True).images
    x = np.asarray(augment.normalize(jnp.asarray(images), 32))
    assert np.all(np.abs(x.mean(axis=(0, 1, 2))) < 0.3)
    assert np.all(np.abs(x.std(axis=(0, 1, 2)) - 1) < 0.2)


def test_resize_follows_resolution():
    images = jnp.zeros((2, 32, 32, 3), jnp.uint8)
    assert augment.normalize(images, 48).shape == (2, 48, 48, 3)
    assert augment.normalize(images, 32, dtype=jnp.bfloat16).dtype == jnp.bfloat16


def _all_crops_and_flips(image):
    padded = np.pad(image, ((4, 4), (4, 4), (0, 0)))
    for dy in range(9):
        for dx in range(9):
            crop = padded[dy:dy + 32, dx:dx + 32]
            yield crop
            yield crop[:, ::-1]


def test_augment_is_a_crop_or_flipped_crop_of_the_same_image():
    rng = np.random.default_rng(0)
    images = rng.integers(1, 256, size=(16, 32, 32, 3), dtype=np.uint8)
    out = np.asarray(augment.augment(jnp.asarray(images), jax.random.key(3)))
    assert out.shape == images.shape and out.dtype == np.uint8
    flipped = 0
    for original, augmented in zip(images, out):  # label alignment: image i stays image i
        matches = [np.array_equal(augmented, c) for c in _all_crops_and_flips(original)]
        assert any(matches)
        flipped += matches.index(True) % 2
    assert 0 < flipped < 16  # both flips occur (fails with probability 2**-15)


def test_augment_and_order_are_deterministic_in_the_seed():
    images = jnp.asarray(np.random.default_rng(1).integers(0, 256, (8, 32, 32, 3), np.uint8))
    a = augment.augment(images, jax.random.key(7))
    np.testing.assert_array_equal(a, augment.augment(images, jax.random.key(7)))
    assert not np.array_equal(a, augment.augment(images, jax.random.key(8)))
    split = arrays.Split(np.asarray(images).repeat(4, 0), np.arange(32, dtype=np.int32))
    first = [b["label"] for b in arrays.train_batches(split, 8, seed=5, epoch=2)]
    again = [b["label"] for b in arrays.train_batches(split, 8, seed=5, epoch=2)]
    other = [b["label"] for b in arrays.train_batches(split, 8, seed=5, epoch=3)]
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    assert sorted(np.concatenate(first).tolist()) == list(range(32))  # a permutation


def test_batches_keep_images_and_labels_aligned_and_resume_mid_epoch():
    images = np.arange(20, dtype=np.uint8)[:, None, None, None] * np.ones((1, 2, 2, 3), np.uint8)
    split = arrays.Split(images, np.arange(20, dtype=np.int32))
    batches = list(arrays.train_batches(split, 6, seed=0, epoch=0))
    assert len(batches) == 3  # 20 // 6, remainder dropped
    for b in batches:
        np.testing.assert_array_equal(b["image"][:, 0, 0, 0], b["label"])
    resumed = list(arrays.train_batches(split, 6, seed=0, epoch=0, start=1))
    np.testing.assert_array_equal([b["label"] for b in resumed], [b["label"] for b in batches[1:]])


def test_process_shares_make_up_the_global_batch():
    split = arrays.Split(np.zeros((40, 1, 1, 3), np.uint8), np.arange(40, dtype=np.int32))
    whole = list(arrays.train_batches(split, 8, seed=1, epoch=0))
    shares = [list(arrays.train_batches(split, 8, seed=1, epoch=0, process_index=p,
                                      process_count=2)) for p in range(2)]
    for b, s0, s1 in zip(whole, *shares):
        np.testing.assert_array_equal(b["label"], np.concatenate([s0["label"], s1["label"]]))


def test_eval_batches_cover_every_example_once_with_mask():
    split = arrays.Split(np.zeros((10, 1, 1, 3), np.uint8), np.arange(10, dtype=np.int32))
    batches = list(arrays.eval_batches(split, 4))
    assert len(batches) == 3 and all(len(b["label"]) == 4 for b in batches)
    seen = np.concatenate([b["label"][b["mask"] > 0] for b in batches])
    np.testing.assert_array_equal(seen, np.arange(10))


def test_validation_split_is_disjoint_and_fixed_by_seed():
    split = arrays.Split(np.zeros((100, 1, 1, 3), np.uint8), np.arange(100, dtype=np.int32))
    train, val = arrays.split_validation(split, 0.2, seed=3)
    assert len(train) == 80 and len(val) == 20
    assert not set(train.labels) & set(val.labels)
    np.testing.assert_array_equal(val.labels, arrays.split_validation(split, 0.2, seed=3)[1].labels)
    assert not np.array_equal(val.labels, arrays.split_validation(split, 0.2, seed=4)[1].labels)
    assert arrays.split_validation(split, 0.0, seed=3)[1] is None


def test_a_missing_subset_skips_in_a_checkout_and_fails_under_ci(tmp_path, monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="absent"):
        shared_data.prepared_subset(tmp_path, "MOBILENET_JAX_SUBSET_DIR")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI must test with it"):
        shared_data.prepared_subset(tmp_path, "MOBILENET_JAX_SUBSET_DIR")
    (tmp_path / "cifar100").mkdir()
    assert shared_data.prepared_subset(tmp_path, "MOBILENET_JAX_SUBSET_DIR") == str(tmp_path)
