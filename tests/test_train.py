"""The training loop: exact resume, NaN handling, resume config checks."""
import builtins
import collections
import os
import pathlib

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import tiny_config, train
from mobilenet_jax import Config
from mobilenet_jax.config import save_json
from mobilenet_jax.core import parallel, steps
from mobilenet_jax.training import loop, plan
from mobilenet_jax.training.step_metrics import TrainingStopped
from mobilenet_jax.core.restore import restore


def restored(workdir, step):
    model = restore(workdir / "checkpoints" / str(step))
    return model.state, model.position


RUN_AHEAD = {"lag": 8, "prefetch": 2}  # an accelerator's setting (parallel.run_ahead)


def test_resume_is_exact(subset_dir, tmp_path, capsys, monkeypatch):
    """12 steps straight == 6 steps, stop, 6 steps resumed (across an epoch boundary); the
    resumed steps run ahead of the device as on an accelerator (prefetched batches, metrics
    read late), the straight ones do not: the same batches, the same result."""
    a, b = tmp_path / "straight", tmp_path / "resumed"
    train(tiny_config(subset_dir, a, max_steps=12))
    train(tiny_config(subset_dir, b, max_steps=6, keep=3))
    capsys.readouterr()
    monkeypatch.setattr(parallel, "run_ahead", lambda backend: RUN_AHEAD)
    train(tiny_config(subset_dir, b, max_steps=12, keep=3))
    assert "resuming" in capsys.readouterr().out
    (sa, pa), (sb, pb) = restored(a, 12), restored(b, 12)
    assert int(sa.step) == int(sb.step) == 12 and pa == pb
    for name in ("params", "batch_stats", "opt_state", "ema", "precise_batch_stats"):
        leaves_a, leaves_b = jax.tree.leaves(getattr(sa, name)), jax.tree.leaves(getattr(sb, name))
        assert len(leaves_a) == len(leaves_b) > 0
        for x, y in zip(leaves_a, leaves_b):
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    s6, _ = restored(b, 6)  # and training did move the parameters
    assert not np.array_equal(np.asarray(s6.params["classifier"]["kernel"]),
                              np.asarray(sb.params["classifier"]["kernel"]))


@pytest.mark.parametrize("ahead", [None, RUN_AHEAD])
def test_nan_loss_stops_and_keeps_last_good_checkpoint(subset_dir, tmp_path, monkeypatch, ahead,
                                                       fresh_steps):
    """Also when the loss is read late: it is read before anything is saved."""
    config = tiny_config(subset_dir, tmp_path, checkpoint_every=1)
    if ahead:
        monkeypatch.setattr(parallel, "run_ahead", lambda backend: ahead)
    real_step = steps.train_step

    def poisoned(state, batch, rng, **kw):  # NaN images from step 10 on (epoch 2)
        scale = jnp.where(state.step >= 10, jnp.nan, 1.0)
        new_state, metrics = real_step(state, batch, rng, **kw)
        metrics["loss"] = metrics["loss"] * scale
        return new_state, metrics

    monkeypatch.setattr(steps, "train_step", poisoned)
    with pytest.raises(TrainingStopped, match=r"nan at step 11.*step 8\) is intact"):
        train(config)
    latest = (tmp_path / "checkpoints" / "latest").resolve()
    assert latest.name == "8"
    state, _ = restored(tmp_path, 8)
    assert all(bool(jnp.all(jnp.isfinite(p))) for p in jax.tree.leaves(state.params))


def test_resuming_with_a_different_architecture_is_refused(subset_dir, tmp_path):
    train(tiny_config(subset_dir, tmp_path, max_steps=2))
    with pytest.raises(ValueError, match="width_multiplier=0.1.*width_multiplier=0.5"):
        plan.run_config({"width_multiplier": 0.5, "workdir": str(tmp_path)})
    same, resuming, _ = plan.run_config({"max_steps": 4, "keep": 1, "workdir": str(tmp_path)})
    assert resuming
    assert same.network.width_multiplier == 0.1 and same.run.max_steps == 4 and same.run.keep == 1


def test_each_group_of_a_resumed_config_follows_its_rule(tmp_path):
    """Fixed groups refuse a changed flag; run and compute take this invocation's flags, else
    the defaults; places keep the run's unless passed (a workdir that holds a run: its
    config.json and a latest checkpoint)."""
    stored = Config(width_multiplier=0.25, lr=0.05, seed=3, dtype="bfloat16", keep=1,
                    data_dir="data", workdir=str(tmp_path))
    save_json(stored, tmp_path / "config.json")
    (tmp_path / "checkpoints" / "latest").mkdir(parents=True)
    for flag, value in (("width_multiplier", 0.5), ("lr", 0.1), ("seed", 4), ("split", "x")):
        with pytest.raises(ValueError, match=f"{flag}={value!r} was passed"):
            plan.run_config({flag: value, "workdir": str(tmp_path)})
    resumed, resuming, _ = plan.run_config({"workdir": str(tmp_path), "max_steps": 9})
    assert resuming and resumed.replace(max_steps=None, keep=1, dtype="bfloat16") == stored
    assert resumed.run.keep == Config().run.keep and resumed.compute.dtype == "float32"
    moved, _, _ = plan.run_config({"workdir": str(tmp_path), "data_dir": "moved", "lr": 0.05})
    assert moved.places.data_dir == "moved" and moved.recipe.lr == 0.05


