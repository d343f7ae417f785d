"""The steps and what they are built from, against hand-computed values: schedules, the
optimizer's update and weight-decay mask, top-1/top-5; and bfloat16 steps track float32.
A step against the formula it implements runs in float64 (tests/numerics.py); the scalar
checks of a few float32 operations keep pytest.approx's 1e-6, 8 float32 ulps."""
import functools
import logging
import re

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from numerics import as_float64, assert_same, float64

from mobilenet_jax import Config
from mobilenet_jax.core import parallel, steps
from mobilenet_jax.models.mobilenet import MobileNetV1

pytestmark = pytest.mark.numerics  # .ci/run runs these again on another instruction set


def in_float64(state: steps.TrainState, config: Config) -> steps.TrainState:
    """`state` with every float array in float64, run by `config`'s network computing in
    float64 (the steps still standardise images in float32, the same values either way)."""
    model = MobileNetV1(**{**config.model_kwargs(), "dtype": jnp.float64})
    return as_float64(state.replace(apply_fn=model.apply))


def test_schedules_match_their_formulas():
    c = Config(lr=0.1, batch_size=256, epochs=10, warmup_epochs=2)  # peak 0.2 by linear scaling
    cosine = steps.learning_rate_schedule(c.recipe, steps_per_epoch=10)
    assert float(cosine(0)) == 0 and float(cosine(10)) == pytest.approx(0.1)
    assert float(cosine(20)) == pytest.approx(0.2)
    assert float(cosine(60)) == pytest.approx(0.2 * 0.5 * (1 + np.cos(np.pi * 40 / 80)))
    assert float(cosine(100)) == pytest.approx(0.0, abs=1e-9)
    step = steps.learning_rate_schedule(c.replace(schedule="step").recipe, 10)
    assert [float(step(s)) for s in (49, 50, 74, 75)] == pytest.approx([0.2, 0.02, 0.02, 0.002])
    const = steps.learning_rate_schedule(c.replace(schedule="constant").recipe, 10)
    assert [float(const(s)) for s in (10, 20, 99)] == pytest.approx([0.1, 0.2, 0.2])
    # x0.5 every 2.5 epochs (25 steps) after the 20 warm-up steps, in whole steps of decay
    exponential = steps.learning_rate_schedule(
        c.replace(schedule="exponential", lr_decay_factor=0.5, lr_decay_epochs=2.5).recipe, 10)
    assert [float(exponential(s)) for s in (10, 20, 44, 45, 70, 99)] == pytest.approx(
        [0.1, 0.2, 0.2, 0.1, 0.05, 0.025])


@pytest.mark.parametrize("optimizer", ["sgd", "rmsprop", "adamw"])
def test_weight_decay_skips_batchnorm_and_bias(optimizer):
    c = Config(optimizer=optimizer, weight_decay=0.1, lr=1.0, warmup_epochs=0, schedule="constant",
               batch_size=128)
    tx = steps.create_optimizer(c.recipe, steps.learning_rate_schedule(c.recipe, 10))
    params = {"conv": {"kernel": jnp.ones((3, 3, 1, 2))}, "bn": {"scale": jnp.ones(2)},
              "dense": {"bias": jnp.ones(2)}}
    zero = jax.tree.map(jnp.zeros_like, params)
    updates, _ = tx.update(zero, tx.init(params), params)
    assert float(jnp.abs(updates["conv"]["kernel"]).max()) > 0  # decayed
    assert float(jnp.abs(updates["bn"]["scale"]).max()) == 0
    assert float(jnp.abs(updates["dense"]["bias"]).max()) == 0


def test_depthwise_kernels_can_go_undecayed():
    """As in the reference MobileNet v1 training: every other kernel is decayed by the same
    hand-computed step (SGD without momentum: p -= lr * wd * p)."""
    c = Config(weight_decay=0.1, lr=1.0, momentum=0.0, warmup_epochs=0, schedule="constant",
               batch_size=128, decay_depthwise=False)
    tx = steps.create_optimizer(c.recipe, steps.learning_rate_schedule(c.recipe, 10))
    params = {"depthwise": jnp.ones((3, 3, 1, 8)), "stem": jnp.ones((3, 3, 3, 8)),
              "pointwise": jnp.ones((1, 1, 1, 8)), "dense": jnp.ones((8, 4))}
    updates, _ = tx.update(jax.tree.map(jnp.zeros_like, params), tx.init(params), params)
    assert float(jnp.abs(updates["depthwise"]).max()) == 0
    for name in ("stem", "pointwise", "dense"):
        np.testing.assert_allclose(np.asarray(updates[name]), -0.1, rtol=1e-6)


