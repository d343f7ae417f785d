"""Checkpoint paths, retention, the `latest` link, and the errors for bad checkpoints."""
import functools
import json
import pathlib
import re
import shutil
import subprocess
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from mobilenet_jax import Config
from mobilenet_jax.core import steps
from mobilenet_jax.core import checkpoint as ckpt_lib
from mobilenet_jax.core.parallel import Devices
from mobilenet_jax.core.restore import restore

CONFIG = Config(width_multiplier=0.1, num_classes=10)


@functools.cache  # no test donates it
def make_state(config=CONFIG, seed=0):
    return jax.jit(steps.build(config).init_state)(jax.random.key(seed))


def save_steps(directory, steps, keep=2, val_top1=None):
    checkpoints = ckpt_lib.Checkpoints(directory, keep=keep, keep_best=val_top1 is not None)
    state = make_state()
    for i, step in enumerate(steps):
        metrics = {"val_top1": val_top1[i]} if val_top1 else None
        checkpoints.save(state.replace(step=step), CONFIG, {"step": step, "rng": [0, 0]}, metrics)
    checkpoints.close()


def saved_once(tmp_path_factory, steps) -> pathlib.Path:
    workdir = tmp_path_factory.mktemp("saved")
    save_steps(workdir / "checkpoints", steps)
    return workdir


@pytest.fixture(scope="module")
def step_one(tmp_path_factory):
    """A workdir whose checkpoints hold step 1 of CONFIG, saved once: tests that change it
    work on a copy (`copied`)."""
    return saved_once(tmp_path_factory, [1])


def copied(workdir, tmp_path) -> pathlib.Path:
    """A copy of `workdir`'s checkpoints in tmp_path/checkpoints; its step 1 dir."""
    shutil.copytree(workdir / "checkpoints", tmp_path / "checkpoints", symlinks=True)
    return tmp_path / "checkpoints" / "1"


def test_latest_link_and_retention_keep_last_n_plus_best(tmp_path):
    save_steps(tmp_path / "checkpoints", [1, 2, 3, 4, 5], keep=2,
               val_top1=[0.1, 0.9, 0.3, 0.2, 0.4])
    steps = sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit())
    assert steps == [2, 4, 5]  # the last two, plus the best (step 2)
    assert (tmp_path / "checkpoints" / "latest").resolve().name == "5"


@pytest.fixture(scope="module")
def steps_three_and_seven(tmp_path_factory):
    return saved_once(tmp_path_factory, [3, 7])


@pytest.mark.parametrize("form", ["workdir", "checkpoints", "latest", "step"])
def test_resolve_accepts_every_form(steps_three_and_seven, form):
    workdir = steps_three_and_seven
    path = {"workdir": workdir, "checkpoints": workdir / "checkpoints",
            "latest": workdir / "checkpoints" / "latest",
            "step": workdir / "checkpoints" / "7"}[form]
    assert ckpt_lib.resolve(path).name == "7"


def test_restore_round_trips_the_state(tmp_path):
    """Every array bit for bit, with its dtype and sharding, the config and the position."""
    save_steps(tmp_path / "checkpoints", [4])
    stored = ocp.StandardCheckpointHandler().metadata(tmp_path / "checkpoints" / "4" / "state")
    saved = ckpt_lib.stored_arrays(make_state().replace(step=4))
    assert set(stored) == {np.asarray(a).dtype.name for a in jax.tree.leaves(saved)}
    restored = restore(tmp_path / "checkpoints" / "4")
    state, config, position = restored.state, restored.config, restored.position
    assert config == CONFIG and position["step"] == 4 and int(state.step) == 4
    assert state.ema is not None  # the moving average round-trips with the rest
    original = ckpt_lib.stored_arrays(make_state().replace(step=np.int32(4)))
    got = ckpt_lib.stored_arrays(state)
    assert jax.tree.structure(got) == jax.tree.structure(original)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(original)):
        assert a.dtype == np.asarray(b).dtype and a.sharding == restored.devices.replicated
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_a_restored_state_takes_the_train_step_a_new_one_takes(step_one):
    """The same types (no weakly typed step count): one compiled step, which a resumed run
    loads from the compilation cache instead of compiling it again."""
    restored = restore(step_one / "checkpoints" / "1")
    devices, key = Devices(8), jax.random.key(1)
    training = steps.build(CONFIG)
    batch = devices.global_batch({"image": np.zeros((8, 32, 32, 3), np.uint8),
                                  "label": np.zeros((8,), np.int32)})
    train = training.jit_steps(devices).train
    new = training.new_state(jax.random.key(0), devices)
    assert train.lower(new, batch, key).as_text() == \
        train.lower(restored.state, batch, key).as_text()


