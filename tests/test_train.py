"""The training loop: exact resume, NaN handling, schedules, weight-decay mask, config checks."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mobilenet_jax import Config
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
    real_step = train_lib.train_step

    def poisoned(state, batch, rng, **kw):  # NaN images from step 10 on (epoch 2)
        scale = jnp.where(state.step >= 10, jnp.nan, 1.0)
        new_state, metrics = real_step(state, batch, rng, **kw)
        metrics["loss"] = metrics["loss"] * scale
        return new_state, metrics

    monkeypatch.setattr(train_lib, "train_step", poisoned)
    with pytest.raises(train_lib.TrainingStopped, match=r"nan at step 11.*step 8\) is intact"):
        train_lib.train(config)
    latest = (tmp_path / "checkpoints" / "latest").resolve()
    assert latest.name == "8"
    state, _ = restored(tmp_path, 8)
    assert all(bool(jnp.all(jnp.isfinite(p))) for p in jax.tree.leaves(state.params))


def test_schedules_match_their_formulas():
    c = Config(lr=0.1, batch_size=256, epochs=10, warmup_epochs=2)  # peak 0.2 by linear scaling
    cosine = train_lib.learning_rate_schedule(c, steps_per_epoch=10)
    assert float(cosine(0)) == 0 and float(cosine(10)) == pytest.approx(0.1)
    assert float(cosine(20)) == pytest.approx(0.2)
    assert float(cosine(60)) == pytest.approx(0.2 * 0.5 * (1 + np.cos(np.pi * 40 / 80)))
    assert float(cosine(100)) == pytest.approx(0.0, abs=1e-9)
    step = train_lib.learning_rate_schedule(c.replace(schedule="step"), 10)
    assert [float(step(s)) for s in (49, 50, 74, 75)] == pytest.approx([0.2, 0.02, 0.02, 0.002])
    const = train_lib.learning_rate_schedule(c.replace(schedule="constant"), 10)
    assert [float(const(s)) for s in (10, 20, 99)] == pytest.approx([0.1, 0.2, 0.2])


@pytest.mark.parametrize("optimizer", ["sgd", "rmsprop", "adamw"])
def test_weight_decay_skips_batchnorm_and_bias(optimizer):
    c = Config(optimizer=optimizer, weight_decay=0.1, lr=1.0, warmup_epochs=0, schedule="constant",
               batch_size=128)
    tx = train_lib.create_optimizer(c, train_lib.learning_rate_schedule(c, 10))
    params = {"conv": {"kernel": jnp.ones((3, 3, 1, 2))}, "bn": {"scale": jnp.ones(2)},
              "dense": {"bias": jnp.ones(2)}}
    zero = jax.tree.map(jnp.zeros_like, params)
    updates, _ = tx.update(zero, tx.init(params), params)
    assert float(jnp.abs(updates["conv"]["kernel"]).max()) > 0  # decayed
    assert float(jnp.abs(updates["bn"]["scale"]).max()) == 0
    assert float(jnp.abs(updates["dense"]["bias"]).max()) == 0


def test_sgd_step_is_nesterov_momentum_with_decay():
    """One hand-computed step: g' = g + wd*p; v = g'; p -= lr * (g' + m*v)."""
    c = Config(lr=0.5, batch_size=128, weight_decay=0.1, momentum=0.9, warmup_epochs=0,
               schedule="constant")
    tx = train_lib.create_optimizer(c, train_lib.learning_rate_schedule(c, 10))
    p, g = {"w": jnp.full((2, 2), 2.0)}, {"w": jnp.full((2, 2), 1.0)}
    updates, _ = tx.update(g, tx.init(p), p)
    np.testing.assert_allclose(np.asarray(optax.apply_updates(p, updates)["w"]),
                               2.0 - 0.5 * (1.2 + 0.9 * 1.2), rtol=1e-6)


def test_metrics_top1_top5_hand_computed():
    logits = jnp.array([[0, 1, 2, 3, 4, 5], [5, 4, 3, 2, 1, 0], [0, 0, 0, 9, 0, 1.0]])
    labels = jnp.array([5, 5, 0])
    losses = jnp.ones(3)
    m = train_lib.classification_metrics(logits, labels, losses, jnp.array([1, 1, 0.0]))
    assert float(m["top1"]) == 1 and float(m["top5"]) == 1 and float(m["count"]) == 2


def test_metrics_top5_breaks_ties_like_a_stable_sort():
    """Top-5 is "the label is among the first 5 of a stable descending sort", ties included."""
    rng = np.random.default_rng(0)
    logits = rng.integers(0, 4, (200, 10)).astype(np.float32)  # many ties
    labels = rng.integers(0, 10, 200)
    expected = sum(label in np.argsort(-row, kind="stable")[:5]
                   for row, label in zip(logits, labels))
    top1 = sum(np.argmax(row) == label for row, label in zip(logits, labels))
    m = train_lib.classification_metrics(jnp.asarray(logits), jnp.asarray(labels),
                                         jnp.ones(200), jnp.ones(200))
    assert int(m["top5"]) == expected and int(m["top1"]) == top1
    assert 0 < expected < 200


def test_resuming_with_a_different_architecture_is_refused(subset_dir, tmp_path):
    train_lib.train(tiny_config(subset_dir, tmp_path, max_steps=2))
    with pytest.raises(ValueError, match="width_multiplier=0.1.*width_multiplier=0.5"):
        train_lib.resolve_run_config({"width_multiplier": 0.5}, tmp_path)
    same = train_lib.resolve_run_config({"max_steps": 4, "keep": 1}, tmp_path)
    assert same.width_multiplier == 0.1 and same.max_steps == 4 and same.keep == 1


@pytest.mark.parametrize("train", [True, False])
def test_step_buffer_estimate_tracks_xla(train):
    """The estimate behind the allocator choice is within 1.5x of XLA's own temp buffer."""
    import functools
    from mobilenet_jax.benchmark import synthetic_batch
    config = Config(width_multiplier=0.25, batch_size=32)
    devices = train_lib.Devices(config.batch_size)
    schedule, init_fn = train_lib.state_initializer(config, 10)
    state = jax.jit(init_fn)(jax.random.key(0))
    batch = devices.global_batch({**synthetic_batch(32, config.num_classes),
                                  "mask": np.ones(32, np.float32)})
    if train:
        step = jax.jit(functools.partial(train_lib.train_step, config=config, schedule=schedule))
        lowered = step.lower(state, batch, jax.random.key(0))
    else:
        lowered = jax.jit(functools.partial(train_lib.eval_step, config=config)).lower(state, batch)
    temp = lowered.compile().memory_analysis().temp_size_in_bytes
    estimate = train_lib.estimated_step_bytes(config, 32, train)
    assert temp / 1.5 < estimate < temp * 1.5, (estimate, temp)


def test_step_buffer_estimate_starts_no_backend():
    """The CLIs set the allocator from the estimate, which must come before JAX's backend."""
    import subprocess
    import sys
    probe = ("from jax._src import xla_bridge\n"
             "from mobilenet_jax import Config, train\n"
             "assert train.estimated_step_bytes(Config(width_multiplier=0.1), 128) > 0\n"
             "print(bool(xla_bridge._backends))")
    out = subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True,
                         text=True).stdout
    assert out.strip() == "False"
