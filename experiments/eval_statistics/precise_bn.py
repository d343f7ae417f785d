"""What recomputing BatchNorm's statistics with the final weights ("precise BN") would give a
trained checkpoint, before any such option exists in `train`.

    python experiments/eval_statistics/precise_bn.py RUN_DIR [RUN_DIR ...] [--batches 50]
        [--input plain|augmented] [--variance batches|pooled] [--weights evaluated,raw]

For each run's latest checkpoint: the test top-1 as saved (running statistics, or their
moving average), then with every BatchNorm layer's statistics recomputed in one pass over up to
--batches training batches for the evaluated weights (the moving average where the run keeps
one) and/or the raw weights; and the seconds the recomputation took. One JSON line per run.
--input: the batches as stored (plain) or as the train step makes them (augmented, mixed).
--variance: the mean of the batches' variances (batches), or the variance over all their
examples (pooled: that plus the variance of the batches' means).
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


def precise_statistics(state, params, config, split, batch_size, batches, augmented, pooled):
    """BatchNorm statistics of `params` over training batches. A train-mode pass from zero
    running statistics leaves (1 - momentum) x the batch's statistic in them."""
    momentum = MobileNetV1.bn_momentum
    zeros = jax.tree.map(jnp.zeros_like, state.batch_stats)

    @jax.jit
    def of_batch(batch, rng):
        if augmented:
            images, _ = steps.train_inputs(batch, rng, config)
        else:
            images = steps.normalize(batch["image"], config)
        _, updates = state.apply_fn({"params": params, "batch_stats": zeros}, images,
                                    train=True, mutable=["batch_stats"])
        stats = jax.tree.map(lambda v: v / (1 - momentum), updates["batch_stats"])
        squared_means = jax.tree.map(lambda layer: layer["mean"] ** 2, stats,
                                     is_leaf=lambda x: isinstance(x, dict) and "mean" in x)
        return stats, squared_means

    total = squares = None
    n = 0
    for batch in arrays.train_batches(split, batch_size, seed=0, epoch=0):
        stats, sq = of_batch(batch, jax.random.fold_in(jax.random.key(0), n))
        total = stats if total is None else jax.tree.map(jnp.add, total, stats)
        squares = sq if squares is None else jax.tree.map(jnp.add, squares, sq)
        n += 1
        if n == batches:
            break
    mean = jax.tree.map(lambda v: v / n, total)
    if pooled:  # E[var_b] + E[mean_b^2] - E[mean_b]^2
        is_layer = lambda x: isinstance(x, dict) and "mean" in x  # noqa: E731
        mean = jax.tree.map(lambda layer, sq: {"mean": layer["mean"],
                                               "var": layer["var"] + sq / n - layer["mean"] ** 2},
                            mean, squares, is_leaf=is_layer)
    return mean


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
    parser.add_argument("--input", choices=("plain", "augmented"), default="plain")
    parser.add_argument("--variance", choices=("batches", "pooled"), default="batches")
    parser.add_argument("--weights", default="evaluated,raw")
    args = parser.parse_args()
    for run in args.runs:
        model = restore.restore(checkpoint.resolve(run))
        state, config, devices = model.state, model.config, model.devices
        train, test = (sources.load_split(config, s) for s in ("train", "test"))
        evaluate = steps.build(config).jit_steps(devices).eval

        def top1(s):
            sums = evaluate_split(s, test, config.recipe.batch_size, devices, evaluate)
            return sums["top1"] / sums["count"]

        row = {"run": run, "input": args.input, "variance": args.variance,
               "batches": args.batches, "as_saved": top1(state)}
        weights = {"evaluated": state.eval_variables()["params"], "raw": state.params}
        for name in args.weights.split(","):
            params = weights[name]
            start = time.perf_counter()
            stats = jax.block_until_ready(precise_statistics(
                state, params, config, train, config.recipe.batch_size, args.batches,
                args.input == "augmented", args.variance == "pooled"))
            row[f"precise_{name}_weights_s"] = round(time.perf_counter() - start, 2)
            row[f"precise_{name}_weights"] = top1(with_statistics(state, params, stats))
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
