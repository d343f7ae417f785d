"""What a run computes: the TrainState, schedule and optimizer, and the pure train / eval steps.

`build(config)` makes the model, schedule, optimizer and (abstract) TrainState of a Config;
`Training.jit_steps(devices)` the jitted steps. Train, evaluate, the benchmark and the
experiments all get them here, so every command runs the same computation.
"""
import contextlib
import dataclasses
import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax.training import train_state

from mobilenet_jax.config import Compute, Config, Data, Network, Recipe
from mobilenet_jax.core import quantization
from mobilenet_jax.core.parallel import Devices
from mobilenet_jax.data import augment, mixing
from mobilenet_jax.models.mobilenet import MobileNetV1
from mobilenet_jax.models.spec import HEAD


@dataclasses.dataclass(frozen=True)
class StepsConfig:
    """The groups of a run's Config that the model, schedule, optimizer and steps read, and no
    others: it is all the steps are given, so they cannot read the seed, where the data is,
    or where and how the run runs (and runs that differ only there share their steps)."""
    network: Network
    compute: Compute
    data: Data
    recipe: Recipe

    model_kwargs = Config.model_kwargs  # it reads only groups that this holds

    @classmethod
    def of(cls, config: Config) -> "StepsConfig":
        return cls(**{field.name: getattr(config, field.name) for field in dataclasses.fields(cls)})


class TrainState(train_state.TrainState):
    batch_stats: Any
    ema: Any = None  # {"params", "batch_stats"} averaged over steps, when recipe.ema_decay > 0
    # BatchNorm statistics recomputed with the evaluated weights (recipe.precise_bn_batches);
    # the train step carries them unchanged.
    precise_batch_stats: Any = None

    def eval_variables(self) -> dict:
        """The variables that validation, evaluation, predict and export run: the moving
        average where the run keeps one, with the recomputed statistics where it has them."""
        variables = self.ema or {"params": self.params, "batch_stats": self.batch_stats}
        if self.precise_batch_stats is None:
            return variables
        return {"params": variables["params"], "batch_stats": self.precise_batch_stats}


def ema_decay_at(step, decay: float):
    """The decay of the weights' moving average at a step: `decay`, lower early on so that the
    first steps' weights fade fast (TensorFlow's ExponentialMovingAverage with num_updates)."""
    return jnp.minimum(decay, (1.0 + step) / (10.0 + step))


def update_ema(ema: dict, variables: dict, decay) -> dict:
    return jax.tree.map(lambda a, v: decay * a + (1.0 - decay) * v, ema, variables)


def learning_rate_schedule(recipe: Recipe, steps_per_epoch: int) -> optax.Schedule:
    peak = recipe.scaled_lr()
    total = recipe.epochs * steps_per_epoch
    warmup = min(int(recipe.warmup_epochs * steps_per_epoch), total - 1)
    if recipe.schedule == "cosine":
        return optax.warmup_cosine_decay_schedule(0.0, peak, warmup, total, end_value=0.0)
    if recipe.schedule == "step":
        after = optax.piecewise_constant_schedule(
            peak, {int(0.5 * total) - warmup: 0.1, int(0.75 * total) - warmup: 0.1})
    elif recipe.schedule == "exponential":
        after = optax.exponential_decay(
            peak, max(1, round(recipe.lr_decay_epochs * steps_per_epoch)),
            recipe.lr_decay_factor, staircase=True)
    else:
        after = optax.constant_schedule(peak)
    return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), after], [warmup])


def create_optimizer(recipe: Recipe, schedule: optax.Schedule) -> optax.GradientTransformation:
    optimizer = _optimizer(recipe, schedule)
    if not (recipe.freeze_backbone or recipe.backbone_lr_scale != 1.0):
        return optimizer
    backbone = (optax.set_to_zero() if recipe.freeze_backbone
                else optax.chain(optimizer, optax.scale(recipe.backbone_lr_scale)))
    return optax.multi_transform(
        {"head": optimizer, "backbone": backbone},
        lambda params: {name: "head" if name == HEAD else "backbone" for name in params})


def _optimizer(recipe: Recipe, schedule: optax.Schedule) -> optax.GradientTransformation:
    # Decay conv and dense kernels only: BatchNorm scale/offset and biases are 1-D; depthwise
    # kernels are the 3x3 ones with one input channel.
    decay_mask = functools.partial(jax.tree.map, lambda p: p.ndim > 1 and (
        recipe.decay_depthwise or p.shape[:3] != (3, 3, 1)))
    if recipe.optimizer == "adamw":
        return optax.adamw(schedule, b1=recipe.momentum, weight_decay=recipe.weight_decay,
                           mask=decay_mask)
    if recipe.optimizer == "rmsprop":  # the paper's optimizer (TF-style RMSProp)
        base = optax.rmsprop(schedule, decay=0.9, eps=recipe.rmsprop_eps, momentum=recipe.momentum)
    else:
        base = optax.sgd(schedule, momentum=recipe.momentum, nesterov=recipe.momentum > 0)
    return optax.chain(optax.add_decayed_weights(recipe.weight_decay, decay_mask), base)