def test_a_run_without_a_moving_average_stores_no_ema(tmp_path):
    """No `ema` entry (nor recomputed statistics) where the run keeps none; it restores so."""
    old_config = CONFIG.replace(ema_decay=0.0, precise_bn_batches=0)
    checkpoints = ckpt_lib.Checkpoints(tmp_path / "checkpoints", keep=1, keep_best=False)
    checkpoints.save(make_state(old_config).replace(step=1), old_config, {"step": 1, "rng": [0, 0]})
    checkpoints.close()
    step_dir = tmp_path / "checkpoints" / "1"
    layout = json.loads((step_dir / ckpt_lib.LAYOUT_FILE).read_text())["arrays"]
    assert {name.split("/")[0] for name, _, _ in layout} == {"step", "params", "opt_state",
                                                             "batch_stats"}
    restored = restore(step_dir)
    state, config = restored.state, restored.config
    assert config.recipe.ema_decay == 0 and state.ema is None and int(state.step) == 1
    assert config.recipe.precise_bn_batches == 0 and state.precise_batch_stats is None


def test_missing_and_empty_paths_are_checkpoint_errors(tmp_path):
    with pytest.raises(ckpt_lib.CheckpointError, match="does not exist"):
        ckpt_lib.resolve(tmp_path / "nope")
    with pytest.raises(ckpt_lib.CheckpointError, match="no checkpoint in"):
        ckpt_lib.resolve(tmp_path)


def pre_release(step_dir, written: int):
    """The checkpoint marked as a pre-release version wrote it (format 1: no manifest either)."""
    position = json.loads((step_dir / ckpt_lib.POSITION_FILE).read_text())
    position["format"] = written
    (step_dir / ckpt_lib.POSITION_FILE).write_text(json.dumps(position))
    if written == 1:
        (step_dir / ckpt_lib.MANIFEST).unlink()
    else:
        ckpt_lib.write_manifest(step_dir)


@pytest.mark.parametrize("written", [1, 2])
def test_a_pre_release_checkpoint_is_one_line_saying_so(step_one, tmp_path, written):
    step_dir = copied(step_one, tmp_path)
    pre_release(step_dir, written)
    with pytest.raises(ckpt_lib.CheckpointError,
                       match=f"pre-release version \\(checkpoint format {written}\\)"):
        restore(step_dir)


@pytest.mark.parametrize("manifest", ["of the good files", "of the garbage"])
def test_corrupt_checkpoint_is_a_checkpoint_error(step_one, tmp_path, manifest):
    """Garbage arrays: refused by the manifest, or (one that matches them) by orbax's own
    checks."""
    step_dir = copied(step_one, tmp_path)
    for f in (step_dir / "state").rglob("*"):
        if f.is_file():
            f.write_bytes(b"garbage")
    if manifest == "of the garbage":
        ckpt_lib.write_manifest(step_dir)
    match = "is corrupt: state/" if manifest == "of the good files" else "cannot be restored"
    with pytest.raises(ckpt_lib.CheckpointError, match=match):
        restore(step_dir)


def test_checkpoint_of_another_architecture_is_refused(step_one, tmp_path):
    step_dir = copied(step_one, tmp_path)
    with pytest.raises(ckpt_lib.CheckpointError, match="width_multiplier=0.1.*0.25"):
        restore(step_dir, {"width_multiplier": 0.25})
    # a checkpoint whose stored config was altered no longer fits its arrays: refused as
    # corrupt, and, with a manifest written for the altered files, by comparing shapes
    config_file = step_dir / "config" / "metadata"  # the JsonSave file
    config = json.loads(config_file.read_text())
    config["network"]["width_multiplier"] = 0.25
    config_file.write_text(json.dumps(config))
    with pytest.raises(ckpt_lib.CheckpointError, match="is corrupt: config/metadata"):
        restore(step_dir)
    ckpt_lib.write_manifest(step_dir)
    with pytest.raises(ckpt_lib.CheckpointError, match="other names or shapes"):
        restore(step_dir)


