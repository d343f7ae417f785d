"""The training loop: exact resume, NaN handling, resume config checks."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mobilenet_jax import Config, steps
from mobilenet_jax import train as train_lib
from mobilenet_jax.evaluate import load_state


def tiny_config(subset_dir, workdir, **kw):
    # 300 images: 30 for validation, 270 for training = 8 steps of 32 per epoch.
    base = dict(width_multiplier=0.1, batch_size=32, split="train[:10%]", val_fraction=0.1,
                epochs=3, data_dir=subset_dir, offline=True, progress=False,
                workdir=str(workdir), keep=2)
    base.update(kw)
    return Config(**base)


def restored(workdir, step):
    state, config, position, _ = load_state(workdir / "checkpoints" / str(step))
    return state, position


def test_resume_is_exact(subset_dir, tmp_path, capsys):
    """12 steps straight == 6 steps, stop, 6 steps resumed (across an epoch boundary)."""
    a, b = tmp_path / "straight", tmp_path / "resumed"
    train_lib.train(tiny_config(subset_dir, a, max_steps=12))
    train_lib.train(tiny_config(subset_dir, b, max_steps=6, keep=3))
    capsys.readouterr()
    train_lib.train(tiny_config(subset_dir, b, max_steps=12, keep=3))
    assert "resuming" in capsys.readouterr().out
    (sa, pa), (sb, pb) = restored(a, 12), restored(b, 12)
    assert int(sa.step) == int(sb.step) == 12 and pa == pb
    for name in ("params", "batch_stats", "opt_state"):
        leaves_a, leaves_b = jax.tree.leaves(getattr(sa, name)), jax.tree.leaves(getattr(sb, name))
        assert len(leaves_a) == len(leaves_b) > 0
        for x, y in zip(leaves_a, leaves_b):
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    s6, _ = restored(b, 6)  # and training did move the parameters
    assert not np.array_equal(np.asarray(s6.params["classifier"]["kernel"]),
                              np.asarray(sb.params["classifier"]["kernel"]))


def test_nan_loss_stops_and_keeps_last_good_checkpoint(subset_dir, tmp_path, monkeypatch):
    config = tiny_config(subset_dir, tmp_path, epochs=2, checkpoint_every=1)
    real_step = steps.train_step

    def poisoned(state, batch, rng, **kw):  # NaN images from step 10 on (epoch 2)
        scale = jnp.where(state.step >= 10, jnp.nan, 1.0)
        new_state, metrics = real_step(state, batch, rng, **kw)
        metrics["loss"] = metrics["loss"] * scale
        return new_state, metrics

    monkeypatch.setattr(steps, "train_step", poisoned)
    with pytest.raises(train_lib.TrainingStopped, match=r"nan at step 11.*step 8\) is intact"):
        train_lib.train(config)
    latest = (tmp_path / "checkpoints" / "latest").resolve()
    assert latest.name == "8"
    state, _ = restored(tmp_path, 8)
    assert all(bool(jnp.all(jnp.isfinite(p))) for p in jax.tree.leaves(state.params))


def test_resuming_with_a_different_architecture_is_refused(subset_dir, tmp_path):
    train_lib.train(tiny_config(subset_dir, tmp_path, max_steps=2))
    with pytest.raises(ValueError, match="width_multiplier=0.1.*width_multiplier=0.5"):
        train_lib.resolve_run_config({"width_multiplier": 0.5}, tmp_path)
    same = train_lib.resolve_run_config({"max_steps": 4, "keep": 1}, tmp_path)
    assert same.width_multiplier == 0.1 and same.max_steps == 4 and same.keep == 1