# ---- the steps: pure functions of (state, batch, rng) ---------------------------------------

def classification_metrics(logits, labels, loss_per_example, weights):
    """Summed loss, top-1, top-5 and example count of a (weighted) batch."""
    # The label's place in `lax.top_k`'s order (descending, ties to the lower index) by one
    # compare and sum: XLA:CPU's TopK is slow (experiments/cpu_throughput).
    label_logit = jnp.take_along_axis(logits, labels[:, None], axis=-1)
    before = (logits > label_logit) | ((logits == label_logit)
                                       & (jnp.arange(logits.shape[-1]) < labels[:, None]))
    rank = jnp.sum(before, axis=-1)
    return {"loss": jnp.sum(loss_per_example * weights),
            "top1": jnp.sum((jnp.argmax(logits, -1) == labels) * weights),
            "top5": jnp.sum((rank < 5) * weights),
            "count": jnp.sum(weights)}


def cross_entropy(logits, targets, label_smoothing=0.0):
    """Cross-entropy against (soft) target distributions, smoothed."""
    return optax.softmax_cross_entropy(logits, optax.smooth_labels(targets, label_smoothing))


def normalize(images_uint8: jax.Array, config: "Config | StepsConfig") -> jax.Array:
    """The network's input: images resized and standardised as the run's config says."""
    data = config.data
    return augment.normalize(images_uint8, data.resolution, data.mean, data.std,
                             jnp.dtype(config.compute.dtype))


def float32_input(images_uint8, config: Config) -> np.ndarray:
    """The network's input in float32 on the host, whatever dtype the run computes in: what
    predict and the exported models take."""
    return np.asarray(normalize(images_uint8, config.replace(dtype="float32")))


def train_inputs(batch: dict, rng: jax.Array, config: StepsConfig):
    """The network's input and targets of a training batch: augmented, standardised, mixed."""
    images = batch["image"]
    if config.data.augment and not config.data.random_resized_crops:  # cropped on the host
        images = augment.augment(images, rng)
    images = normalize(images, config)
    targets = jax.nn.one_hot(batch["label"], config.network.num_classes)
    if config.recipe.mixup_alpha or config.recipe.cutmix_alpha:
        images, targets = mixing.mix_batch(images, targets, jax.random.fold_in(rng, 1),
                                           config.recipe.mixup_alpha, config.recipe.cutmix_alpha)
    return images, targets


def forward_quantization(config: StepsConfig) -> tuple[Callable, Callable]:
    """(weights transform, context maker) of a training forward pass: fake int8 with
    `config.recipe.qat` (core/quantization.py), else the identity and no context."""
    if config.recipe.qat:
        return quantization.fake_quantized_params, quantization.fake_quantized_inputs
    return (lambda params: params), contextlib.nullcontext


def train_step(state: TrainState, batch: dict, rng: jax.Array, *, config: StepsConfig,
               schedule: optax.Schedule):
    """One optimizer step (`config.recipe.optimizer`). Returns the new state and the batch's summed
    metrics (and the lr)."""
    rng = jax.random.fold_in(rng, state.step)
    augment_rng, dropout_rng = jax.random.split(rng)
    images, targets = train_inputs(batch, augment_rng, config)

    weights, quantized_inputs = forward_quantization(config)

    def loss_fn(params):
        # A frozen backbone runs in inference mode: BatchNorm uses and keeps its statistics.
        with quantized_inputs():
            logits, updates = state.apply_fn(
                {"params": weights(params), "batch_stats": state.batch_stats}, images,
                train=not config.recipe.freeze_backbone,
                rngs={"dropout": dropout_rng}, mutable=["batch_stats"])
        losses = cross_entropy(logits, targets, config.recipe.label_smoothing)
        return losses.mean(), (logits, losses, updates["batch_stats"])

    grads, (logits, losses, batch_stats) = jax.grad(loss_fn, has_aux=True)(state.params)
    new_state = state.apply_gradients(grads=grads, batch_stats=batch_stats)
    if state.ema is not None:
        new_state = new_state.replace(ema=update_ema(
            state.ema, {"params": new_state.params, "batch_stats": batch_stats},
            ema_decay_at(state.step, config.recipe.ema_decay)))
    metrics = classification_metrics(logits, batch["label"], losses, jnp.ones_like(losses))
    metrics["lr"] = schedule(state.step)
    return new_state, metrics


def batch_statistics_step(state: TrainState, batch: dict, rng: jax.Array, *,
                          config: StepsConfig):
    """Every BatchNorm layer's mean and variance over a training batch, augmented as the train
    step does, with the evaluated weights."""
    images, _ = train_inputs(batch, rng, config)
    zeros = jax.tree.map(jnp.zeros_like, state.batch_stats)
    weights, quantized_inputs = forward_quantization(config)
    with quantized_inputs():
        _, updates = state.apply_fn(
            {"params": weights(state.eval_variables()["params"]), "batch_stats": zeros},
            images, train=True, rngs={"dropout": rng}, mutable=["batch_stats"])
    # From zero running statistics, a train-mode pass leaves (1 - momentum) x the batch's.
    return jax.tree.map(lambda v: v / (1 - MobileNetV1.bn_momentum), updates["batch_stats"])