def test_backbone_lr_scale_scales_every_backbone_update_and_no_head_update():
    c = Config(lr=0.5, batch_size=128, warmup_epochs=0, schedule="constant")
    rng = np.random.default_rng(0)
    with float64():
        params = {"block1": {"kernel": rng.normal(size=(1, 1, 4, 8))},
                  "classifier": {"kernel": rng.normal(size=(8, 3)), "bias": rng.normal(size=3)}}
        grads = jax.tree.map(lambda p: rng.normal(size=p.shape), params)
        updates = {}
        for scale in (1.0, 0.1):
            config = c.replace(backbone_lr_scale=scale)
            recipe = config.recipe
            tx = steps.create_optimizer(recipe, steps.learning_rate_schedule(recipe, 10))
            updates[scale] = as_float64(tx.update(grads, tx.init(params), params)[0])
    assert_same(updates[0.1]["block1"], jax.tree.map(lambda u: 0.1 * u, updates[1.0]["block1"]))
    assert_same(updates[0.1]["classifier"], updates[1.0]["classifier"])
    assert np.abs(updates[1.0]["block1"]["kernel"]).max() > 0


def test_sgd_step_is_nesterov_momentum_with_decay():
    """One hand-computed step: g' = g + wd*p; v = g'; p -= lr * (g' + m*v)."""
    c = Config(lr=0.5, batch_size=128, weight_decay=0.1, momentum=0.9, warmup_epochs=0,
               schedule="constant")
    tx = steps.create_optimizer(c.recipe, steps.learning_rate_schedule(c.recipe, 10))
    p, g = {"w": jnp.full((2, 2), 2.0)}, {"w": jnp.full((2, 2), 1.0)}
    updates, _ = tx.update(g, tx.init(p), p)
    np.testing.assert_allclose(np.asarray(optax.apply_updates(p, updates)["w"]),
                               2.0 - 0.5 * (1.2 + 0.9 * 1.2), rtol=1e-6)


def test_metrics_top1_top5_hand_computed():
    logits = jnp.array([[0, 1, 2, 3, 4, 5], [5, 4, 3, 2, 1, 0], [0, 0, 0, 9, 0, 1.0]])
    labels = jnp.array([5, 5, 0])
    losses = jnp.ones(3)
    m = steps.classification_metrics(logits, labels, losses, jnp.array([1, 1, 0.0]))
    assert float(m["top1"]) == 1 and float(m["top5"]) == 1 and float(m["count"]) == 2


def test_metrics_top5_breaks_ties_like_a_stable_sort():
    """Top-5 is "the label is among the first 5 of a stable descending sort", ties included."""
    rng = np.random.default_rng(0)
    logits = rng.integers(0, 4, (200, 10)).astype(np.float32)  # many ties
    labels = rng.integers(0, 10, 200)
    expected = sum(label in np.argsort(-row, kind="stable")[:5]
                   for row, label in zip(logits, labels))
    top1 = sum(np.argmax(row) == label for row, label in zip(logits, labels))
    m = steps.classification_metrics(jnp.asarray(logits), jnp.asarray(labels),
                                         jnp.ones(200), jnp.ones(200))
    assert int(m["top5"]) == expected and int(m["top1"]) == top1
    assert 0 < expected < 200


def test_bfloat16_training_tracks_float32():
    """Six steps on one fixed batch along the float32 trajectory: from each same state, the
    bfloat16 step's loss is within 0.1 nats of float32's (measured <= 0.06) and its update
    points the same way (cosine >= 0.6 after the first step; measured 0.78-0.95, and
    0.34-0.45 at the very first step from init for every depthwise formulation, nn.Conv's
    included). Compared state by state because whole trajectories diverge chaotically at
    this learning rate even between float32 implementations. A bfloat16-only run trains."""
    rng = np.random.default_rng(0)
    batch = {"image": jnp.asarray(rng.integers(0, 256, (64, 32, 32, 3), np.uint8)),
             "label": jnp.asarray(rng.integers(0, 100, 64).astype(np.int32))}
    step_fns, applies = {}, {}
    for dtype in ("float32", "bfloat16"):
        training = steps.build(Config(width_multiplier=0.25, dtype=dtype, lr=0.05,
                                      warmup_epochs=0, batch_size=128, label_smoothing=0.0),
                               steps_per_epoch=10)
        step_fns[dtype] = jax.jit(functools.partial(steps.train_step, config=training.config,
                                                    schedule=training.schedule))
        applies[dtype] = training.model.apply
    flat = lambda tree: jnp.concatenate([x.ravel() for x in jax.tree.leaves(tree)])  # noqa: E731

    state = jax.jit(training.init_state)(jax.random.key(0))
    bf16_state, bf16_losses = state, []
    for k in range(6):
        out = {}
        for dtype in step_fns:
            new, metrics = step_fns[dtype](state.replace(apply_fn=applies[dtype]), batch,
                                        jax.random.key(1))
            out[dtype] = new, float(metrics["loss"] / metrics["count"])
        assert np.isfinite(out["bfloat16"][1])
        assert abs(out["bfloat16"][1] - out["float32"][1]) < 0.1, (k, out)
        d32 = flat(out["float32"][0].params) - flat(state.params)
        d16 = flat(out["bfloat16"][0].params) - flat(state.params)
        assert {p.dtype for p in jax.tree.leaves(out["bfloat16"][0].params)} == \
            {jnp.dtype("float32")}
        if k > 0:
            assert float(d32 @ d16 / jnp.linalg.norm(d32) / jnp.linalg.norm(d16)) >= 0.6, k
        state = out["float32"][0]
        bf16_state, metrics = step_fns["bfloat16"](bf16_state, batch, jax.random.key(1))
        bf16_losses.append(float(metrics["loss"] / metrics["count"]))
    assert np.all(np.isfinite(bf16_losses)) and bf16_losses[-1] < bf16_losses[0]


