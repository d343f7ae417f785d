"""Orbax checkpoints of a run: `<workdir>/checkpoints/<step>/` plus a `latest` link.

Each checkpoint holds the whole TrainState (params, batch_stats, optimizer state, step, the
weights' moving average and the recomputed BatchNorm statistics where the run keeps them), the
RNG key, the run's Config and the data position, so a model is rebuilt from a checkpoint alone
and a run resumes exactly. The arrays are stored packed, one flat array per dtype, with the
layout (each array's name, dtype and shape) beside them: orbax's cost is per array, not per
byte (experiments/end_to_end). Which checkpoints a version reads: `FORMAT` (docs/training.md,
Compatibility).
Retention: the last `keep` plus the best by validation top-1.

A weights-only checkpoint (`restore.write_weights`) holds just the weights a model runs (params and
BatchNorm statistics); it restores as a state whose every copy of the weights is those and
whose optimizer state is zero, for the commands that evaluate, predict, export and fine-tune.
The models that ship with the package are such checkpoints: `pretrained:NAME` names them
wherever a checkpoint path is taken.

Integrity: once orbax has committed a step, `manifest.json` (every file's size and SHA-256)
is written into it atomically, and every restore verifies it first. A run that starts moves
aside (`<step>.corrupt`) the newest checkpoints that fail verification, removes unfinished
saves, and resumes from the newest intact one. Retention first renames an old step into
`.retired/` (atomic) and only then deletes it, so a kill while deleting never leaves a half
step directory among the checkpoints.
"""
import concurrent.futures
import dataclasses
import errno
import hashlib
import json
import math
import os
import pathlib
import shutil
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from mobilenet_jax.config import Config
from mobilenet_jax.errors import short_reason, write_error_line

LATEST = "latest"
# Where JsonSave puts the "config" and "position" items: JsonCheckpointHandler's file name.
CONFIG_FILE = pathlib.Path("config") / "metadata"
POSITION_FILE = pathlib.Path("position") / "metadata"
LAYOUT_FILE = pathlib.Path("layout") / "metadata"
MANIFEST = "manifest.json"
# position["format"] of the checkpoints this version writes, and the only one it reads: packed
# arrays with a layout/ item, and a manifest. Pre-release versions wrote 1 (one orbax array
# per state array, no manifest) and 2 (the same with a manifest).
FORMAT = 3
CORRUPT_SUFFIX = ".corrupt"
UNFINISHED_SUFFIX = ".orbax-checkpoint-tmp"  # orbax's name for a save in progress
RETIRED = ".retired"  # where retention moves old steps before deleting them
PRETRAINED = "pretrained:"  # `pretrained:NAME`: the model NAME shipped with the package
PRETRAINED_DIR = pathlib.Path(__file__).resolve().parent.parent / "weights"
WEIGHTS = ("params", "batch_stats")  # what a weights-only checkpoint holds


class CheckpointError(Exception):
    """A checkpoint path that cannot be used; the message says what is wrong and what to do."""


