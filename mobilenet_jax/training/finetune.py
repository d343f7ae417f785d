"""Start a new run from another run's checkpoint (`--init-from`): fine-tuning.

The backbone's parameters and BatchNorm statistics come from the checkpoint; the classifier
too when the number of classes is the same, else it is new. Only the architecture must match:
the network is convolutional up to a global average pool, so the resolution may differ.
Architecture flags not given are taken from the checkpoint.
"""
from typing import Callable

import jax
import jax.numpy as jnp

from mobilenet_jax.core import checkpoint as ckpt_lib
from mobilenet_jax.core import steps
from mobilenet_jax.config import Config
from mobilenet_jax.models.spec import HEAD
from mobilenet_jax.core.parallel import Devices

ARCHITECTURE = ("width_multiplier", "block", "stem_stride")


def with_source_architecture(given: dict) -> dict:
    """The flags of a new run, with the architecture flags not given taken from the
    --init-from checkpoint."""
    if not given.get("init_from"):
        return given
    stored = ckpt_lib.read_config(ckpt_lib.resolve(given["init_from"]))
    return {**{name: getattr(stored, name) for name in ARCHITECTURE}, **given}


def checkpoint_to_start_from(config: Config) -> tuple:
    """(step dir, config) of the checkpoint a run starts from; refused when its architecture
    differs. Reads the config only: cheap enough to check before the data is read."""
    step_dir = ckpt_lib.resolve(config.init_from)
    source = ckpt_lib.read_config(step_dir)
    differ = [f"{name}={getattr(source, name)!r} (this run: {getattr(config, name)!r})"
              for name in ARCHITECTURE if getattr(source, name) != getattr(config, name)]
    if differ:
        raise ValueError(f"cannot fine-tune from {step_dir}: it is a network with "
                         f"{', '.join(differ)}; pass the same --alpha, --block and "
                         "--stem-stride, or start from another checkpoint")
    return step_dir, source


def initial_state(config: Config, training: steps.Training, devices: Devices, rng,
                  say: Callable[[str], None] = print) -> steps.TrainState:
    """The new run's first state: a fresh one with the checkpoint's weights put in."""
    step_dir, source = checkpoint_to_start_from(config)
    source_state, _, position = ckpt_lib.restore_step(
        step_dir, steps.build(source).abstract_state(devices))
    state = training.new_state(rng, devices)
    source_variables = source_state.eval_variables()  # its moving average, where it kept one
    new_head = source.num_classes != config.num_classes
    params = {name: state.params[name] if name == HEAD and new_head
              else source_variables["params"][name] for name in state.params}
    variables = {"params": params, "batch_stats": source_variables["batch_stats"]}
    say(f"starting from {step_dir} (step {position['step']}, {source.num_classes} classes): "
        f"backbone {'and classifier ' if not new_head else ''}from it"
        + (f", a new classifier for {config.num_classes} classes" if new_head else "")
        + (f"; resolution {source.resolution} -> {config.resolution}"
           if source.resolution != config.resolution else ""))
    # The average starts as its own copy: the train step donates every buffer of the state.
    ema = jax.tree.map(jnp.copy, variables) if state.ema is not None else None
    precise = (jax.tree.map(jnp.copy, variables["batch_stats"])
               if state.precise_batch_stats is not None else None)
    return state.replace(**variables, ema=ema, precise_batch_stats=precise)
