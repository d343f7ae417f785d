"""Is the 8-device train step the 1-device step up to float rounding, or does it depend on the
device count? Compares the 8-device step with the spread of 1-device steps on reorderings of
the same batch (the rounding any summation order brings), with a step whose BatchNorm
statistics are per device (what a statistic that is not global would do), and, for scale,
with the step on the same images augmented with another key (what a wrong RNG stream would
do) and on the next batch (a wrong data position).

    python experiments/device_count/compare_steps.py --alphas 0.1,0.25 --batches 3 [--json F]

Runs on 8 virtual CPU devices (it sets XLA_FLAGS itself) on the 6-class CIFAR-100 subset
(`--data-dir`, default ../shared/data/cifar100-6class-tfds). The batches come augmented
(the step's own augmentation is off), so a reordering reorders the same augmented images.
"""
import argparse
import json
import os

import jax
import jax.numpy as jnp
import numpy as np

from mobilenet_jax import Config
from mobilenet_jax.core import steps
from mobilenet_jax.core.compare import COLLECTIONS, leaf_differences, relative_difference
from mobilenet_jax.data import arrays, augment, from_tfds
from mobilenet_jax.core.parallel import Devices

DEVICES = 8


class StepVariants:
    """The train step of `config` on 1 device, on 8 devices, and with per-device BatchNorm."""

    def __init__(self, config: Config):
        assert not config.data.augment and config.recipe.batch_size % DEVICES == 0
        self.config, self.training = config, steps.build(config)
        self.devices = Devices(config.recipe.batch_size)
        self.rng = jax.random.key(0)
        self.one = jax.jit(lambda s, b: steps.train_step(
            s, b, self.rng, config=config, schedule=self.training.schedule)[0])
        self.eight = self.training.jit_steps(self.devices).train
        self.per_device_bn = jax.jit(self._per_device_bn_step)

    def on_eight(self, state, batch):
        # The jitted step donates its state: give it a copy, placed from the host.
        state = jax.device_put(jax.tree.map(np.asarray, state), self.devices.replicated)
        return self.eight(state, self.devices.global_batch(batch), self.rng)[0]

    def _per_device_bn_step(self, state, batch):
        """The step with BatchNorm statistics over each device's share of the batch only."""
        config, model = self.config, self.training.model
        images = augment.normalize(batch["image"], config.data.resolution)
        split = lambda t: t.reshape(DEVICES, -1, *t.shape[1:])  # noqa: E731

        def loss_fn(params):
            def share(x, y):
                logits, updates = model.apply({"params": params, "batch_stats": state.batch_stats},
                                              x, train=True, mutable=["batch_stats"])
                targets = jax.nn.one_hot(y, config.network.num_classes)
                return (steps.cross_entropy(logits, targets, config.recipe.label_smoothing).mean(),
                        updates["batch_stats"])
            losses, stats = jax.vmap(share)(split(images), split(batch["label"]))
            return losses.mean(), jax.tree.map(lambda s: s.mean(0), stats)

        grads, stats = jax.grad(loss_fn, has_aux=True)(state.params)
        return state.apply_gradients(grads=grads, batch_stats=stats)

    def compare(self, state, batch, others: dict, reorderings: int) -> dict:
        """How the 8-device step, each reordering of the batch, the per-device-BatchNorm
        step and the 1-device step on each batch of `others` differ from the 1-device step,
        per collection: the largest entry difference ("leaf": of any leaf) and the global one
        ("relative": relative_difference)."""
        reference = self.one(state, batch)
        orders = [np.random.default_rng(k).permutation(self.config.recipe.batch_size)
                  for k in range(reorderings)]
        results = {"eight_devices": [self.on_eight(state, batch)],
                   "reordered": [self.one(state, {k: v[o] for k, v in batch.items()})
                                 for o in orders],
                   "per_device_bn": [self.per_device_bn(state, batch)],
                   **{name: [self.one(state, other)] for name, other in others.items()}}
        out = {}
        for coll in COLLECTIONS:
            out[coll] = {}
            for kind, states in results.items():
                out[coll][kind] = {
                    "leaf": [max(leaf_differences(s, reference)[coll]) for s in states],
                    "relative": [relative_difference(s, reference, state)[coll] for s in states]}
        return out


def main():
    # Before JAX starts its backend (imports do not start it).
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                               + f" --xla_force_host_platform_device_count={DEVICES}")
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--alphas", default="0.1,0.25")
    parser.add_argument("--batches", type=int, default=3)
    parser.add_argument("--reorderings", type=int, default=8)
    parser.add_argument("--data-dir", default="../shared/data/cifar100-6class-tfds")
    parser.add_argument("--json", help="write every row as JSON")
    args = parser.parse_args()
    split = from_tfds.load("cifar100", "train[:10%]", args.data_dir, offline=True)
    split, _ = arrays.split_validation(split, 0.1, seed=0)
    rows = []
    print("Largest entry difference (leaf) and global difference as a fraction of the step's "
          "change (relative) to the 1-device step; reordered: the largest over reorderings")
    kinds = ("eight_devices", "reordered", "per_device_bn", "other_augmentation", "next_batch")
    print(f"{'alpha':>5} {'batch':>5} {'step':<6} {'collection':<11} {'leaf: 8 dev':>11} "
          f"{'reordered':>9} {'per-dev BN':>10} {'relative: 8 dev':>15} {'reordered':>9} "
          f"{'per-dev BN':>10} {'other aug':>9} {'next batch':>10}")
    for alpha in map(float, args.alphas.split(",")):
        config = Config(width_multiplier=alpha, batch_size=32, lr=0.01, warmup_epochs=0,
                        schedule="constant", augment=False, label_smoothing=0.0, ema_decay=0.0)
        variants = StepVariants(config)
        start = variants.training.init_state(jax.random.key(0))
        locals_ = list(arrays.train_batches(split, 32, seed=0, epoch=0))[:args.batches + 1]

        def augmented(local, key):
            return {"image": np.asarray(augment.augment(jnp.asarray(local["image"]),
                                                     jax.random.key(key))),
                    "label": local["label"]}
        for b in range(args.batches):
            batch = augmented(locals_[b], 100 + b)
            others = {"other_augmentation": augmented(locals_[b], 200 + b),
                      "next_batch": augmented(locals_[b + 1], 101 + b)}
            # From init, and from one step later (where a resumed run starts).
            for name, state in (("first", start), ("second", variants.one(start, batch))):
                result = variants.compare(state, batch, others, args.reorderings)
                rows.append({"alpha": alpha, "batch": b, "step": name, **result})
                for coll, r in result.items():
                    leaf = [max(r[kind]["leaf"]) for kind in kinds[:3]]
                    relative = [max(r[kind]["relative"]) for kind in kinds]
                    print(f"{alpha:>5} {b:>5} {name:<6} {coll:<11} {leaf[0]:>11.2e} "
                          f"{leaf[1]:>9.2e} {leaf[2]:>10.2e} {relative[0]:>15.2e} "
                          f"{relative[1]:>9.2e} {relative[2]:>10.2e} {relative[3]:>9.2e} "
                          f"{relative[4]:>10.2e}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"reorderings": args.reorderings, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