class Checkpoints:
    """Save / restore of one run's checkpoints directory (collective on multi-host runs).

    Opening it sets aside what a resume must not trip over (`set_aside_unusable`); `say`
    receives one line for each thing set aside.

    A save takes host copies of the state on the caller's thread and writes them on a
    background thread of its own (one save in flight; the next save, `wait` and
    `latest_step` wait for it and raise its error), so training goes on while orbax writes
    (experiments/end_to_end). Runs of several processes write on the caller's thread: their
    saves synchronise the processes."""

    def __init__(self, directory, keep: int = 3, keep_best: bool = True,
                 say: Callable[[str], None] = print):
        self.directory = pathlib.Path(directory).absolute()
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            if jax.process_index() == 0:
                for line in set_aside_unusable(self.directory):
                    say(line)
        except OSError as e:
            raise CheckpointError(write_error_line(
                e, f"prepare checkpoints in {self.directory}")) from None
        _sync_processes("checkpoints-set-aside")
        policies = [ocp.checkpoint_managers.LatestN(n=keep)]
        if keep_best:
            policies.append(ocp.checkpoint_managers.BestN(
                get_metric_fn=lambda m: m["val_top1"], reverse=False, n=1,
                keep_checkpoints_without_metrics=False))
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(
                preservation_policy=ocp.checkpoint_managers.AnyPreservationPolicy(policies),
                enable_async_checkpointing=False, create=True, todelete_subdir=RETIRED))
        self._writer = (concurrent.futures.ThreadPoolExecutor(1, "checkpoint-writer")
                        if jax.process_count() == 1 else None)
        self._in_flight: Optional[concurrent.futures.Future] = None

    def latest_step(self) -> Optional[int]:
        self.wait()
        return self.manager.latest_step()

    def save(self, state, config: Config, position: dict, metrics: Optional[dict] = None):
        """Take host copies of the state (the caller may then donate it) and write them as the
        checkpoint at state.step, its manifest, then point `latest` at it, in the background.

        A failure to write (disk full, read-only, vanished directory) raises CheckpointError
        with one line, from this save or the next call that waits for it; what was
        half-written is removed and `latest` still names the last intact checkpoint."""
        return self.save_arrays(int(state.step), jax.device_get(stored_arrays(state)), config,
                                position, metrics)  # the state is replicated

    def save_arrays(self, step: int, arrays: dict, config: Config, position: dict,
                    metrics: Optional[dict] = None) -> int:
        """`save` of host arrays by state field name (all of a state's, or `WEIGHTS`)."""
        self.wait()
        items = (config.to_dict(), {**position, "format": FORMAT}, metrics)
        if self._writer is None:
            self._write(step, arrays, *items)
            _sync_processes(f"checkpoint-{step}")
        else:
            self._in_flight = self._writer.submit(self._write, step, arrays, *items)
        return step

    def wait(self) -> None:
        """Block until the save in flight is written; raise its CheckpointError."""
        in_flight, self._in_flight = self._in_flight, None
        if in_flight is not None:
            in_flight.result()

    def _write(self, step: int, arrays, config: dict, position: dict, metrics):
        step_dir = self.directory / str(step)
        try:
            _check_room(self.directory, arrays)
            # Host copies: orbax writes them in less time than device arrays
            # (experiments/checkpoint_time).
            packed, layout = pack(arrays)
            self.manager.save(step, args=ocp.args.Composite(
                state=ocp.args.StandardSave(packed), layout=ocp.args.JsonSave(layout),
                config=ocp.args.JsonSave(config), position=ocp.args.JsonSave(position)),
                metrics=metrics, force=True)
            self.manager.wait_until_finished()
            if jax.process_index() == 0:
                write_manifest(step_dir)
                _point_latest(self.directory, step)
                shutil.rmtree(self.directory / RETIRED, ignore_errors=True)
        except Exception as e:  # orbax wraps the OSError in errors of its own
            if jax.process_index() == 0:
                _remove_unfinished(self.directory, step)
            last = latest_intact_step(self.directory)
            kept = (f"the last good checkpoint (step {last}) is intact and still `latest`"
                    if last is not None else "no checkpoint had been saved before")
            line = write_error_line(e, f"write checkpoint {step_dir}")
            raise CheckpointError(f"{line}; {kept}") from None

    def restore(self, step: int, abstract_state) -> tuple[Any, Config, dict]:
        return restore_step(self.directory / str(step), abstract_state)

    def close(self):
        """Wait for the save in flight, then close; an error of that save is not raised here
        (`wait` raises it), so closing after a failure never masks the failure."""
        try:
            self.wait()
        except CheckpointError:
            pass
        if self._writer is not None:
            self._writer.shutdown()
        try:
            self.manager.close()
        except Exception:  # noqa: BLE001 - closing after a failed save must not mask its error
            pass


def _check_room(directory: pathlib.Path, arrays) -> None:
    """Refuse a save whose arrays alone do not fit on the disk, before anything is written: a
    save that fails part-way leaves orbax's writes in flight, and they may land after the
    unfinished save was removed (the next run's start removes them)."""
    disk = os.statvfs(directory)
    needed = sum(np.asarray(a).nbytes for a in jax.tree.leaves(arrays))
    if disk.f_bavail * disk.f_frsize < needed:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(directory))


# ---- integrity ------------------------------------------------------------------------------

