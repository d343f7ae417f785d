"""A trained model from a checkpoint: its config (flags that may differ applied) and its state,
the network rebuilt from the config stored in the checkpoint; the models shipped with the
package as `(config, variables)`; a checkpoint's weights alone as a new checkpoint."""
import dataclasses
import pathlib
from typing import Optional

import jax

from mobilenet_jax.config import GROUP_OF, Config, Places, Run
from mobilenet_jax.core import checkpoint, steps
from mobilenet_jax.core.parallel import Devices

# The config groups whose flags evaluating commands accept (with --resolution): the network's
# must match the checkpoint's; the compute flags change how the same weights are run.
MODEL_GROUPS = ("network", "compute")


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
    stored = config.flat()
    for name, value in (overrides or {}).items():
        if GROUP_OF[name] != "compute" and stored[name] != value:
            raise checkpoint.CheckpointError(
                f"checkpoint {step_dir} is a model with {name}={stored[name]!r}, but "
                f"{name}={value!r} was passed; drop the flag or pass a matching checkpoint")
    return config.replace(**(overrides or {}))


def restore(step_dir, overrides: Optional[dict] = None) -> Restored:
    """The checkpoint in `step_dir` (verified), replicated over all local devices."""
    config = checkpoint_config(step_dir, overrides)
    devices = Devices(jax.device_count())
    abstract = steps.build(config).abstract_state(devices)
    state, _, position = checkpoint.restore_step(step_dir, abstract)
    return Restored(state, config, position, devices)


def pretrained(name: str) -> tuple[Config, dict]:
    """The model `name` shipped with the package (`checkpoint.pretrained_names()`), verified
    like any checkpoint: its Config and its variables ({"params", "batch_stats"}) for
    `apply`, e.g. `mobilenet_jax.functions(config)`."""
    model = restore(checkpoint.resolve(checkpoint.PRETRAINED + name))
    return model.config, jax.device_get(model.state.eval_variables())


def write_weights(step_dir, directory, **config_changes) -> pathlib.Path:
    """Write the weights that the checkpoint in `step_dir` runs (its moving average, where it
    keeps one) as a weights-only checkpoint in `directory`, a new checkpoints dir. Its config
    is the checkpoint's less where the data and the run were (the paths of the machine that
    ran it), with `config_changes` (e.g. the TFDS dataset of an image folder's classes).
    Returns the new step dir."""
    model = restore(step_dir)
    config = model.config.replace(places=Places(), run=Run(), init_from=None,
                                  **config_changes)
    checkpoints = checkpoint.Checkpoints(directory, keep=1, keep_best=False)
    try:
        checkpoints.save_arrays(model.step, jax.device_get(model.state.eval_variables()),
                                config, model.position)
    finally:
        checkpoints.close()
    return checkpoints.directory / str(model.step)
