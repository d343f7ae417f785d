"""ONNX models of a trained network, for servers: conversion (jax2onnx) and running (ONNX
Runtime).

The converted function is the eval-mode network with BatchNorm folded into the convs
(deploy/folded.py): ONNX `Conv` (depthwise through `group`), `Add`, `Clip` (ReLU6),
`ReduceMean` and `Gemm`, with the layout transposes jax2onnx puts around each conv. The model
takes standardised images "images" (batch, R, R, 3) float32, any batch size, and returns
"logits" (batch, classes).
"""
import contextlib
import functools
import importlib.util
from typing import Callable, ContextManager, Optional

import numpy as np

from mobilenet_jax.config import Config
from mobilenet_jax.deploy import folded
from mobilenet_jax.errors import install_extra, short_reason

OPSET = 18  # the lowest jax2onnx writes correctly (ReduceMean takes axes as an input from 18)


class OnnxError(Exception):
    """A model cannot be converted, loaded or run; the message says why and what to do."""


def check_installed(converter: bool = True) -> None:
    """An OnnxError naming the extra where the converter or ONNX Runtime is missing."""
    needed = ("jax2onnx", "onnxruntime") if converter else ("onnxruntime",)
    missing = [name for name in needed if importlib.util.find_spec(name) is None]
    if missing:
        raise OnnxError(f"{' and '.join(missing)} not installed; ONNX models need the 'onnx' "
                        f"extra: {install_extra('onnx')}")


def convert(config: Config, variables: dict,
            quiet: Callable[[], ContextManager] = contextlib.nullcontext) -> bytes:
    """The network of `config` with `variables` as a serialized ONNX model (float32, symbolic
    batch). `quiet` (e.g. `process.output_dropped`) runs the converter, which prints."""
    check_installed()
    from jax2onnx import to_onnx
    convs, classifier = folded.fold(config, variables)
    forward = functools.partial(folded.forward, convs, classifier)
    r = config.data.resolution
    try:
        with quiet():
            model = to_onnx(forward, inputs=[("batch", r, r, 3)], model_name="mobilenet_v1",
                            opset=OPSET, input_names=["images"], output_names=["logits"])
    except Exception as e:  # noqa: BLE001 - the converter raises many kinds
        raise OnnxError(f"the ONNX converter failed: {short_reason(e, 300)}") from None
    # Shapes of the intermediate tensors are left for the runtime to infer: jax2onnx writes
    # some of them in the wrong layout, which ONNX Runtime warns about on every load.
    del model.graph.value_info[:]
    return model.SerializeToString()


class Runner:
    """One ONNX model in ONNX Runtime (CPU): standardised float32 images -> logits; the same
    calls as the TFLite runner's (`runner(images)`, `invoke(batch)` for latency)."""

    fixed_batch = False  # it takes any batch

    def __init__(self, model: bytes | str, num_threads: Optional[int] = None):
        check_installed(converter=False)
        import onnxruntime
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3  # errors only
        if num_threads:
            options.intra_op_num_threads = num_threads
        what = model if isinstance(model, str) else "the converted model"
        try:
            self.runtime = onnxruntime.InferenceSession(
                model, options, providers=["CPUExecutionProvider"])
        except Exception as e:  # noqa: BLE001 - ONNX Runtime raises its own kinds
            raise OnnxError(f"{what} is not a readable ONNX model ({short_reason(e)}); "
                            "export it again") from None
        self.input = self.runtime.get_inputs()[0]
        self.image_shape = tuple(self.input.shape[1:])

    def invoke(self, images: np.ndarray) -> np.ndarray:
        return self.runtime.run(None, {self.input.name: images.astype(np.float32)})[0]

    def __call__(self, images: np.ndarray) -> np.ndarray:
        """Logits (N, classes) of standardised images (N, H, W, 3)."""
        if tuple(images.shape[1:]) != self.image_shape:
            raise OnnxError(f"the model takes images of shape {self.image_shape}, got "
                            f"{tuple(images.shape[1:])}")
        return self.invoke(images)