def _sha256(path: pathlib.Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _files(step_dir: pathlib.Path) -> list:
    return sorted(p for p in step_dir.rglob("*") if p.is_file() and p.name != MANIFEST
                  and not p.name.startswith(f".{MANIFEST}"))


def write_manifest(step_dir) -> None:
    """Write `manifest.json` (size and SHA-256 of every file) into a committed step dir,
    atomically: a crash leaves either no manifest or a complete one."""
    step_dir = pathlib.Path(step_dir)
    entries = {str(p.relative_to(step_dir)): {"bytes": p.stat().st_size, "sha256": _sha256(p)}
               for p in _files(step_dir)}
    tmp = step_dir / f".{MANIFEST}.tmp"
    with open(tmp, "w") as f:
        json.dump({"files": entries}, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, step_dir / MANIFEST)
    _fsync_dir(step_dir)


def verify(step_dir) -> bool:
    """Check every file of a step dir against its manifest: True, or CheckpointError naming
    the first bad file (also when the manifest is missing: a save that did not finish) or a
    pre-release format."""
    problem = _problem(pathlib.Path(step_dir))
    if problem:
        raise CheckpointError(f"checkpoint {step_dir} {problem}; use another checkpoint")
    return True


def _problem(step_dir: pathlib.Path) -> Optional[str]:
    """What is wrong with a step dir by its format and manifest ("is corrupt: ..."), or None."""
    written = _position_format(step_dir)
    if written is not None and written < FORMAT:
        return (f"was written by a pre-release version (checkpoint format {written}), which "
                f"this version does not read (it reads format {FORMAT})")
    manifest = step_dir / MANIFEST
    if not manifest.exists():
        return f"is incomplete (no {MANIFEST}: its save did not finish)"
    try:
        entries = {name: (want["bytes"], want["sha256"])
                   for name, want in json.loads(manifest.read_text())["files"].items()}
    except Exception as e:  # noqa: BLE001 - any damage to the manifest, its keys included
        return f"is corrupt: its {MANIFEST} is unreadable ({_short(e)})"
    for name, (size, sha256) in sorted(entries.items()):
        path = step_dir / name
        if not path.is_file():
            return f"is corrupt: {name} is missing"
        if path.stat().st_size != size:
            return f"is corrupt: {name} has {path.stat().st_size} bytes, not {size}"
        if _sha256(path) != sha256:
            return f"is corrupt: {name} does not match its checksum"
    return None


def _position_format(step_dir: pathlib.Path) -> Optional[int]:
    """The format a step dir says it has (1 where it says none); None where that is unreadable
    (the manifest then says what is wrong)."""
    try:
        return int(json.loads((step_dir / POSITION_FILE).read_text()).get("format", 1))
    except Exception:  # noqa: BLE001 - a damaged or missing file
        return None


def step_dirs(directory) -> list:
    """The committed step dirs of a checkpoints directory, newest first."""
    directory = pathlib.Path(directory)
    if not directory.is_dir():
        return []
    return sorted((p for p in directory.iterdir() if p.name.isdigit() and p.is_dir()),
                  key=lambda p: int(p.name), reverse=True)


def latest_intact_step(directory) -> Optional[int]:
    """The newest step that verifies (or predates manifests), or None."""
    return next((int(d.name) for d in step_dirs(directory) if not _problem(d)), None)


def set_aside_unusable(directory) -> list:
    """Before a run resumes from `directory`: remove unfinished saves, rename the newest
    checkpoints that fail verification to `<step>.corrupt` (never deleted), and point
    `latest` at the newest intact one. Returns one line per action."""
    directory = pathlib.Path(directory)
    lines = []
    # Not orbax's cleanup_tmp_directories: it removes them in the background, finished only
    # by the first save, and says nothing.
    for unfinished in sorted(directory.glob(f"*{UNFINISHED_SUFFIX}*")):
        shutil.rmtree(unfinished, ignore_errors=True)
        lines.append(f"removed {unfinished.name}, a checkpoint save that did not finish")
    if (directory / RETIRED).exists():
        shutil.rmtree(directory / RETIRED, ignore_errors=True)
        lines.append(f"removed {RETIRED}/, old checkpoints whose deletion did not finish")
    for step_dir in step_dirs(directory):
        problem = _problem(step_dir)
        if not problem:
            break
        target = _free_name(directory, step_dir.name + CORRUPT_SUFFIX)
        step_dir.rename(target)
        lines.append(f"checkpoint {step_dir} {problem}: moved it to {target.name}")
    newest = step_dirs(directory)
    if newest:
        if not (directory / LATEST).exists() or (directory / LATEST).resolve() != newest[0]:
            _point_latest(directory, int(newest[0].name))
    elif (directory / LATEST).is_symlink():
        (directory / LATEST).unlink()
    return lines


def _free_name(directory: pathlib.Path, name: str) -> pathlib.Path:
    target, n = directory / name, 1
    while target.exists():
        target, n = directory / f"{name}.{n}", n + 1
    return target


def _point_latest(directory: pathlib.Path, step: int) -> None:
    link, tmp = directory / LATEST, directory / f".{LATEST}.tmp"
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(str(step))
    os.replace(tmp, link)  # atomic: `latest` never points at a half-written step
    _fsync_dir(directory)


def _remove_unfinished(directory: pathlib.Path, step: int) -> None:
    for path in directory.glob(f"{step}{UNFINISHED_SUFFIX}*"):
        shutil.rmtree(path, ignore_errors=True)
    step_dir = directory / str(step)
    if step_dir.is_dir() and not (step_dir / MANIFEST).exists():
        shutil.rmtree(step_dir, ignore_errors=True)  # committed by orbax, manifest unwritten


def _fsync_dir(directory: pathlib.Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sync_processes(name: str) -> None:
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils
        multihost_utils.sync_global_devices(name)


# ---- finding and restoring ------------------------------------------------------------------

def resolve(path) -> pathlib.Path:
    """A run workdir, its checkpoints dir, `.../latest` or one step's dir -> that step's dir;
    `pretrained:NAME` -> the step dir of the model NAME shipped with the package."""
    if str(path).startswith(PRETRAINED):
        path = pretrained_dir(str(path)[len(PRETRAINED):])
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


def pretrained_names() -> list:
    """The names of the models shipped with the package."""
    return sorted(p.name for p in PRETRAINED_DIR.iterdir() if p.is_dir())


def pretrained_dir(name: str) -> pathlib.Path:
    if name not in pretrained_names():
        raise CheckpointError(f"no pretrained model {name!r}: the package ships "
                              f"{', '.join(pretrained_names()) or 'none'}")
    return PRETRAINED_DIR / name


def _is_step_dir(p: pathlib.Path) -> bool:
    return (p / "state").is_dir() and (p / "config").is_dir()


def read_config(step_dir) -> Config:
    """The run's Config stored in a step directory.

    Read as the JSON file orbax's JsonSave wrote, not through orbax, which starts JAX's
    backend: `evaluate` sets the allocator from the config, and that must come first
    (mobilenet_jax/process.py).
    """
    step_dir = pathlib.Path(step_dir)
    try:
        return Config.from_dict(json.loads((step_dir / CONFIG_FILE).read_text()))
    except Exception as e:
        verify(step_dir)  # a damaged file or an old format is named, rather than what it broke
        raise CheckpointError(f"checkpoint {step_dir} is unreadable (its config: "
                              f"{_short(e)}); use another checkpoint") from None


def restore_step(step_dir, abstract_state, config: Optional[Config] = None
                 ) -> tuple[Any, Config, dict]:
    """Verify a step directory, then restore it into the structure, shapes and shardings of
    `abstract_state`; `config`: its config where the caller has read it already. Relative
    paths are fine (orbax itself wants absolute ones)."""
    step_dir = pathlib.Path(step_dir).absolute()
    verify(step_dir)
    config = config or read_config(step_dir)
    layout, stored = _read_layout(step_dir)
    arrays = stored_arrays(abstract_state)
    # A weights-only checkpoint: its layout names nothing else.
    weights_only = {name.split("/")[0] for name in stored} == set(WEIGHTS)
    if weights_only:
        arrays = {name: arrays[name] for name in WEIGHTS}
    _check_shapes(step_dir, stored, arrays)
    host, position = _read_packed(step_dir, layout, arrays)
    # Read into host arrays, then placed in one device_put: less than half the time orbax
    # takes to place each array itself (experiments/checkpoint_time).
    state = jax.device_put(host, jax.tree.map(lambda a: a.sharding, arrays))
    if weights_only:
        state = _with_weights(abstract_state, state)
    return abstract_state.replace(**state), config, position


def _with_weights(abstract_state, weights: dict) -> dict:
    """A state's stored fields from the weights alone: the weights wherever the state keeps a
    copy of them (moving average, recomputed statistics), zeros elsewhere (step, optimizer)."""
    def zeros(tree):
        return jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype, device=a.sharding), tree)
    copies = {"ema": lambda: jax.tree.map(jnp.copy, weights),
              "precise_batch_stats": lambda: jax.tree.map(jnp.copy, weights["batch_stats"])}
    return {name: weights[name] if name in weights else
            copies[name]() if name in copies else zeros(array)
            for name, array in stored_arrays(abstract_state).items()}


