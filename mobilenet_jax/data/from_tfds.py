"""TFDS image classification datasets, read into memory (`arrays.Split`) or streamed.

A dataset prepared as ArrayRecord is read through `tfds.data_source` (random access, without
TensorFlow): into memory, or streamed record by record (streaming.py) when `input` says so.
One prepared as TFRecord (or not yet downloaded) is read into memory through `tfds.load`,
i.e. TensorFlow, which only the `tfrecord` extra installs. Held in memory, the data is uint8
numpy arrays (CIFAR-100 is ~180 MB); what would not fit is refused before it is read
(`arrays.check_fits`).
"""
import concurrent.futures
import os
import socket
import urllib.parse
from typing import Callable, Optional

import numpy as np

from mobilenet_jax.data import streaming
from mobilenet_jax.data.arrays import DataError, Split, check_fits, too_large
from mobilenet_jax.data.images import square_image
from mobilenet_jax.errors import install_extra, short_reason
from mobilenet_jax.tensorflow_import import import_tensorflow


def resolve_data_dir(data_dir: Optional[str]) -> str:
    return os.path.expanduser(data_dir or os.environ.get("TFDS_DATA_DIR")
                              or "~/tensorflow_datasets")


def load(name: str, split: str, data_dir: Optional[str] = None, offline: bool = False,
         size: int = 32, input: str = "memory", workers: int = 0,
         say: Callable[[str], None] = print) -> Split | streaming.StreamedSplit:
    """A TFDS image classification split (downloaded on first use unless `offline`), held in
    memory or streamed as `input` says (streaming.chooses_streaming; only a dataset prepared
    as ArrayRecord streams). Images of a fixed square size are kept as they are; others
    become squares of side `size` (images.square_image); grayscale becomes RGB."""
    import tensorflow_datasets as tfds  # imported here: only reading a TFDS dataset needs it

    where = resolve_data_dir(data_dir)
    builder = _builder(tfds, name, where)
    random_access = _prepared_as_array_record(tfds, builder)
    if not (random_access or offline):
        _check_download_hosts(builder, name, where)
    if not random_access:
        _tensorflow_for_tfds(name, where)
    try:
        if random_access:
            source = tfds.data_source(name, split=split, data_dir=where, download=False)
            info = source.dataset_info
        else:
            dataset, info = tfds.load(name, split=split, data_dir=where, download=not offline,
                                      with_info=True)
    except Exception as e:  # tfds raises many kinds (absent data, network, split syntax)
        reason = short_reason(e)
        if offline:
            raise DataError(f"dataset {name!r} (split {split!r}) not found in {where} and "
                            f"--offline forbids downloading ({reason}); pass --data-dir DIR "
                            f"holding a prepared TFDS {name}, or drop --offline") from None
        raise DataError(f"could not load {name!r} split {split!r} from {where}: {reason}. Check "
                        f"--split and network access, or pass --data-dir DIR holding a prepared "
                        f"TFDS {name} (add --offline to never download)") from None
    image_key, label_key = _image_and_label(info, name)
    shape = info.features[image_key].shape
    fixed = shape[0] is not None and shape[0] == shape[1]
    side = shape[0] if fixed else size
    try:
        count = info.splits[split].num_examples
    except (KeyError, ValueError):  # no split metadata (tfds's mock data): nothing to check
        count = 0
    reason = too_large(count, side, f"{name!r} split {split!r}")
    if random_access and streaming.chooses_streaming(input, reason, say):
        return streaming.StreamedSplit(
            streaming.TfdsRecords(source, image_key, label_key), np.arange(len(source)), side,
            fixed, tuple(info.features[label_key].names), workers)
    if input == "stream" and not random_access:
        raise DataError(f"{name!r} in {where} is not prepared as ArrayRecord, which streaming "
                        f"reads; prepare it so (tfds build {name} --file_format=array_record, "
                        "or tfds convert_format for a prepared copy) or drop --input stream")
    check_fits(count, side, f"{name!r} split {split!r}")
    if fixed and not random_access:  # read in large batches and concatenate
        pairs = dataset.map(lambda ex: (ex[image_key], ex[label_key]))
        chunks = list(tfds.as_numpy(pairs.batch(8192)))
        images = np.concatenate([c[0] for c in chunks]) if chunks else np.zeros((0, side, side, 3))
        labels = np.concatenate([c[1] for c in chunks]) if chunks else np.zeros((0,))
    else:  # one by one, images of other sizes made square as they are read
        pairs = (_examples(source, image_key, label_key) if random_access else
                 tfds.as_numpy(dataset.map(lambda ex: (ex[image_key], ex[label_key]))))
        read = [(image if fixed else square_image(image, size), label) for image, label in pairs]
        images = np.stack([r[0] for r in read]) if read else np.zeros((0, side, side, 3))
        labels = np.array([r[1] for r in read])
    if images.shape[-1] == 1:
        images = np.repeat(images, 3, axis=-1)
    if not len(labels):
        raise DataError(f"split {split!r} of {name!r} in {where} is empty; check --split")
    return Split(images.astype(np.uint8), labels.astype(np.int32),
                 tuple(info.features[label_key].names))


