"""What recomputing BatchNorm's statistics with the final weights ("precise BN") would give a
trained checkpoint, before any such option exists in `train`.

    python experiments/eval_statistics/precise_bn.py RUN_DIR [RUN_DIR ...] [--batches 50]

For each run's latest checkpoint: the test top-1 as saved (running statistics, or their
moving average), then with every BatchNorm layer's statistics recomputed in one pass over up to
--batches unaugmented training batches (the mean of the batches' means and variances) for the
evaluated weights (the moving average where the run keeps one), and for the raw weights; and
the seconds the recomputation took. One JSON line per run.
"""
import argparse
import json
import time

import jax
import jax.numpy as jnp

from mobilenet_jax.core import checkpoint, restore, steps
from mobilenet_jax.data import arrays, sources
from mobilenet_jax.evaluators.classification import evaluate_split
from mobilenet_jax.models.mobilenet import MobileNetV1


def precise_statistics(state, params, config, split, batch_size, batches):
    """BatchNorm statistics of `params` over training batches. A train-mode pass from zero
    running statistics leaves (1 - momentum) x the batch's statistic in them."""
    momentum = MobileNetV1.bn_momentum
    zeros = jax.tree.map(jnp.zeros_like, state.batch_stats)

    @jax.jit
    def of_batch(images):
        _, updates = state.apply_fn({"params": params, "batch_stats": zeros},
                                    steps.normalize(images, config), train=True,
                                    mutable=["batch_stats"])
        return jax.tree.map(lambda v: v / (1 - momentum), updates["batch_stats"])

    total, n = None, 0
    for batch in arrays.train_batches(split, batch_size, seed=0, epoch=0):
        stats = of_batch(batch["image"])
        total = stats if total is None else jax.tree.map(jnp.add, total, stats)
        n += 1
        if n == batches:
            break
    return jax.tree.map(lambda v: v / n, total)


def with_statistics(state, params, stats):
    """The state whose eval_variables() are (params, stats)."""
    if state.ema is not None:
        return state.replace(ema={"params": params, "batch_stats": stats})
    return state.replace(params=params, batch_stats=stats)


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--batches", type=int, default=50)
    args = parser.parse_args()
    for run in args.runs:
        model = restore.restore(checkpoint.resolve(run))
        state, config, devices = model.state, model.config, model.devices
        train, test = (sources.load_split(config, s) for s in ("train", "test"))
        evaluate = steps.build(config).jit_steps(devices).eval

        def top1(s):
            sums = evaluate_split(s, test, config.batch_size, devices, evaluate)
            return sums["top1"] / sums["count"]

        row = {"run": run, "as_saved": top1(state)}
        evaluated_params = state.eval_variables()["params"]
        for name, params in (("evaluated_weights", evaluated_params),
                             ("raw_weights", state.params)):
            start = time.perf_counter()
            stats = jax.block_until_ready(precise_statistics(state, params, config, train,
                                                             config.batch_size, args.batches))
            row[f"precise_{name}_s"] = round(time.perf_counter() - start, 2)
            row[f"precise_{name}"] = top1(with_statistics(state, params, stats))
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