def _read_layout(step_dir: pathlib.Path) -> tuple[dict, dict]:
    """(the layout, {array name: shape}) of a packed checkpoint."""
    try:
        layout = json.loads((step_dir / LAYOUT_FILE).read_text())
        return layout, {name: tuple(shape) for name, _, shape in layout["arrays"]}
    except Exception as e:  # noqa: BLE001 - any damage to the file, its keys included
        raise _corrupt(step_dir, e) from None


def _read_packed(step_dir: pathlib.Path, layout: dict, arrays) -> tuple[dict, dict]:
    """Host arrays in the structure of `arrays`, and the position, from a packed checkpoint
    whose layout names the same arrays and shapes (`_check_shapes`)."""
    host = {dtype: np.empty(size, dtype) for dtype, size in _packed_sizes(layout).items()}
    restored = _read_orbax(step_dir, host)
    if jax.tree.map(np.shape, restored["state"]) != jax.tree.map(np.shape, host):
        raise _corrupt(step_dir, ValueError("packed arrays of other sizes than its layout"))
    return unpack(restored["state"], layout, arrays), restored["position"]


def _read_orbax(step_dir: pathlib.Path, host) -> dict:
    try:
        with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as checkpointer:
            return checkpointer.restore(step_dir, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(host), position=ocp.args.JsonRestore()))
    except Exception as e:  # noqa: BLE001 - whatever orbax raises on a damaged checkpoint
        raise _corrupt(step_dir, e) from None


