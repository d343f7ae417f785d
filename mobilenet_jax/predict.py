"""Classify image files with a trained checkpoint, or with a model made by `export`.

    python -m mobilenet_jax.predict --ckpt runs/a/checkpoints/latest cat.jpg photos/
    python -m mobilenet_jax.predict --tflite export/model_int8.tflite cat.jpg

Reads PNG and JPEG of any size and mode; a directory means every such file in it. Each image
becomes a square of the size the run's training images were stored at (imagefiles.py says
how), then the network's input exactly as in training (`steps.normalize`). Class names and
normalisation come from the checkpoint (or the export's metadata.json): no dataset needed.
"""
import json
import pathlib
import sys
from typing import Callable, Optional

import jax
import numpy as np

from mobilenet_jax import checkpoint as ckpt_lib
from mobilenet_jax import cli, evaluate, imagefiles, steps, tflite
from mobilenet_jax.config import Config

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
    square = imagefiles.square_image(image, config.image_size)
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
    z = logits.astype(np.float64) - logits.max()
    probabilities = np.exp(z) / np.exp(z).sum()
    order = np.argsort(-probabilities, kind="stable")[:k]
    return [{"label": int(c), "class": class_names[c], "probability": float(probabilities[c])}
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
    names = config.label_names()
    return [{"file": str(path), "top_k": top_k(row, k, names)}
            for path, row in zip(readable, logits)], problems


def load_classifier(ckpt: Optional[str], tflite_path: Optional[str]) -> tuple[Callable, Config]:
    """The model to predict with and the config that says how to feed it."""
    if tflite_path:
        metadata_path = pathlib.Path(tflite_path).parent / "metadata.json"
        try:
            config = Config.from_dict(json.loads(metadata_path.read_text())["config"])
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{metadata_path} (written by export beside the model) is missing "
                             f"or unreadable ({type(e).__name__}: {e}); export the model "
                             "again or keep metadata.json beside it") from None
        return tflite.Runner(str(tflite_path)), config
    state, config, _, _ = evaluate.load_state(ckpt_lib.resolve(ckpt))
    return CheckpointModel(state, config), config


def print_results(results: list) -> None:
    for result in results:
        print(result["file"])
        for r in result["top_k"]:
            named = r["class"] != str(r["label"])
            print(f"  {r['probability']:7.2%}  {r['class']}" + (f" ({r['label']})" if named else ""))


def main(argv=None):
    parser = cli.parser("mobilenet_jax.predict", __doc__)
    parser.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR")
    parser.add_argument("--ckpt", help="run workdir, checkpoints dir, latest, or step dir")
    parser.add_argument("--tflite", metavar="MODEL", help="a .tflite file written by export "
                        "(its metadata.json beside it) to run instead of a checkpoint")
    parser.add_argument("--top-k", type=int, default=5, help="classes shown per image (default: 5)")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = parser.parse_args(argv)
    problems = []
    try:
        if (args.ckpt is None) == (args.tflite is None):
            raise ValueError("pass one of --ckpt CKPT (a trained run) or --tflite MODEL "
                             "(an exported model)")
        if args.top_k < 1:
            raise ValueError(f"--top-k must be >= 1, got {args.top_k}")
        files, problems = image_files(args.inputs)
        classify, config = load_classifier(args.ckpt, args.tflite)
        if config.class_names == ():
            print("note: the checkpoint stores no class names (trained before they were "
                  "stored); showing label numbers", file=sys.stderr)
        results, unreadable = predict(files, classify, config, min(args.top_k, config.num_classes))
        problems += unreadable
    except (ValueError, ckpt_lib.CheckpointError, tflite.TFLiteError) as e:
        cli.fail(str(e))
    print_results(results)
    if args.json:
        try:
            with open(args.json, "w") as f:
                json.dump(results, f, indent=2)
                f.write("\n")
        except OSError as e:
            problems.append(cli.write_error_line(e, f"write {args.json}", "--json"))
    for line in problems:
        print(f"error: {line}", file=sys.stderr)
    if problems:
        raise SystemExit(2)


if __name__ == "__main__":
    main()
