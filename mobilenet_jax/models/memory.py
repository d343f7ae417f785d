"""How much host memory a step of a model needs, from its layer outputs (nothing runs)."""
import functools

import jax
import jax.numpy as jnp

from mobilenet_jax.config import Config
from mobilenet_jax.models.mobilenet import MobileNetV1


def estimated_step_bytes(config: Config, batch_size: int, train: bool = True) -> int:
    """About how large XLA:CPU's temporary buffer for one step of `batch_size` will be, from
    the model's layer outputs (`jax.eval_shape`: nothing runs, no backend starts). Training
    keeps every layer output for the backward, inference a few at a time; the factors are
    XLA's measured ratios (experiments/host_memory)."""
    model = MobileNetV1(**config.model_kwargs(backend="cpu"))  # asking JAX would start it
    side = config.data.resolution
    image = jax.ShapeDtypeStruct((1, side, side, 3), jnp.float32)
    variables = jax.eval_shape(functools.partial(model.init, capture_intermediates=True),
                               jax.eval_shape(jax.random.key, 0), image)
    sizes = [leaf.size * leaf.dtype.itemsize
             for leaf in jax.tree.leaves(variables["intermediates"])]
    return int(batch_size * (1.5 * sum(sizes) if train else 2.5 * max(sizes)))
