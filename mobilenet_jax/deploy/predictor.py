"""Image files -> the k most probable classes, with a checkpoint in JAX or an exported model.

Each image becomes a square of the size the run's training images were stored at
(data/images.py says how), then the network's input exactly as in training
(`steps.float32_input`). Class names and normalisation come from the checkpoint (or the
export's metadata.json): no dataset needed.
"""
import contextlib
import json
import pathlib
from typing import Callable, ContextManager, Optional

import jax
import numpy as np

from mobilenet_jax.config import Config
from mobilenet_jax.core import checkpoint, restore, steps
from mobilenet_jax.data import images as imagefiles
from mobilenet_jax.deploy import onnx, tflite
from mobilenet_jax.models.mobilenet import probabilities

BATCH = 64  # images per jitted forward pass (the last batch is padded)


def image_files(inputs) -> tuple[list, list]:
    """(files, problems): the paths named, with each directory replaced by the images in it
    (sorted); a line for each directory without images."""
    files, problems = [], []
    for name in inputs:
        path = pathlib.Path(name)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if imagefiles.is_image_file(p))
            if not found:
                problems.append(f"{path} holds no {'/'.join(imagefiles.IMAGE_SUFFIXES)} files")
            files += found
        else:
            files.append(path)
    return files, problems


def model_input(image: np.ndarray, config: Config) -> np.ndarray:
    """One uint8 RGB image of any size -> the network's input (1, res, res, 3) float32."""
    square = imagefiles.square_image(image, config.data.image_size)
    return steps.float32_input(square[None], config)


class CheckpointModel:
    """The network of a checkpoint in JAX: standardised images (N, res, res, 3) -> logits."""

    def __init__(self, state, config: Config):
        self.variables = state.eval_variables()
        self.config = config
        self.forward = jax.jit(lambda v, x: state.apply_fn(v, x, train=False))

    def __call__(self, images: np.ndarray) -> np.ndarray:
        out = []
        for start in range(0, len(images), BATCH):
            chunk = images[start:start + BATCH]
            padded = np.concatenate([chunk, np.zeros((BATCH - len(chunk),) + chunk.shape[1:],
                                                     chunk.dtype)])
            out.append(np.asarray(self.forward(self.variables, padded), np.float32)[:len(chunk)])
        return np.concatenate(out)


def top_k(logits: np.ndarray, k: int, class_names: tuple) -> list:
    """[{"label", "class", "probability"}, ...] of the k most probable classes."""
    p = np.asarray(probabilities(logits))
    order = np.argsort(-p, kind="stable")[:k]
    return [{"label": int(c), "class": class_names[c], "probability": float(p[c])}
            for c in order]


def predict(files, classify: Callable, config: Config, k: int) -> tuple[list, list]:
    """(results in input order, lines for the files that could not be read)."""
    readable, inputs, problems = [], [], []
    for path in files:
        try:
            inputs.append(model_input(imagefiles.read_image(path), config))
            readable.append(path)
        except imagefiles.ImageError as e:
            problems.append(str(e))
    if not readable:
        return [], problems
    logits = classify(np.concatenate(inputs))
    if logits.shape[1:] != (config.network.num_classes,):
        raise ValueError(f"the model gives {logits.shape[-1]} logits an image where its "
                         f"metadata.json says {config.network.num_classes} classes; keep the "
                         "metadata.json that export wrote beside the model")
    names = config.label_names()
    return [{"file": str(path), "top_k": top_k(row, k, names)}
            for path, row in zip(readable, logits)], problems


def load_classifier(ckpt: Optional[str] = None, tflite_path: Optional[str] = None,
                    onnx_path: Optional[str] = None,
                    quiet: Callable[[], ContextManager] = contextlib.nullcontext
                    ) -> tuple[Callable, Config]:
    """The model to predict with (a checkpoint, or one exported file with export's
    metadata.json beside it) and the config that says how to feed it (`quiet`: see
    `tflite.Runner`)."""
    exported = tflite_path or onnx_path
    if exported is None:
        model = restore.restore(checkpoint.resolve(ckpt))
        return CheckpointModel(model.state, model.config), model.config
    metadata_path = pathlib.Path(exported).parent / "metadata.json"
    try:
        config = Config.from_dict(json.loads(metadata_path.read_text())["config"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{metadata_path} (written by export beside the model) is missing "
                         f"or unreadable ({type(e).__name__}: {e}); export the model "
                         "again or keep metadata.json beside it") from None
    if tflite_path:
        return tflite.Runner(str(tflite_path), quiet=quiet), config
    return onnx.Runner(str(onnx_path)), config
