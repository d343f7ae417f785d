"""A trained model from a checkpoint: its config (flags that may differ applied) and its state,
the network rebuilt from the config stored in the checkpoint."""
import dataclasses
from typing import Optional

import jax

from mobilenet_jax.config import Config
from mobilenet_jax.core import checkpoint, steps
from mobilenet_jax.core.parallel import Devices

# The model's flags that evaluating commands accept; they must match the checkpoint's...
MODEL_FLAGS = ("width_multiplier", "num_classes", "block", "stem_stride", "dtype", "kernels",
               "resolution")
# ...except these, which change how the same weights are run, not which weights.
FREE_FLAGS = ("dtype", "kernels")


@dataclasses.dataclass(frozen=True)
class Restored:
    """A checkpoint restored onto this process's devices."""
    state: steps.TrainState
    config: Config
    position: dict  # where in the data the run was: step, epoch, steps_per_epoch, rng
    devices: Devices

    @property
    def step(self) -> int:
        return self.position["step"]


def checkpoint_config(step_dir, overrides: Optional[dict] = None) -> Config:
    """The config stored in a checkpoint, with the flags that may differ applied; the others
    must match it. Starts no JAX backend."""
    config = checkpoint.read_config(step_dir)
    for name, value in (overrides or {}).items():
        if name not in FREE_FLAGS and getattr(config, name) != value:
            raise checkpoint.CheckpointError(
                f"checkpoint {step_dir} is a model with {name}={getattr(config, name)!r}, but "
                f"{name}={value!r} was passed; drop the flag or pass a matching checkpoint")
    return config.replace(**(overrides or {}))


def restore(step_dir, overrides: Optional[dict] = None) -> Restored:
    """The checkpoint in `step_dir` (verified), replicated over all local devices."""
    config = checkpoint_config(step_dir, overrides)
    devices = Devices(jax.device_count())
    abstract = steps.build(config).abstract_state(devices)
    state, _, position = checkpoint.restore_step(step_dir, abstract)
    return Restored(state, config, position, devices)