def eval_step(state: TrainState, batch: dict, *, config: StepsConfig):
    """Summed metrics of a (masked) batch, and whether each example's top-1 is right."""
    images = normalize(batch["image"], config)
    logits = state.apply_fn(state.eval_variables(), images, train=False)
    losses = cross_entropy(logits, jax.nn.one_hot(batch["label"], config.network.num_classes))
    correct = jnp.argmax(logits, -1) == batch["label"]
    return classification_metrics(logits, batch["label"], losses, batch["mask"]), correct


# ---- one builder for every command ----------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class JittedSteps:
    train: Callable  # (state, batch, rng) -> (state, metrics); donates the state it is given
    eval: Callable   # (state, batch) -> (metrics, correct)
    batch_statistics: Callable  # (state, batch, rng) -> BatchNorm statistics of the batch


@dataclasses.dataclass(frozen=True)
class Training:
    """The model, schedule and optimizer that a Config describes, and the part of it that the
    steps are given."""
    config: StepsConfig
    model: MobileNetV1
    schedule: optax.Schedule
    optimizer: optax.GradientTransformation

    def init_state(self, rng: jax.Array) -> TrainState:
        side = self.config.data.resolution
        image = jnp.zeros((1, side, side, 3), jnp.float32)
        variables = self.model.init(rng, image)
        # A frozen backbone's BatchNorm keeps the statistics it was trained with.
        precise = self.config.recipe.precise_bn_batches and not self.config.recipe.freeze_backbone
        state = TrainState.create(apply_fn=self.model.apply, params=variables["params"],
                                  batch_stats=variables["batch_stats"], tx=self.optimizer,
                                  ema=variables if self.config.recipe.ema_decay else None,
                                  precise_batch_stats=variables["batch_stats"] if precise else None)
        # A strongly typed step, as a restored one is: one compiled train step for both.
        return state.replace(step=jnp.zeros((), jnp.int32))

    def abstract_state(self, devices: Devices) -> TrainState:
        """The TrainState's structure, shapes and (replicated) shardings; nothing computed."""
        return devices.abstract(_jit_init(self, devices.replicated).eval_shape(
            jax.random.key(0)))

    def new_state(self, rng: jax.Array, devices: Devices) -> TrainState:
        """A freshly initialised TrainState, replicated over the devices."""
        return _compiled_init(self, devices.replicated)(rng)

    def jit_steps(self, devices: Devices) -> JittedSteps:
        """`train_step` and `eval_step` of this config, jitted over the devices' mesh."""
        return _jit_steps(self, devices.replicated, devices.batch_sharded)


def build(config: Config, steps_per_epoch: int = 1) -> Training:
    """The Training of `config`; `steps_per_epoch` shapes the learning-rate schedule only.
    Runs whose StepsConfigs are equal share one Training and its jitted steps."""
    return _build(StepsConfig.of(config), steps_per_epoch)


def clear_caches() -> None:
    """Forget every built Training and its jitted steps: for code that patches a step
    function or a module of the network, which an equal config does not show."""
    for cached in (_build, _jit_init, _compiled_init, _jit_steps):
        cached.cache_clear()


@functools.lru_cache(maxsize=16)
def _build(config: StepsConfig, steps_per_epoch: int) -> Training:
    # One model object per config: a TrainState's apply_fn is bound to it, and jit traces a
    # step anew for a state whose apply_fn is bound to another (equal) model object.
    schedule = learning_rate_schedule(config.recipe, steps_per_epoch)
    return Training(config, MobileNetV1(**config.model_kwargs()), schedule,
                    create_optimizer(config.recipe, schedule))


@functools.lru_cache(maxsize=16)
def _jit_init(training: Training, replicated) -> Callable:
    return jax.jit(training.init_state, out_shardings=replicated)


@functools.lru_cache(maxsize=16)
def _compiled_init(training: Training, replicated) -> Callable:
    # Runs once a run: compiled unoptimised, in less time, to the same values (experiments/suite_time).
    return _jit_init(training, replicated).lower(jax.random.key(0)).compile(
        compiler_options={"xla_backend_optimization_level": 0})


@functools.lru_cache(maxsize=16)
def _jit_steps(training: Training, replicated, batch_sharded) -> JittedSteps:
    config = training.config
    return JittedSteps(
        jax.jit(functools.partial(train_step, config=config, schedule=training.schedule),
                out_shardings=replicated, donate_argnums=0),
        jax.jit(functools.partial(eval_step, config=config),
                out_shardings=(replicated, batch_sharded)),
        jax.jit(functools.partial(batch_statistics_step, config=config),
                out_shardings=replicated))
