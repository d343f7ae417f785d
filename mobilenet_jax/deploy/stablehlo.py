"""A checkpoint's network as a serialized StableHLO function (`jax.export`), for JAX code that
does not have this package:

    from jax import export
    exported = export.deserialize(bytearray(open("model.stablehlo", "rb").read()))
    logits = exported.call(images)  # (batch, R, R, 3) float32, standardised as metadata.json says

The trained variables are constants inside the function, so a caller passes images only; the
batch dimension is symbolic (any batch size), and one file holds the lowering for CPU and for
CUDA. JAX loads such a file within its export compatibility window (about six months of JAX
releases after the one that wrote it: "Compatibility guarantees" of JAX's export docs).
"""
import importlib.util

import jax
import jax.numpy as jnp
import numpy as np
from jax import export  # a submodule that older jax versions do not import with jax

from mobilenet_jax.config import Config
from mobilenet_jax.errors import install_extra
from mobilenet_jax.models.mobilenet import MobileNetV1

PLATFORMS = ("cpu", "cuda")


def serialize(config: Config, variables: dict) -> bytes:
    """The eval-mode network of `config` with `variables`, standardised float32 images
    (batch, R, R, 3) -> logits, exported and serialized. A ValueError names the extra to
    install where jax's serializer lacks its dependency."""
    check_serializer()
    model = MobileNetV1(**config.replace(kernels="reference", dtype="float32").model_kwargs())
    constants = jax.tree.map(np.asarray, variables)

    def logits(images):
        return model.apply(constants, images, train=False)

    batch, = export.symbolic_shape("batch")
    r = config.data.resolution
    exported = export.export(jax.jit(logits), platforms=PLATFORMS)(
        jax.ShapeDtypeStruct((batch, r, r, 3), jnp.float32))
    return bytes(exported.serialize())


def check_serializer() -> None:
    """A ValueError naming the extra to install where jax's serializer lacks flatbuffers."""
    if importlib.util.find_spec("flatbuffers") is None:
        raise ValueError("a StableHLO export is serialized with flatbuffers, which is not "
                         f"installed: {install_extra('stablehlo')}")


class Runner:
    """A serialized function, deserialized and compiled for this process's backend: the same
    calls as the TFLite runner's (`runner(images)` for a batch, `invoke(one)` for latency)."""

    fixed_batch = False  # it takes any batch

    def __init__(self, serialized: bytes):
        self.call = jax.jit(export.deserialize(bytearray(serialized)).call)

    def __call__(self, images: np.ndarray) -> np.ndarray:
        return np.asarray(self.call(images), np.float32)

    def invoke(self, images: np.ndarray) -> np.ndarray:
        return jax.block_until_ready(self.call(images))