def test_ema_follows_its_formula_and_is_what_evaluation_runs():
    """Three steps with ema_decay 0.5: the average is min(0.5, (1+t)/(10+t)) = 0.1, 2/11, 0.25
    of the old average plus the rest of the new weights, by hand from the states the steps
    produced; eval_step runs the average (no recomputed statistics), and without EMA the
    state keeps none."""
    rng = np.random.default_rng(0)
    batch = {"image": jnp.asarray(rng.integers(0, 256, (16, 32, 32, 3), np.uint8)),
             "label": jnp.asarray(rng.integers(0, 10, 16).astype(np.int32)),
             "mask": jnp.ones(16)}
    config = Config(width_multiplier=0.1, num_classes=10, ema_decay=0.5, warmup_epochs=0,
                    precise_bn_batches=0, kernels="reference")
    training = steps.build(config, steps_per_epoch=10)
    step = jax.jit(functools.partial(steps.train_step, config=config, schedule=training.schedule))
    with float64():
        state = in_float64(jax.jit(training.init_state)(jax.random.key(0)), config)
        for decay in (0.1, 2 / 11, 0.25):
            previous = state.ema
            state, _ = step(state, batch, jax.random.key(1))
            new = {"params": state.params, "batch_stats": state.batch_stats}
            assert_same(state.ema, jax.tree.map(lambda a, v: decay * a + (1 - decay) * v,
                                                as_float64(previous), as_float64(new)))
        moved = jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()), state.ema["params"],
                             state.params)
        assert max(jax.tree.leaves(moved)) > 1e-3  # the average is not the weights themselves
        metrics, _ = jax.jit(functools.partial(steps.eval_step, config=config))(state, batch)
        logits = jax.jit(lambda v, x: state.apply_fn(v, x, train=False))(
            state.ema, steps.normalize(batch["image"], config))
        expected_loss = optax.softmax_cross_entropy_with_integer_labels(
            logits, batch["label"]).sum()
    assert_same(metrics["loss"], expected_loss)
    no_average = steps.build(config.replace(ema_decay=0.0))
    assert jax.eval_shape(no_average.init_state, jax.random.key(0)).ema is None


def test_batch_statistics_are_the_batch_moments_and_only_evaluation_reads_them():
    """The stem BatchNorm's statistics of a batch are the mean and (biased) variance over
    images, rows and columns of a naive stride-2 convolution with the evaluated (averaged)
    stem kernel; eval_step runs the recomputed statistics; the train step carries them
    unchanged, and its result does not depend on them."""
    rng = np.random.default_rng(0)
    batch = {"image": jnp.asarray(rng.integers(0, 256, (8, 32, 32, 3), np.uint8)),
             "label": jnp.asarray(np.arange(8) % 10, jnp.int32), "mask": jnp.ones(8)}
    config = Config(width_multiplier=0.1, num_classes=10, augment=False, warmup_epochs=0,
                    kernels="reference")
    training = steps.build(config, steps_per_epoch=10)
    kernel = rng.normal(size=(3, 3, 3, 3))
    with float64():
        state = in_float64(jax.jit(training.init_state)(jax.random.key(0)), config)
        assert state.params["stem"]["kernel"].shape == kernel.shape
        state = state.replace(ema={**state.ema, "params": {**state.ema["params"],
                                                           "stem": {"kernel": kernel}}})
        stats = jax.jit(functools.partial(steps.batch_statistics_step, config=config))(
            state, batch, jax.random.key(1))
        images = np.asarray(steps.normalize(batch["image"], config), np.float64)

        x = np.pad(images, ((0, 0), (1, 1), (1, 1), (0, 0)))
        out = sum(np.einsum("nhwc,co->nhwo", x[:, i:i + 32:2, j:j + 32:2], kernel[i, j])
                  for i in range(3) for j in range(3))
        assert_same((stats["stem_bn"]["mean"], stats["stem_bn"]["var"]),
                    (out.mean((0, 1, 2)), out.var((0, 1, 2))))

        with_stats = state.replace(precise_batch_stats=stats)
        metrics, _ = jax.jit(functools.partial(steps.eval_step, config=config))(with_stats, batch)
        logits = jax.jit(lambda v, x: state.apply_fn(v, x, train=False))(
            {"params": state.ema["params"], "batch_stats": stats}, images)
        expected_loss = optax.softmax_cross_entropy_with_integer_labels(
            logits, batch["label"]).sum()
        assert_same(metrics["loss"], expected_loss)

        step = jax.jit(functools.partial(steps.train_step, config=config,
                                         schedule=training.schedule))
        after, _ = step(with_stats, batch, jax.random.key(2))
        after_initial, _ = step(state, batch, jax.random.key(2))
    chex.assert_trees_all_equal(after.precise_batch_stats, stats)
    chex.assert_trees_all_equal((after.params, after.batch_stats, after.opt_state, after.ema),
                                (after_initial.params, after_initial.batch_stats,
                                 after_initial.opt_state, after_initial.ema))
    frozen = steps.build(config.replace(freeze_backbone=True))
    assert jax.eval_shape(frozen.init_state, jax.random.key(0)).precise_batch_stats is None


