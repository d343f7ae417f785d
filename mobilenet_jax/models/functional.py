"""The network of a run Config as a module, or as pure (init, apply) functions."""
from typing import Callable, Optional, Sequence, Tuple

import jax

from mobilenet_jax.config import Config
from mobilenet_jax.models.mobilenet import MobileNetV1


def create_model(config: Optional[Config] = None, **overrides) -> MobileNetV1:
    """The network of a run configuration (keyword overrides replace config fields)."""
    config = (config or Config()).replace(**overrides)
    return MobileNetV1(**config.model_kwargs())


def functions(config: Optional[Config] = None, **overrides) -> Tuple[Callable, Callable]:
    """(init, apply) pure functions of the network of `config`.

    init(rng, input_shape) -> variables ({'params', 'batch_stats'})
    apply(variables, images, train=False, rng=None, features_only=False)
        -> logits (eval), or (logits, new_batch_stats) with train=True; `rng` drives dropout.
    """
    model = create_model(config, **overrides)

    def init(rng: jax.Array, input_shape: Sequence[int]) -> dict:
        return dict(model.init(rng, jax.numpy.zeros(input_shape, jax.numpy.float32)))

    def apply(variables, images, train: bool = False, rng: Optional[jax.Array] = None,
              features_only: bool = False):
        rngs = {"dropout": rng} if rng is not None else {}
        if not train:
            return model.apply(variables, images, train=False, features_only=features_only)
        out, updates = model.apply(variables, images, train=True, features_only=features_only,
                                   rngs=rngs, mutable=["batch_stats"])
        return out, updates["batch_stats"]

    return init, apply
