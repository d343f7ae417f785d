"""How far apart two train states are, collection by collection (params, BatchNorm statistics,
optimizer state): for checking that two ways of taking the same step agree up to rounding,
e.g. the step on one device and on many (`compare_device_counts`)."""
import jax
import jax.numpy as jnp
import numpy as np

from mobilenet_jax.config import Config
from mobilenet_jax.core import steps
from mobilenet_jax.core.parallel import Devices
from mobilenet_jax.data import arrays, augment

COLLECTIONS = ("params", "batch_stats", "opt_state")


def floating_leaves(state, collection: str) -> list:
    """A collection's floating-point leaves in float64 (not the optimizer's step counts)."""
    return [np.asarray(x, np.float64) for x in jax.tree.leaves(getattr(state, collection))
            if jnp.issubdtype(x.dtype, jnp.floating)]


def relative_difference(a, b, start) -> dict:
    """{collection: |a - b| / |b - start|}, global L2 norms: how much two results of the same
    step from `start` differ, as a fraction of what the step changed."""
    def norm(xs):
        return float(np.sqrt(sum(np.sum(np.square(x)) for x in xs)))
    out = {}
    for name in COLLECTIONS:
        a_, b_, s_ = (floating_leaves(s, name) for s in (a, b, start))
        out[name] = (norm([x - y for x, y in zip(a_, b_)])
                     / norm([y - s for y, s in zip(b_, s_)]))
    return out


def leaf_differences(a, b) -> dict:
    """{collection: [max |a - b| / max(1, max |b|) for each leaf]}: entry by entry."""
    return {name: [float(np.max(np.abs(x - y)) / max(1.0, float(np.max(np.abs(y)))))
                   for x, y in zip(floating_leaves(a, name), floating_leaves(b, name))]
            for name in COLLECTIONS}


class StepVariants:
    """The train step of `config` on 1 device, on all `devices` (a batch-sharded mesh), and
    with BatchNorm statistics per device: what a device-count dependence would look like."""

    def __init__(self, config, devices: int):
        assert not config.data.augment and config.recipe.batch_size % devices == 0
        self.config, self.count = config, devices
        self.training = steps.build(config)
        self.devices = Devices(config.recipe.batch_size)
        self.rng = jax.random.key(0)
        self.one = jax.jit(lambda s, b: steps.train_step(
            s, b, self.rng, config=steps.StepsConfig.of(config),
            schedule=self.training.schedule)[0])
        self.sharded = self.training.jit_steps(self.devices).train
        self.per_device_bn = jax.jit(self._per_device_bn_step)

    def on_all(self, state, batch):
        # The jitted step donates its state: give it a copy, placed from the host.
        state = jax.device_put(jax.tree.map(np.asarray, state), self.devices.replicated)
        return self.sharded(state, self.devices.global_batch(batch), self.rng)[0]

    def _per_device_bn_step(self, state, batch):
        """The step with BatchNorm statistics over each device's share of the batch only."""
        config, model = self.config, self.training.model
        images = augment.normalize(batch["image"], config.data.resolution)
        split = lambda t: t.reshape(self.count, -1, *t.shape[1:])  # noqa: E731

        def loss_fn(params):
            def share(x, y):
                logits, updates = model.apply({"params": params, "batch_stats": state.batch_stats},
                                              x, train=True, mutable=["batch_stats"])
                targets = jax.nn.one_hot(y, config.network.num_classes)
                losses = steps.cross_entropy(logits, targets, config.recipe.label_smoothing)
                return losses.mean(), updates["batch_stats"]
            losses, stats = jax.vmap(share)(split(images), split(batch["label"]))
            return losses.mean(), jax.tree.map(lambda s: s.mean(0), stats)

        grads, stats = jax.grad(loss_fn, has_aux=True)(state.params)
        return state.apply_gradients(grads=grads, batch_stats=stats)

    def compare(self, state, batch, others: dict, reorderings: int) -> dict:
        """How the sharded step, each reordering of the batch, the per-device-BatchNorm step
        and the 1-device step on each batch of `others` differ from the 1-device step, per
        collection: the largest entry difference ("leaf": of any leaf) and the global one
        ("relative": relative_difference)."""
        reference = self.one(state, batch)
        orders = [np.random.default_rng(k).permutation(self.config.recipe.batch_size)
                  for k in range(reorderings)]
        results = {"all_devices": [self.on_all(state, batch)],
                   "reordered": [self.one(state, {k: v[o] for k, v in batch.items()})
                                 for o in orders],
                   "per_device_bn": [self.per_device_bn(state, batch)],
                   **{name: [self.one(state, other)] for name, other in others.items()}}
        return {coll: {kind: {"leaf": [max(leaf_differences(s, reference)[coll]) for s in out],
                              "relative": [relative_difference(s, reference, state)[coll]
                                           for s in out]}
                       for kind, out in results.items()}
                for coll in COLLECTIONS}


def compare_device_counts(split, alpha: float, batches: int, reorderings: int):
    """For each of `batches` batches of `split` (augmented on the host, so that a reordering
    reorders the same images), from init and from one step later (where a resumed run
    starts): `StepVariants.compare` over all local devices, with the same images augmented
    with another key and the next batch as `others`. Yields one row per (batch, step)."""
    config = Config(width_multiplier=alpha, batch_size=32, lr=0.01, warmup_epochs=0,
                    schedule="constant", augment=False, label_smoothing=0.0, ema_decay=0.0)
    variants = StepVariants(config, jax.local_device_count())
    start = variants.training.init_state(jax.random.key(0))
    local = list(arrays.train_batches(split, 32, seed=0, epoch=0))[:batches + 1]

    def augmented(batch, key):
        return {"image": np.asarray(augment.augment(jnp.asarray(batch["image"]),
                                                 jax.random.key(key))),
                "label": batch["label"]}
    for b in range(batches):
        batch = augmented(local[b], 100 + b)
        others = {"other_augmentation": augmented(local[b], 200 + b),
                  "next_batch": augmented(local[b + 1], 101 + b)}
        for name, state in (("first", start), ("second", variants.one(start, batch))):
            yield {"alpha": alpha, "batch": b, "step": name,
                   **variants.compare(state, batch, others, reorderings)}
