"""TFLite models of a trained network: conversion (float32 and full-integer int8) and running.

The converted function is the network in the `reference` kernel formulation (nn.Conv for
every conv, depthwise through feature_group_count), which jax2tf lowers to TFLite's CONV_2D
and DEPTHWISE_CONV_2D; the `cpu` formulation's 1x1 convs as rank-4 matmuls do not convert.
Parameters are the same for every formulation, so every checkpoint converts.

A model takes a fixed batch of standardised images (`batch`, 1 unless export's `--batch N`),
float32 (batch, resolution, resolution, 3) — int8 for the quantised model, with the scale and
zero point stored in it — and returns their logits.
"""
import contextlib
from typing import Callable, ContextManager, Iterable, Optional

import numpy as np

from mobilenet_jax.config import Config
from mobilenet_jax.errors import install_extra, short_reason
from mobilenet_jax.models.mobilenet import MobileNetV1
from mobilenet_jax.tensorflow_import import import_tensorflow


class TFLiteError(Exception):
    """A model cannot be converted, loaded or run; the message says why and what to do."""


def _tensorflow():
    return import_tensorflow(lambda: TFLiteError(
        "exporting needs TensorFlow's TFLite converter; install the 'export' extra "
        f"({install_extra('export')})"))


def convert(config: Config, variables: dict, calibration: Optional[Iterable[np.ndarray]] = None,
            quiet: Callable[[], ContextManager] = contextlib.nullcontext, batch: int = 1) -> bytes:
    """The network of `config` with `variables` as a TFLite flatbuffer taking `batch` images
    at a time: float32, or with `calibration` (standardised images, each input a (batch, H, W,
    3) float32 array) full-integer int8. The converter logs its every pass; `quiet` (e.g.
    `process.output_dropped`) runs it."""
    tf = _tensorflow()
    from jax.experimental import jax2tf
    model = MobileNetV1(**config.replace(kernels="reference", dtype="float32").model_kwargs())
    variables = {k: v for k, v in variables.items() if k in ("params", "batch_stats")}
    forward = tf.function(
        jax2tf.convert(lambda x: model.apply(variables, x, train=False), with_gradient=False),
        autograph=False,
        input_signature=[tf.TensorSpec((batch, config.data.resolution, config.data.resolution, 3),
                                       tf.float32)])
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [forward.get_concrete_function()], forward)
    if calibration is not None:
        images = list(calibration)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([x] for x in images)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    try:
        with quiet():
            return converter.convert()
    except Exception as e:  # noqa: BLE001 - the converter raises many kinds
        raise TFLiteError(f"the TFLite converter failed: {short_reason(e, 300)}") from None


def _interpreter_class() -> Callable:
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        try:
            Interpreter = _tensorflow().lite.Interpreter
        except (TFLiteError, AttributeError):
            raise TFLiteError("running a .tflite model needs ai-edge-litert (or TensorFlow's "
                              f"interpreter); install it with {install_extra('export')}") from None
    return Interpreter


class Runner:
    """One TFLite model in the LiteRT interpreter: standardised float32 images -> logits."""

    fixed_batch = True  # it takes `batch_size` images an input

    def __init__(self, model: bytes | str, num_threads: Optional[int] = None,
                 quiet: Callable[[], ContextManager] = contextlib.nullcontext):
        """`quiet` runs the interpreter's creation, which logs the delegate it made."""
        Interpreter = _interpreter_class()
        what = model if isinstance(model, str) else "the converted model"
        try:
            with quiet():
                if isinstance(model, str):
                    self.interpreter = Interpreter(model_path=model, num_threads=num_threads)
                else:
                    self.interpreter = Interpreter(model_content=model, num_threads=num_threads)
                self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as e:
            raise TFLiteError(f"{what} is not a readable TFLite model ({short_reason(e)}); "
                              "export it again") from None
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]

    @property
    def input_shape(self) -> tuple:
        return tuple(int(d) for d in self.input["shape"])

    @property
    def batch_size(self) -> int:
        """How many images one input holds (the model's fixed batch)."""
        return self.input_shape[0]

    @property
    def ops(self) -> list:
        """The model's operators, in execution order."""
        return [op["op_name"] for op in self.interpreter._get_ops_details()]

    def invoke(self, image: np.ndarray) -> np.ndarray:
        """Logits of one input: (B, H, W, 3) images, B the model's batch size."""
        self.interpreter.set_tensor(self.input["index"], _quantize(image, self.input))
        self.interpreter.invoke()
        return _dequantize(self.interpreter.get_tensor(self.output["index"]), self.output)

    def __call__(self, images: np.ndarray) -> np.ndarray:
        """Logits (N, classes) of standardised images (N, H, W, 3), the model's batch size at a
        time (the last batch padded)."""
        if tuple(images.shape[1:]) != self.input_shape[1:]:
            raise TFLiteError(f"the model takes images of shape {self.input_shape[1:]}, got "
                              f"{tuple(images.shape[1:])}")
        batch = self.batch_size
        padded = np.concatenate([images, np.zeros((-len(images) % batch, *images.shape[1:]),
                                                  images.dtype)])
        return np.concatenate([self.invoke(padded[i:i + batch])
                               for i in range(0, len(padded), batch)])[:len(images)]


def _quantize(x: np.ndarray, detail: dict) -> np.ndarray:
    dtype = detail["dtype"]
    if dtype == np.float32:
        return x.astype(np.float32)
    scale, zero_point = detail["quantization"]
    info = np.iinfo(dtype)
    return np.clip(np.round(x / scale + zero_point), info.min, info.max).astype(dtype)


def _dequantize(q: np.ndarray, detail: dict) -> np.ndarray:
    if detail["dtype"] == np.float32:
        return q
    scale, zero_point = detail["quantization"]
    return (q.astype(np.float32) - zero_point) * scale
