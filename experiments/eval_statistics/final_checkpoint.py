"""The test top-1 that runs trained before `--precise-bn-batches` existed would have saved
with it: their last checkpoint's statistics recomputed exactly as `train` now does at its last
checkpoint (the same batches, keys and weights: the train step never reads them, so the
weights are those of a run trained with the option).

    python experiments/eval_statistics/final_checkpoint.py RUN_DIR [...] [--batches 20]

One JSON line per run: the test top-1 as saved and with the statistics recomputed, and the
seconds of the recomputation (a second one, after its compilation).
"""
import argparse
import json
import time

import jax
import numpy as np

from mobilenet_jax.core import checkpoint, restore, steps
from mobilenet_jax.data import arrays, sources
from mobilenet_jax.evaluators.classification import evaluate_split
from mobilenet_jax.training import precise_bn


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--batches", type=int, default=20)
    args = parser.parse_args()
    for run in args.runs:
        model = restore.restore(checkpoint.resolve(run))
        state, devices = model.state, model.devices
        config = model.config.replace(precise_bn_batches=args.batches)
        train = sources.load_split(config, config.data.split)
        train, _ = arrays.split_validation(train, config.data.val_fraction, config.start.seed)
        test = sources.load_split(config, "test")
        jitted = steps.build(config).jit_steps(devices)
        base_rng = jax.random.wrap_key_data(np.asarray(model.position["rng"], np.uint32))
        last_epoch = model.step // model.position["steps_per_epoch"] - 1

        def top1(s):
            sums = evaluate_split(s, test, config.recipe.batch_size, devices, jitted.eval)
            return sums["top1"] / sums["count"]

        row = {"run": run, "batches": args.batches, "as_saved": top1(state)}
        for _ in range(2):
            start = time.perf_counter()
            precise = precise_bn.recompute(state, train, config, devices,
                                           jitted.batch_statistics, base_rng, last_epoch)
            jax.block_until_ready(precise.precise_batch_stats)
            row["recompute_s"] = round(time.perf_counter() - start, 3)
        row["precise"] = top1(precise)
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