def test_free_flags_may_differ(step_one):
    restored = restore(step_one / "checkpoints" / "1", {"kernels": "reference"})
    assert restored.config.compute.kernels == "reference"


def test_read_config_starts_no_backend(step_one):
    """evaluate sets the allocator from the stored config, which must come before JAX's
    backend starts (process.keep_freed_memory)."""
    probe = ("import sys\nfrom jax._src import xla_bridge\n"
             "from mobilenet_jax.evaluate import checkpoint_config\n"
             "config = checkpoint_config(sys.argv[1], {'kernels': 'reference'})\n"
             "print(config.network.width_multiplier, config.compute.kernels,\n"
             "      bool(xla_bridge._backends))")
    out = subprocess.run([sys.executable, "-c", probe, str(step_one / "checkpoints" / "1")],
                         check=True, capture_output=True, text=True).stdout
    assert out.split() == [str(CONFIG.network.width_multiplier), "reference", "False"]


# ---- integrity ------------------------------------------------------------------------------

def flip_bit(path, offset=None):
    data = bytearray(path.read_bytes())
    i = len(data) // 2 if offset is None else offset
    data[i] ^= 0x10
    path.write_bytes(bytes(data))


def test_a_flipped_bit_in_any_file_is_refused_with_its_name(step_one, tmp_path):
    good = copied(step_one, tmp_path)
    files = sorted(p.relative_to(good) for p in good.rglob("*") if p.is_file())
    assert len(files) >= 10 and pathlib.Path(ckpt_lib.MANIFEST) in files
    for name in files:
        bad = tmp_path / f"bad_{len(list(tmp_path.iterdir()))}"
        shutil.copytree(good, bad)
        flip_bit(bad / name)
        # a bit of the manifest itself spoils its JSON or one file's recorded checksum
        expected = ("corrupt|manifest" if name.name == ckpt_lib.MANIFEST
                    else f"corrupt: {re.escape(str(name))} ")
        with pytest.raises(ckpt_lib.CheckpointError, match=expected):
            restore(bad)
    assert ckpt_lib.verify(good) and restore(good).step == 1


@pytest.mark.parametrize("damage", ["truncate", "remove", "no_manifest"])
def test_truncated_removed_and_unfinished_checkpoints_are_refused(step_one, tmp_path, damage):
    step_dir = copied(step_one, tmp_path)
    victim = max((p for p in step_dir.rglob("*") if p.is_file() and p.name != ckpt_lib.MANIFEST),
                 key=lambda p: p.stat().st_size)
    if damage == "truncate":
        victim.write_bytes(victim.read_bytes()[:-1])
        match = "bytes, not"
    elif damage == "remove":
        victim.unlink()
        match = "is missing"
    else:  # orbax committed the step, the manifest was never written
        (step_dir / ckpt_lib.MANIFEST).unlink()
        match = "incomplete"
    with pytest.raises(ckpt_lib.CheckpointError, match=match):
        restore(step_dir)


def test_opening_sets_aside_corrupt_newest_and_unfinished_saves(tmp_path):
    directory = tmp_path / "checkpoints"
    save_steps(directory, [1, 2, 3], keep=3)
    flip_bit(directory / "3" / "state" / "_METADATA")
    (directory / "2" / ckpt_lib.MANIFEST).unlink()
    (directory / "4.orbax-checkpoint-tmp-123").mkdir()
    lines = []
    ckpt_lib.Checkpoints(directory, keep=3, keep_best=False, say=lines.append).close()
    assert sorted(p.name for p in directory.iterdir()) == \
        ["1", "2.corrupt", "3.corrupt", "latest"]
    assert (directory / "latest").resolve().name == "1"
    assert len(lines) == 3 and "4.orbax-checkpoint-tmp-123" in lines[0]
    assert "3 is corrupt: state/_METADATA" in lines[1] and "2 is incomplete" in lines[2]


