"""Checkpoint paths, retention, the `latest` link, and the errors for bad checkpoints."""
import json
import subprocess
import sys

import jax
import numpy as np
import pytest

from mobilenet_jax import Config, steps
from mobilenet_jax import checkpoint as ckpt_lib
from mobilenet_jax.evaluate import load_state

CONFIG = Config(width_multiplier=0.1, num_classes=10)


def make_state(config=CONFIG, seed=0):
    return steps.build(config).init_state(jax.random.key(seed))


def save_steps(directory, steps, keep=2, val_top1=None):
    checkpoints = ckpt_lib.Checkpoints(directory, keep=keep, keep_best=val_top1 is not None)
    state = make_state()
    for i, step in enumerate(steps):
        metrics = {"val_top1": val_top1[i]} if val_top1 else None
        checkpoints.save(state.replace(step=step), CONFIG, {"step": step, "rng": [0, 0]}, metrics)
    checkpoints.close()


def test_latest_link_and_retention_keep_last_n_plus_best(tmp_path):
    save_steps(tmp_path / "checkpoints", [1, 2, 3, 4, 5], keep=2,
               val_top1=[0.1, 0.9, 0.3, 0.2, 0.4])
    steps = sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit())
    assert steps == [2, 4, 5]  # the last two, plus the best (step 2)
    assert (tmp_path / "checkpoints" / "latest").resolve().name == "5"


@pytest.mark.parametrize("form", ["workdir", "checkpoints", "latest", "step"])
def test_resolve_accepts_every_form(tmp_path, form):
    save_steps(tmp_path / "checkpoints", [3, 7])
    path = {"workdir": tmp_path, "checkpoints": tmp_path / "checkpoints",
            "latest": tmp_path / "checkpoints" / "latest",
            "step": tmp_path / "checkpoints" / "7"}[form]
    assert ckpt_lib.resolve(path).name == "7"


def test_restore_round_trips_the_state(tmp_path):
    save_steps(tmp_path / "checkpoints", [4])
    state, config, position, _ = load_state(tmp_path / "checkpoints" / "4")
    original = make_state()
    assert config == CONFIG and position["step"] == 4 and int(state.step) == 4
    for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(original.params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_missing_and_empty_paths_are_checkpoint_errors(tmp_path):
    with pytest.raises(ckpt_lib.CheckpointError, match="does not exist"):
        ckpt_lib.resolve(tmp_path / "nope")
    with pytest.raises(ckpt_lib.CheckpointError, match="no checkpoint in"):
        ckpt_lib.resolve(tmp_path)


def test_corrupt_checkpoint_is_a_checkpoint_error(tmp_path):
    save_steps(tmp_path / "checkpoints", [1])
    step_dir = tmp_path / "checkpoints" / "1"
    for f in (step_dir / "state").rglob("*"):
        if f.is_file():
            f.write_bytes(b"garbage")
    with pytest.raises(ckpt_lib.CheckpointError, match="cannot be restored|unreadable"):
        load_state(step_dir)


def test_checkpoint_of_another_architecture_is_refused(tmp_path):
    save_steps(tmp_path / "checkpoints", [1])
    step_dir = tmp_path / "checkpoints" / "1"
    with pytest.raises(ckpt_lib.CheckpointError, match="width_multiplier=0.1.*0.25"):
        load_state(step_dir, {"width_multiplier": 0.25})
    # a checkpoint whose stored config was altered no longer fits its arrays
    config_file = step_dir / "config" / "metadata"  # the JsonSave file
    config = json.loads(config_file.read_text())
    config["width_multiplier"] = 0.25
    config_file.write_text(json.dumps(config))
    with pytest.raises(ckpt_lib.CheckpointError, match="other names or shapes"):
        load_state(step_dir)


def test_free_flags_may_differ(tmp_path):
    save_steps(tmp_path / "checkpoints", [1])
    state, config, _, _ = load_state(tmp_path / "checkpoints" / "1", {"kernels": "reference"})
    assert config.kernels == "reference"


@pytest.mark.parametrize("depthwise,kernels", [("xla", "reference"), ("vjp", "cpu"),
                                               ("slices", "cpu"), ("auto", "auto")])
def test_checkpoint_with_a_depthwise_config_restores(tmp_path, depthwise, kernels):
    """Configs stored before the kernel policy named the formulation `depthwise`."""
    save_steps(tmp_path / "checkpoints", [1])
    config_file = tmp_path / "checkpoints" / "1" / "config" / "metadata"
    stored = json.loads(config_file.read_text())
    del stored["kernels"]
    config_file.write_text(json.dumps({**stored, "depthwise": depthwise}))
    state, config, _, _ = load_state(tmp_path / "checkpoints" / "1")
    assert config.kernels == kernels and config.width_multiplier == CONFIG.width_multiplier
    for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(make_state().params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_read_config_starts_no_backend(tmp_path):
    """evaluate sets the allocator from the stored config, which must come before JAX's
    backend starts (hostmem)."""
    save_steps(tmp_path / "checkpoints", [1])
    probe = ("import sys\nfrom jax._src import xla_bridge\n"
             "from mobilenet_jax.evaluate import checkpoint_config\n"
             "config = checkpoint_config(sys.argv[1], {'kernels': 'reference'})\n"
             "print(config.width_multiplier, config.kernels, bool(xla_bridge._backends))")
    out = subprocess.run([sys.executable, "-c", probe, str(tmp_path / "checkpoints" / "1")],
                         check=True, capture_output=True, text=True).stdout
    assert out.split() == [str(CONFIG.width_multiplier), "reference", "False"]
