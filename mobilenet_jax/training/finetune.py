"""Start a new run from another run's checkpoint (`--init-from`): fine-tuning.

The backbone's parameters and BatchNorm statistics come from the checkpoint; the classifier
too when the number of classes is the same, else it is new. Only the backbone's weight shapes
must match (training/plan.py checks them, and takes the network flags not given from the
checkpoint): the network is convolutional up to a global average pool, so the resolution may
differ.
"""
from typing import Callable

import jax
import jax.numpy as jnp

from mobilenet_jax.core import checkpoint as ckpt_lib
from mobilenet_jax.core import steps
from mobilenet_jax.config import Config
from mobilenet_jax.models.spec import HEAD
from mobilenet_jax.core.parallel import Devices
from mobilenet_jax.training.plan import Source


def initial_state(config: Config, source: Source, training: steps.Training, devices: Devices,
                  rng, say: Callable[[str], None] = print) -> steps.TrainState:
    """The new run's first state: a fresh one with the source checkpoint's weights put in."""
    source_state, _, position = ckpt_lib.restore_step(
        source.step_dir, steps.build(source.config).abstract_state(devices), source.config)
    state = training.new_state(rng, devices)
    source_variables = source_state.eval_variables()  # its moving average, where it kept one
    new_head = source.config.network.num_classes != config.network.num_classes
    params = {name: state.params[name] if name == HEAD and new_head
              else source_variables["params"][name] for name in state.params}
    variables = {"params": params, "batch_stats": source_variables["batch_stats"]}
    say(f"starting from {source.step_dir} (step {position['step']}, "
        f"{source.config.network.num_classes} classes): "
        f"backbone {'and classifier ' if not new_head else ''}from it"
        + (f", a new classifier for {config.network.num_classes} classes" if new_head else "")
        + (f"; resolution {source.config.data.resolution} -> {config.data.resolution}"
           if source.config.data.resolution != config.data.resolution else ""))
    # The average starts as its own copy: the train step donates every buffer of the state.
    ema = jax.tree.map(jnp.copy, variables) if state.ema is not None else None
    precise = (jax.tree.map(jnp.copy, variables["batch_stats"])
               if state.precise_batch_stats is not None else None)
    return state.replace(**variables, ema=ema, precise_batch_stats=precise)