def test_a_deletion_cut_short_by_a_kill_leaves_no_half_checkpoint(tmp_path, monkeypatch):
    """Retention deletes old steps; a kill during a deletion stops it after some files (here:
    the manifest only). Opening the directory again finds whole, verifying steps only."""
    from etils import epath

    def delete_manifest_only(path, *args, **kwargs):
        for manifest in pathlib.Path(path).rglob(ckpt_lib.MANIFEST):
            manifest.unlink()
    monkeypatch.setattr(epath.gpath._GPath, "rmtree", delete_manifest_only)
    monkeypatch.setattr(ckpt_lib.shutil, "rmtree", delete_manifest_only)
    directory = tmp_path / "checkpoints"
    save_steps(directory, [1, 2, 3, 4], keep=2)
    monkeypatch.undo()
    lines = []
    ckpt_lib.Checkpoints(directory, keep=2, keep_best=False, say=lines.append).close()
    assert [d.name for d in ckpt_lib.step_dirs(directory)] == ["4", "3"]
    assert all(ckpt_lib.verify(d) for d in ckpt_lib.step_dirs(directory))
    assert sorted(p.name for p in directory.iterdir()) == ["3", "4", "latest"], lines
    assert lines == [f"removed {ckpt_lib.RETIRED}/, old checkpoints whose deletion did not finish"]


def test_relative_paths_restore(tmp_path, monkeypatch):
    save_steps(tmp_path / "checkpoints", [2])
    monkeypatch.chdir(tmp_path)
    restored = restore("checkpoints/2")
    state, position = restored.state, restored.position
    assert int(state.step) == 2 and position["step"] == 2
    assert ckpt_lib.resolve("checkpoints").name == "2"


SAVE_FOREVER = """
import sys, jax, numpy as np
from mobilenet_jax import Config
from mobilenet_jax.core import checkpoint, parallel, steps
config = Config(width_multiplier=0.1, num_classes=10)
# a state of the model's structure and shapes, in zeros: nothing to compile before saving
shapes = steps.build(config).abstract_state(parallel.Devices(config.recipe.batch_size))
state = jax.tree.map(lambda leaf: np.zeros(leaf.shape, leaf.dtype), shapes)
checkpoints = checkpoint.Checkpoints(sys.argv[1], keep=3, keep_best=False)
step = checkpoints.latest_step() or 0
print("ready", flush=True)
while True:
    step += 1
    checkpoints.save(state.replace(step=step), config, {"step": step, "rng": [0, 0]})
"""


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_process_killed_while_saving_leaves_only_usable_checkpoints(tmp_path, seed):
    """SIGKILL at a random moment of repeated saves: afterwards every step directory verifies
    or is set aside when the directory is opened again, and the latest one restores."""
    import random
    import signal
    import time
    directory = tmp_path / "checkpoints"
    for kill in range(2):
        proc = subprocess.Popen([sys.executable, "-c", SAVE_FOREVER, str(directory)],
                                stdout=subprocess.PIPE, text=True)
        while proc.stdout.readline().strip() != "ready":  # after lines of what was set aside
            assert proc.poll() is None
        time.sleep(random.Random(seed * 10 + kill).uniform(0.2, 3.0))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    lines = []
    ckpt_lib.Checkpoints(directory, keep=3, keep_best=False, say=lines.append).close()
    remaining = ckpt_lib.step_dirs(directory)
    assert remaining, lines
    for step_dir in remaining:
        assert ckpt_lib.verify(step_dir), step_dir
    assert not list(directory.glob("*orbax-checkpoint-tmp*"))
    latest = ckpt_lib.resolve(directory)
    assert latest == remaining[0] and restore(latest).step == int(latest.name)