def test_resume_falls_back_past_a_corrupt_newest_checkpoint(subset_dir, tmp_path, capsys):
    """The newest checkpoint corrupted: the rerun sets it aside, resumes from the one before
    and ends exactly where an uninterrupted run ends."""
    a, b = tmp_path / "straight", tmp_path / "corrupted"
    train(tiny_config(subset_dir, a))
    train(tiny_config(subset_dir, b, max_steps=12))  # saves 8 and 12
    state_file = max((p for p in (b / "checkpoints" / "12" / "state").rglob("*") if p.is_file()),
                     key=lambda p: p.stat().st_size)
    data = bytearray(state_file.read_bytes())
    data[len(data) // 2] ^= 1
    state_file.write_bytes(bytes(data))
    capsys.readouterr()
    train(tiny_config(subset_dir, b))
    out = capsys.readouterr().out
    assert "12 is corrupt" in out and "moved it to 12.corrupt" in out
    assert "resuming" in out and "from step 8" in out
    assert (b / "checkpoints" / "12.corrupt").is_dir()
    (sa, _), (sb, _) = restored(a, 16), restored(b, 16)
    chex.assert_trees_all_equal((sa.params, sa.batch_stats, sa.opt_state),
                                (sb.params, sb.batch_stats, sb.opt_state))


def test_max_steps_applies_to_the_invocation_that_passes_it(subset_dir, tmp_path, capsys):
    train(tiny_config(subset_dir, tmp_path, max_steps=4))
    again = plan.resolve({"max_steps": 4, "workdir": str(tmp_path)})
    assert loop.train(again) == {"step": 4, "stopped": True}  # no fifth step
    assert "nothing to train" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["4", "latest"]
    without, _, _ = plan.run_config({"workdir": str(tmp_path)})
    assert without.run.max_steps is None
    assert without.run.keep == Config().run.keep  # not the stored 2
    assert train(without.replace(max_steps=6))["step"] == 6


def test_a_run_records_its_class_names_and_keeps_them(subset_dir, tmp_path):
    config = tiny_config(subset_dir, tmp_path, max_steps=2)
    train(config)
    stored = restore(tmp_path / "checkpoints" / "2").config
    assert len(stored.data.class_names) == 100 and stored.data.class_names[6] == "bee"
    resumed, _, _ = plan.run_config({"workdir": str(tmp_path)})
    assert resumed.data.class_names == stored.data.class_names
    with pytest.raises(ValueError, match="trained on classes"):
        plan.with_class_names(stored, tuple(f"c{i}" for i in range(100)))


def test_a_preset_gives_its_values_and_given_flags_win(folder, tmp_path):
    from helpers import CLASSES, run
    from mobilenet_jax.config import PRESETS, load_json
    result = run(["mobilenet_jax.train", "--preset", "imagenet", "--image-folder", str(folder),
                  "--num-classes", str(len(CLASSES)), "--resolution", "32", "--alpha", "0.1",
                  "--batch-size", "8", "--max-steps", "1", "--precise-bn-batches", "1",
                  "--no-progress", "--workdir", "run"], tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    config = load_json(tmp_path / "run" / "config.json")
    given = {"num_classes": len(CLASSES), "resolution": 32, "batch_size": 8}
    for name, value in PRESETS["imagenet"].items():
        assert config.flat()[name] == given.get(name, value), name
    assert config.data.random_resized_crops  # streamed, images of varied sizes


def test_a_resumed_or_fine_tuned_run_reads_each_config_once(subset_dir, tmp_path, monkeypatch):
    """The plan reads the workdir's config.json (resume) and the --init-from checkpoint's
    config (fine-tune) once each; nothing after it reads them again."""
    source = tmp_path / "source"
    train(tiny_config(subset_dir, source, max_steps=2))
    reads = collections.Counter()
    real_open, real_read_text = builtins.open, pathlib.Path.read_text

    def counting_open(file, mode="r", *args, **kwargs):
        if isinstance(file, (str, os.PathLike)) and "b" not in mode and "r" in mode:
            reads[pathlib.Path(file).absolute()] += 1
        return real_open(file, mode, *args, **kwargs)

    def counting_read_text(path, *args, **kwargs):
        reads[path.absolute()] += 1
        return real_read_text(path, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", counting_open)
    monkeypatch.setattr(pathlib.Path, "read_text", counting_read_text)
    train(tiny_config(subset_dir, source, max_steps=4))
    assert reads[(source / "config.json").absolute()] == 1
    step_dir = (source / "checkpoints" / "4").absolute()
    train(tiny_config(subset_dir, tmp_path / "fine-tuned", init_from=str(step_dir), max_steps=1))
    assert reads[step_dir / "config" / "metadata"] == 1
