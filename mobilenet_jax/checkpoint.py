"""Orbax checkpoints of a run: `<workdir>/checkpoints/<step>/` plus a `latest` link.

Each checkpoint holds the whole TrainState (params, batch_stats, optimizer state, step, RNG
key), the run's Config and the data position, so a model is rebuilt from a checkpoint alone and
a run resumes exactly. Retention: the last `keep` plus the best by validation top-1.
"""
import json
import os
import pathlib
from typing import Any, Optional

import jax
import orbax.checkpoint as ocp

from mobilenet_jax.config import Config

LATEST = "latest"
# Where JsonSave puts the "config" item: JsonCheckpointHandler's default file name.
CONFIG_FILE = pathlib.Path("config") / "metadata"


class CheckpointError(Exception):
    """A checkpoint path that cannot be used; the message says what is wrong and what to do."""


class Checkpoints:
    """Save / restore of one run's checkpoints directory (collective on multi-host runs)."""

    def __init__(self, directory, keep: int = 3, keep_best: bool = True):
        self.directory = pathlib.Path(directory).absolute()
        policies = [ocp.checkpoint_managers.LatestN(n=keep)]
        if keep_best:
            policies.append(ocp.checkpoint_managers.BestN(
                get_metric_fn=lambda m: m["val_top1"], reverse=False, n=1,
                keep_checkpoints_without_metrics=False))
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(
                preservation_policy=ocp.checkpoint_managers.AnyPreservationPolicy(policies),
                enable_async_checkpointing=False, create=True))

    def latest_step(self) -> Optional[int]:
        return self.manager.latest_step()

    def save(self, state, config: Config, position: dict, metrics: Optional[dict] = None):
        """Write a checkpoint at state.step; then point `latest` at it (it is complete now)."""
        step = int(state.step)
        self.manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            config=ocp.args.JsonSave(config.to_dict()),
            position=ocp.args.JsonSave(position)), metrics=metrics, force=True)
        self.manager.wait_until_finished()
        if jax.process_index() == 0:
            link = self.directory / LATEST
            tmp = self.directory / f".{LATEST}.tmp"
            tmp.unlink(missing_ok=True)
            tmp.symlink_to(str(step))
            os.replace(tmp, link)  # atomic: `latest` never points at a half-written step
        return step

    def restore(self, step: int, abstract_state) -> tuple[Any, Config, dict]:
        return restore_step(self.directory / str(step), abstract_state)

    def close(self):
        self.manager.close()


def resolve(path) -> pathlib.Path:
    """A run workdir, its checkpoints dir, `.../latest` or one step's dir -> that step's dir."""
    p = pathlib.Path(path)
    if not p.exists():
        hint = " (a run writes it when it saves its first checkpoint)" if p.name == LATEST else ""
        raise CheckpointError(f"no checkpoint at {path}: the path does not exist{hint}; pass "
                              "--ckpt with a run workdir, its checkpoints/ dir or a step dir")
    p = p.resolve()
    if (p / "checkpoints").is_dir():
        p = p / "checkpoints"
    if (p / LATEST).exists():
        p = (p / LATEST).resolve()
    elif not _is_step_dir(p):
        steps = sorted((c for c in p.iterdir() if c.name.isdigit() and _is_step_dir(c)),
                       key=lambda c: int(c.name)) if p.is_dir() else []
        if not steps:
            raise CheckpointError(f"no checkpoint in {path}: expected a step directory written "
                                  "by mobilenet_jax.train (with state/ and config/)")
        p = steps[-1]
    return p


def _is_step_dir(p: pathlib.Path) -> bool:
    return (p / "state").is_dir() and (p / "config").is_dir()


def read_config(step_dir) -> Config:
    """The run's Config stored in a step directory.

    Read as the JSON file orbax's JsonSave wrote, not through orbax, which starts JAX's
    backend: `evaluate` sets the allocator from the config, and that must come first
    (mobilenet_jax/hostmem.py).
    """
    step_dir = pathlib.Path(step_dir)
    try:
        return Config.from_dict(json.loads((step_dir / CONFIG_FILE).read_text()))
    except Exception as e:
        raise CheckpointError(f"checkpoint {step_dir} is unreadable (its config: "
                              f"{_short(e)}); use another checkpoint") from None


def restore_step(step_dir, abstract_state) -> tuple[Any, Config, dict]:
    """Restore a step directory into the structure, shapes and shardings of `abstract_state`."""
    step_dir = pathlib.Path(step_dir)
    config = read_config(step_dir)
    _check_shapes(step_dir, abstract_state)
    try:
        with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as checkpointer:
            restored = checkpointer.restore(step_dir, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract_state), position=ocp.args.JsonRestore()))
    except Exception as e:
        raise _corrupt(step_dir, e) from None
    return restored["state"], config, restored["position"]


def _check_shapes(step_dir, abstract_state):
    """Compare the stored arrays' names and shapes (orbax metadata) with the model's, before
    restoring: an orbax restore refused half-way leaves its reads running, and they print
    tracebacks when the process exits."""
    try:
        stored = _named_shapes(ocp.StandardCheckpointHandler().metadata(step_dir / "state"))
    except Exception as e:
        raise _corrupt(step_dir, e) from None
    if stored != _named_shapes(abstract_state):
        raise CheckpointError(f"checkpoint {step_dir} holds arrays of other names or shapes than "
                              "the model built from its config: it is corrupt or of another "
                              "architecture; use another checkpoint")


def _named_shapes(tree) -> dict:
    """{'params/block1/depthwise/kernel': (3, 3, 1, 8), ...} of a state or of its metadata."""
    def name(key):
        return str(getattr(key, "key", getattr(key, "name", getattr(key, "idx", key))))
    return {"/".join(map(name, path)): tuple(leaf.shape)
            for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _corrupt(step_dir, e: Exception) -> CheckpointError:
    return CheckpointError(f"checkpoint {step_dir} cannot be restored ({_short(e)}); it is "
                           "corrupt: use another checkpoint")


def _short(e: Exception) -> str:
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text[:200]}" if text else type(e).__name__