def test_a_save_returns_before_it_is_written_and_its_failure_comes_with_the_next_call(
        tmp_path, monkeypatch):
    """The caller gets control back once the host copies are taken; `latest` moves when the
    write is done; a write that fails in the background is the next call's one-line error,
    with the last intact checkpoint still `latest` and nothing half-written left."""
    import errno
    import threading
    directory = tmp_path / "checkpoints"
    checkpoints = ckpt_lib.Checkpoints(directory, keep=3, keep_best=False)
    state = make_state()
    checkpoints.save(state.replace(step=1), CONFIG, {"step": 1, "rng": [0, 0]})
    checkpoints.wait()
    release, written = threading.Event(), ckpt_lib.write_manifest

    def held_manifest(step_dir):
        assert release.wait(60)
        written(step_dir)
    monkeypatch.setattr(ckpt_lib, "write_manifest", held_manifest)
    checkpoints.save(state.replace(step=2), CONFIG, {"step": 2, "rng": [0, 0]})
    assert ckpt_lib.resolve(directory).name == "1"  # returned while step 2 is being written
    release.set()
    checkpoints.wait()
    assert ckpt_lib.resolve(directory).name == "2" and ckpt_lib.verify(directory / "2")

    def full_disk(step_dir):
        raise OSError(errno.ENOSPC, "No space left on device", str(step_dir))
    monkeypatch.setattr(ckpt_lib, "write_manifest", full_disk)
    checkpoints.save(state.replace(step=3), CONFIG, {"step": 3, "rng": [0, 0]})
    with pytest.raises(ckpt_lib.CheckpointError, match=r"disk is full.*step 2\) is intact"):
        checkpoints.save(state.replace(step=4), CONFIG, {"step": 4, "rng": [0, 0]})
    assert [d.name for d in ckpt_lib.step_dirs(directory)] == ["2", "1"]
    assert ckpt_lib.resolve(directory).name == "2"
    checkpoints.wait()  # the failure was reported once
    checkpoints.close()


SAVE_AND_TRAIN_ON = r"""
import sys, threading, time, jax, numpy as np, orbax.checkpoint as ocp
from mobilenet_jax import Config
from mobilenet_jax.core import checkpoint, parallel, steps
config = Config(width_multiplier=0.1, num_classes=10)
shapes = steps.build(config).abstract_state(parallel.Devices(config.recipe.batch_size))
state = jax.tree.map(lambda leaf: np.zeros(leaf.shape, leaf.dtype), shapes)
checkpoints = checkpoint.Checkpoints(sys.argv[1], keep=3, keep_best=False)
checkpoints.save(state.replace(step=1), config, {"step": 1, "rng": [0, 0]})
checkpoints.wait()
stage = sys.argv[2]
def in_flight(*args):  # the background write holds here until the process is killed
    sys.stdout.write("in flight\n")  # one write: the other thread prints too
    sys.stdout.flush()
    threading.Event().wait()
async def in_flight_async(*args, **kwargs):
    in_flight()
if stage == "orbax":  # writing the JSON items into the uncommitted step
    # Only a hook inside orbax can hold its write at this stage: its JSON handler's save.
    ocp.JsonCheckpointHandler.async_save = in_flight_async
else:
    checkpoint.write_manifest = in_flight  # committed by orbax, no manifest yet
checkpoints.save(state.replace(step=2), config, {"step": 2, "rng": [0, 0]})
sys.stdout.write("training on\n")
sys.stdout.flush()
while True:
    time.sleep(0.01)
"""


@pytest.mark.parametrize("stage", ["orbax", "manifest"])
def test_a_process_killed_while_a_background_write_is_in_flight_resumes_from_the_last_intact(
        tmp_path, stage):
    """SIGKILL while the training thread goes on and the checkpoint of step 2 is being
    written: the next start sets aside what that write left, and step 1 is `latest` and
    restores."""
    import signal
    directory = tmp_path / "checkpoints"
    proc = subprocess.Popen([sys.executable, "-c", SAVE_AND_TRAIN_ON, str(directory), stage],
                            stdout=subprocess.PIPE, text=True)
    seen = {proc.stdout.readline().strip() for _ in range(2)}
    assert seen == {"in flight", "training on"}, seen
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (directory / "2").exists() or list(directory.glob("2.orbax-checkpoint-tmp*"))
    lines = []
    ckpt_lib.Checkpoints(directory, keep=3, keep_best=False, say=lines.append).close()
    assert [d.name for d in ckpt_lib.step_dirs(directory)] == ["1"], lines
    assert not list(directory.glob("*orbax-checkpoint-tmp*"))
    assert ckpt_lib.resolve(directory).name == "1" and restore(directory / "1").step == 1
