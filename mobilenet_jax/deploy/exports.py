"""A checkpoint as TFLite files for phones (float32, and full-integer int8), an ONNX model for
servers (deploy/onnx.py) and a serialized StableHLO function for JAX code (deploy/stablehlo.py),
with labels.txt, metadata.json, and parity.json: each model's logits and top-1 against JAX's on
the checkpoint's test split, accuracies, file sizes and latencies. The int8 model is calibrated
on training images of the checkpoint's dataset.
"""
import contextlib
import functools
import json
import os
import pathlib
from typing import Callable, ContextManager

import jax
import numpy as np

from mobilenet_jax.benchmarks.timing import time_steps
from mobilenet_jax.config import Config
from mobilenet_jax.core import restore, steps
from mobilenet_jax.data import sources
from mobilenet_jax.data.arrays import Split
from mobilenet_jax.deploy import onnx, stablehlo, tflite
from mobilenet_jax.deploy.predictor import CheckpointModel
from mobilenet_jax.errors import write_error_line

FLOAT_MODEL, INT8_MODEL = "model.tflite", "model_int8.tflite"
ONNX_MODEL, STABLEHLO_MODEL = "model.onnx", "model.stablehlo"
FORMATS = ("tflite", "onnx", "stablehlo")
LATENCY_RUNS = 100
ANY_BATCH = 64  # the larger batch latency is measured at, for models that take any batch


def calibration_images(config: Config, count: int, data_dir, offline: bool,
                       batch: int = 1) -> list:
    """`count` training images of the checkpoint's dataset (a fixed random choice),
    standardised as the network's inputs, in (batch, H, W, 3) arrays (a remainder left out)."""
    train = sources.load_split(config, config.data.split, data_dir, offline)
    chosen = np.random.default_rng([config.start.seed, 0xCA1]).permutation(len(train))[:count]
    images = steps.float32_input(train.images_at(np.sort(chosen)), config)
    return [images[i:i + batch] for i in range(0, len(images) - batch + 1, batch)]


def metadata(config: Config, step_dir, step: int, formats: tuple, int8: bool,
             batch: int = 1) -> dict:
    r = config.data.resolution
    tflite_files = "tflite" in formats
    return {
        "model": FLOAT_MODEL if tflite_files else None,
        "model_int8": INT8_MODEL if tflite_files and int8 else None,
        "onnx": {
            "file": ONNX_MODEL, "input": "images", "input_shape": ["batch", r, r, 3],
            "output": "logits", "opset": onnx.OPSET,
        } if "onnx" in formats else None,
        "stablehlo": {
            "file": STABLEHLO_MODEL, "input_shape": ["batch", r, r, 3],
            "platforms": list(stablehlo.PLATFORMS), "jax_version": jax.__version__,
            "load": "from jax import export; "
                    "export.deserialize(bytearray(open(file, 'rb').read())).call(images)",
        } if "stablehlo" in formats else None,
        "input": {"shape": [batch, r, r, 3], "layout": "NHWC", "channels": "RGB",
                  "dtype": "float32 (int8 for model_int8: q = round(x / scale) + zero_point, "
                           "both stored in the model)",
                  "preprocessing": "centre square crop; bilinear (antialiased) resize to "
                                   + (f"{config.data.image_size}x{config.data.image_size}, then " if
                                      config.data.image_size != r else "")
                                   + f"{r}x{r}; pixels / 255; (x - mean) / std per channel",
                  "mean": list(config.data.mean), "std": list(config.data.std)},
        "output": {"shape": [batch, config.network.num_classes], "meaning": "logits (softmax gives "
                   "probabilities)", "labels": "labels.txt, line i is label i"},
        "class_names": list(config.label_names()),
        "width_multiplier": config.network.width_multiplier, "resolution": r,
        "source": {"checkpoint": str(step_dir), "step": step},
        "config": config.to_dict(),
    }


def median_ms(fn, runs: int = LATENCY_RUNS) -> float:
    """Median milliseconds of `fn()` over `runs` calls after one warm-up (and compilation)."""
    timing = time_steps(fn, lambda _: None, warmup=1, min_steps=runs, min_time_s=0.0)
    return 1e3 * timing["median_step_s"]