def _builder(tfds, name: str, where: str):
    """tfds's builder of `name` in `where` (it reads the metadata without TensorFlow), or None
    where tfds cannot make one: `tfds.load` then reports what is wrong with the name or dir."""
    try:
        return tfds.builder(name, data_dir=where)
    except Exception:  # noqa: BLE001 - tfds raises many kinds
        return None


def _prepared_as_array_record(tfds, builder) -> bool:
    """Whether `builder`'s dataset is prepared as ArrayRecord; anything else goes through
    `tfds.load`."""
    try:
        file_format = builder.info.file_format
    except Exception:  # noqa: BLE001 - no builder, or metadata tfds cannot read
        return False
    return file_format == tfds.core.file_adapters.FileFormat.ARRAY_RECORD


def _check_download_hosts(builder, name: str, where: str, timeout_s: float = 5.0) -> None:
    """Where `name` is not prepared in `where`, tfds would download it, retrying for minutes
    when there is no network: say so at once if a host it downloads from cannot be resolved."""
    try:
        if builder is None or builder.is_prepared():
            return
        hosts = sorted({urllib.parse.urlparse(url).hostname for url in builder.url_infos or {}})
    except Exception:  # noqa: BLE001 - tfds.load says what is wrong
        return
    for host in filter(None, hosts):
        resolving = concurrent.futures.ThreadPoolExecutor(1)
        try:
            resolving.submit(socket.getaddrinfo, host, 443).result(timeout=timeout_s)
            continue
        except concurrent.futures.TimeoutError:
            reason = f"no answer in {timeout_s:.0f} s"
        except OSError as e:
            reason = short_reason(e)
        finally:
            resolving.shutdown(wait=False)
        raise DataError(f"{name!r} is not in {where} and {host}, where it downloads from, cannot "
                        f"be resolved ({reason}): no network? Pass --data-dir DIR holding a "
                        f"prepared TFDS {name}, or train on your own images with "
                        "--image-folder DIR")


def _examples(source, image_key: str, label_key: str, chunk: int = 4096):
    """(image, label) of every record of a random-access source, read `chunk` at a time."""
    for start in range(0, len(source), chunk):
        for example in source.__getitems__(range(start, min(len(source), start + chunk))):
            yield example[image_key], example[label_key]


def _tensorflow_for_tfds(name: str, where: str) -> None:
    """Import TensorFlow for `tfds.load`; where it is not installed, say which extra brings it."""
    import_tensorflow(lambda: DataError(
        f"{name!r} in {where} is not prepared as ArrayRecord, and reading it as TFRecord or "
        f"downloading it needs TensorFlow: {install_extra('tfrecord')} (or pass --data-dir DIR "
        f"holding {name} prepared as ArrayRecord)"))


def _image_and_label(info, name: str) -> tuple[str, str]:
    """The names of the dataset's image feature and class-label feature."""
    import tensorflow_datasets as tfds
    features = info.features
    images = [k for k, f in features.items() if isinstance(f, tfds.features.Image)]
    labels = [k for k, f in features.items() if isinstance(f, tfds.features.ClassLabel)]
    if not images or not labels:
        raise DataError(f"{name!r} is not an image classification dataset: it needs an image "
                        f"feature and a class-label feature, and has {dict(features)!r:.200}")
    return images[0], ("label" if "label" in labels else labels[0])