def pack(arrays) -> tuple[dict, dict]:
    """Host arrays as one flat array per dtype, and the layout that unpacks them:
    {"arrays": [[name, dtype, shape], ...]} in the order they are packed."""
    leaves = [(name, np.asarray(leaf)) for name, leaf in _named_leaves(arrays)]
    layout = [[name, leaf.dtype.name, list(leaf.shape)] for name, leaf in leaves]
    packed = {dtype: np.concatenate([leaf.ravel() for _, leaf in leaves
                                     if leaf.dtype.name == dtype])
              for dtype in sorted({dtype for _, dtype, _ in layout})}
    return packed, {"arrays": layout}


def unpack(packed: dict, layout: dict, like):
    """The arrays of `like`'s structure and dtypes, cut from the packed arrays by `layout`."""
    offsets = dict.fromkeys(packed, 0)
    by_name = {}
    for name, dtype, shape in layout["arrays"]:
        size = math.prod(shape)
        by_name[name] = packed[dtype][offsets[dtype]:offsets[dtype] + size].reshape(shape)
        offsets[dtype] += size
    names, leaves = zip(*_named_leaves(like))
    return jax.tree.unflatten(jax.tree.structure(like),
                              [by_name[name].astype(leaf.dtype, copy=False)
                               for name, leaf in zip(names, leaves)])


def _packed_sizes(layout: dict) -> dict:
    sizes = {}
    for _, dtype, shape in layout["arrays"]:
        sizes[dtype] = sizes.get(dtype, 0) + math.prod(shape)
    return sizes


def stored_arrays(state) -> dict:
    """The TrainState's array fields by name, as a checkpoint holds them: a field that is None
    (no moving average) is left out, so runs without one keep the layout older versions wrote."""
    return {f.name: getattr(state, f.name) for f in dataclasses.fields(state)
            if f.metadata.get("pytree_node", True) and getattr(state, f.name) is not None}


def _check_shapes(step_dir, stored: dict, abstract_state):
    """The stored arrays' names and shapes ({name: shape}) are the model's."""
    if stored != _named_shapes(abstract_state):
        raise CheckpointError(f"checkpoint {step_dir} holds arrays of other names or shapes than "
                              "the model built from its config: it is corrupt or of another "
                              "architecture; use another checkpoint")


def _named_leaves(tree) -> list:
    """[('params/block1/depthwise/kernel', leaf), ...] of a state or of its metadata."""
    def name(key):
        return str(getattr(key, "key", getattr(key, "name", getattr(key, "idx", key))))
    return [("/".join(map(name, path)), leaf)
            for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]]


def _named_shapes(tree) -> dict:
    """{'params/block1/depthwise/kernel': (3, 3, 1, 8), ...} of a state or of its metadata."""
    return {name: tuple(leaf.shape) for name, leaf in _named_leaves(tree)}


def _corrupt(step_dir, e: Exception) -> CheckpointError:
    return CheckpointError(f"checkpoint {step_dir} cannot be restored ({_short(e)}); it is "
                           "corrupt: use another checkpoint")


def _short(e: Exception) -> str:
    return f"{type(e).__name__}: {short_reason(e)}" if str(e).strip() else type(e).__name__
