"""Is the 8-device train step the 1-device step up to float rounding, or does it depend on the
device count? Compares the 8-device step with the spread of 1-device steps on reorderings of
the same batch (the rounding any summation order brings), with a step whose BatchNorm
statistics are per device (what a statistic that is not global would do), and, for scale,
with the step on the same images augmented with another key (what a wrong RNG stream would
do) and on the next batch (a wrong data position): `core.compare.compare_device_counts`.

    python experiments/device_count/compare_steps.py --alphas 0.1,0.25 --batches 3 [--json F]

Runs on 8 virtual CPU devices (it sets XLA_FLAGS itself) on the 6-class CIFAR-100 subset
(`--data-dir`, default ../shared/data/cifar100-6class-tfds). The batches come augmented
(the step's own augmentation is off), so a reordering reorders the same augmented images.
"""
import argparse
import json
import os

from mobilenet_jax.core.compare import compare_device_counts
from mobilenet_jax.data import arrays, from_tfds

DEVICES = 8


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
    kinds = ("all_devices", "reordered", "per_device_bn", "other_augmentation", "next_batch")
    print(f"{'alpha':>5} {'batch':>5} {'step':<6} {'collection':<11} {'leaf: 8 dev':>11} "
          f"{'reordered':>9} {'per-dev BN':>10} {'relative: 8 dev':>15} {'reordered':>9} "
          f"{'per-dev BN':>10} {'other aug':>9} {'next batch':>10}")
    for alpha in map(float, args.alphas.split(",")):
        for row in compare_device_counts(split, alpha, args.batches, args.reorderings):
            rows.append(row)
            for coll in ("params", "batch_stats", "opt_state"):
                r = row[coll]
                leaf = [max(r[kind]["leaf"]) for kind in kinds[:3]]
                relative = [max(r[kind]["relative"]) for kind in kinds]
                print(f"{alpha:>5} {row['batch']:>5} {row['step']:<6} {coll:<11} "
                      f"{leaf[0]:>11.2e} {leaf[1]:>9.2e} {leaf[2]:>10.2e} {relative[0]:>15.2e} "
                      f"{relative[1]:>9.2e} {relative[2]:>10.2e} {relative[3]:>9.2e} "
                      f"{relative[4]:>10.2e}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"reorderings": args.reorderings, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