def parity(model: CheckpointModel, runners: dict, test: Split, config: Config) -> dict:
    """Each exported model against the checkpoint in JAX, on the test images."""
    images = steps.float32_input(test.images_at(np.arange(len(test))), config)
    reference = model(images)
    top1 = reference.argmax(-1)

    def batch_of(n: int) -> np.ndarray:  # the test images repeated if fewer than n
        return np.resize(images, (n, *images.shape[1:]))

    def jax_forward(n: int) -> Callable:
        x = batch_of(n)
        return lambda: jax.block_until_ready(model.forward(model.variables, x))

    jax_ms = {str(n): median_ms(jax_forward(n)) for n in (1, ANY_BATCH)}
    result = {"images": len(test), "jax": {"top1": float((top1 == test.labels).mean()),
                                          "latency_ms": jax_ms["1"],
                                          "latency_ms_at_batch": jax_ms}}
    logits = {name: runner(images) for name, runner in runners.items()}
    for name, runner in runners.items():
        result[name] = {
            "top1": float((logits[name].argmax(-1) == test.labels).mean()),
            "top1_agreement_with_jax": float((logits[name].argmax(-1) == top1).mean()),
            "max_abs_logit_difference": float(np.abs(logits[name] - reference).max()),
            "logit_range": float(reference.max() - reference.min()),
        }
        # a fixed-batch model at its batch, a model of any batch size at one image and ANY_BATCH
        batches = (runner.batch_size,) if runner.fixed_batch else (1, ANY_BATCH)
        ms = [median_ms(functools.partial(runner.invoke, batch_of(b))) for b in batches]
        result[name].update(latency_ms=ms[0], latency_batch=batches[0],
                            latency_ms_at_batch={str(b): t for b, t in zip(batches, ms)})
        result[name]["max_abs_logit_difference_over_range"] = (
            result[name]["max_abs_logit_difference"] / result[name]["logit_range"])
    if "int8" in logits and "float" in logits:
        result["int8"]["top1_agreement_with_float"] = float(
            (logits["int8"].argmax(-1) == logits["float"].argmax(-1)).mean())
    return result


def export(step_dir, out: pathlib.Path, int8: bool = False, calibration: int = 500,
           parity_images: int | None = None, data_dir=None, offline: bool = False,
           say=print, quiet: Callable[[], ContextManager] = contextlib.nullcontext,
           formats: tuple = ("tflite",), batch: int = 1, image_folder=None) -> dict:
    """Write the files of `formats` (FORMATS) of the checkpoint in `step_dir` into `out` and
    measure them; the report. The TFLite models take `batch` images at a time. `quiet` runs the
    converter and the interpreters (see `tflite.convert`). The data (parity, calibration) is
    the checkpoint's run's, or `image_folder`, a folder of the same classes."""
    if int8 and "tflite" not in formats:
        raise ValueError("--int8 makes a TFLite model: add tflite to --format")
    if int8 and calibration < batch:
        raise ValueError(f"--calibration-images ({calibration}) must be at least --batch "
                         f"({batch}): the int8 model is calibrated a batch at a time")
    if "stablehlo" in formats:
        stablehlo.check_serializer()
    if "onnx" in formats:
        onnx.check_installed()
    restored = restore.restore(step_dir)
    state = restored.state
    config = restored.config.replace(
        image_folder=image_folder or restored.config.places.image_folder)
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / "labels.txt").write_text("".join(f"{n}\n" for n in config.label_names()))
    except OSError as e:
        raise ValueError(write_error_line(e, f"write to {out}", "--out")) from None
    test = None
    if parity_images != 0:  # read the data before the slow conversion: absent data fails fast
        test = sources.load_split(config, "test", data_dir, offline)
        test = test.take(np.arange(min(parity_images or len(test), len(test))))
    calibration_set = (calibration_images(config, calibration, data_dir, offline, batch)
                       if int8 else None)

    variables = jax.device_get(state.eval_variables())
    files, models = {}, {}
    if "tflite" in formats:
        files["float"] = out / FLOAT_MODEL
        models["float"] = tflite.convert(config, variables, quiet=quiet, batch=batch)
    if int8:
        files["int8"] = out / INT8_MODEL
        models["int8"] = tflite.convert(config, variables, calibration_set, quiet, batch)
    if "onnx" in formats:
        files["onnx"] = out / ONNX_MODEL
        models["onnx"] = onnx.convert(config, variables, quiet)
    if "stablehlo" in formats:
        files["stablehlo"] = out / STABLEHLO_MODEL
        models["stablehlo"] = stablehlo.serialize(config, variables)
    try:
        for name, model in models.items():
            files[name].write_bytes(model)
        (out / "metadata.json").write_text(json.dumps(
            metadata(config, step_dir, restored.step, formats, int8, batch), indent=2) + "\n")
    except OSError as e:
        raise ValueError(write_error_line(e, f"write to {out}", "--out")) from None
    sizes = {name: os.path.getsize(path) for name, path in files.items()}
    say(f"wrote {', '.join(f'{p} ({sizes[n] / 1024:.0f} KiB)' for n, p in files.items())}, "
        f"labels.txt and metadata.json")

    report = {"checkpoint": str(step_dir), "step": restored.step,
              "dataset": config.places.image_folder or config.data.dataset,
              "file_bytes": sizes, "threads": os.cpu_count()}
    if int8:
        report["int8_size_over_float"] = sizes["int8"] / sizes["float"]
    if test is not None:
        runners = {name: _runner(name, model, quiet) for name, model in models.items()}
        if "float" in runners:
            report["ops"] = sorted(set(runners["float"].ops))
        report["parity"] = parity(CheckpointModel(state, config), runners, test, config)
        (out / "parity.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def _runner(name: str, model: bytes, quiet: Callable[[], ContextManager]):
    if name == "stablehlo":
        return stablehlo.Runner(model)
    if name == "onnx":
        return onnx.Runner(model, num_threads=os.cpu_count())
    return tflite.Runner(model, num_threads=os.cpu_count(), quiet=quiet)