def test_mixup_and_cutmix_train_against_mixed_targets():
    """With mixup or CutMix on, the step's loss is the cross-entropy against targets that are
    not one-hot, so it differs from the plain step on the same state and batch."""
    rng = np.random.default_rng(0)
    batch = {"image": jnp.asarray(rng.integers(0, 256, (16, 32, 32, 3), np.uint8)),
             "label": jnp.asarray(np.arange(16) % 10, jnp.int32)}
    losses, state = {}, None
    for mixing in ({}, {"mixup_alpha": 1.0}, {"cutmix_alpha": 1.0}):
        config = Config(width_multiplier=0.1, num_classes=10, augment=False,
                        kernels="reference", **mixing)  # (compiles faster than `cpu`'s)
        training = steps.build(config, steps_per_epoch=10)
        state = state or jax.jit(training.init_state)(jax.random.key(0))  # the same for all
        step = jax.jit(functools.partial(steps.train_step, config=config,
                                         schedule=training.schedule))
        _, metrics = step(state, batch, jax.random.key(1))
        losses[tuple(mixing)] = float(metrics["loss"])
    assert len(set(losses.values())) == 3 and all(np.isfinite(list(losses.values())))


def test_runs_that_differ_only_in_what_no_step_reads_trace_their_steps_once(caplog,
                                                                           fresh_steps):
    """Runs that differ in where and how they run share one traced (and compiled) train step;
    another learning rate is another step. Traces counted in JAX's compile log."""
    devices = parallel.Devices(4)
    batch = {"image": jax.ShapeDtypeStruct((4, 32, 32, 3), jnp.uint8),
             "label": jax.ShapeDtypeStruct((4,), jnp.int32)}
    tiny = dict(width_multiplier=0.05, num_classes=5, batch_size=4)
    configs = (Config(**tiny, workdir="a", max_steps=3, data_dir="d"),
               Config(**tiny, workdir="b", keep=1, progress=False), Config(**tiny, lr=0.2))
    traces = []
    for config in configs:
        training = steps.build(config, 10)
        with jax.log_compiles(), caplog.at_level(logging.WARNING, logger="jax"):
            caplog.clear()
            training.jit_steps(devices).train.lower(training.abstract_state(devices), batch,
                                                    jax.random.key(0))
        traces.append(sum(bool(re.match(r"Finished tracing.* train_step ", r.getMessage()))
                          for r in caplog.records))
    assert traces == [1, 0, 1]


def test_a_step_that_reads_a_field_no_step_is_given_fails_when_traced(monkeypatch, fresh_steps):
    """The steps are given a StepsConfig: a step changed to read a group of the run outside
    it (here the seed's) fails when traced, where a shared step would have read another run's."""
    config = Config(width_multiplier=0.05, num_classes=7, batch_size=4)
    given = steps.train_inputs

    def reads_the_seed(batch, rng, config):
        return given(batch, jax.random.fold_in(rng, config.start.seed), config)

    monkeypatch.setattr(steps, "train_inputs", reads_the_seed)
    devices = parallel.Devices(4)
    training = steps.build(config)
    batch = {"image": jax.ShapeDtypeStruct((4, 32, 32, 3), jnp.uint8),
             "label": jax.ShapeDtypeStruct((4,), jnp.int32)}
    with pytest.raises(AttributeError, match="start"):
        training.jit_steps(devices).train.lower(training.abstract_state(devices), batch,
                                                jax.random.key(0))
    assert not hasattr(training.config, "start") and config.start.seed == 0
