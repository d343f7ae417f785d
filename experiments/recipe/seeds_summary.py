"""Test top-1 of each recipe over seeds (mean, sd, the per-seed values) and the recipes
compared seed by seed, from what experiments/recipe/seeds.sh wrote.

    python experiments/recipe/seeds_summary.py experiments/recipe/results/seeds_<machine>.jsonl
"""
import json
import statistics
import sys


def main():
    rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
    by_recipe = {}
    for r in rows:
        by_recipe.setdefault(r["recipe"], {})[r["seed"]] = 100 * r["test_top1"]
    for recipe, top1 in by_recipe.items():
        values = [top1[s] for s in sorted(top1)]
        sd = statistics.stdev(values) if len(values) > 1 else float("nan")
        print(f"{recipe}: {statistics.mean(values):.2f} ± {sd:.2f} % over {len(values)} seeds "
              f"(seeds {sorted(top1)}: " + " / ".join(f"{v:.2f}" for v in values) + ")")
    if {"default", "earlier"} <= set(by_recipe):
        a, b = by_recipe["default"], by_recipe["earlier"]
        seeds = sorted(set(a) & set(b))
        diffs = [a[s] - b[s] for s in seeds]
        print(f"default - earlier, paired by seed: mean {statistics.mean(diffs):+.2f} points "
              f"(" + " / ".join(f"{d:+.2f}" for d in diffs) + f"); the default better in "
              f"{sum(d > 0 for d in diffs)} of {len(seeds)} seeds")


if __name__ == "__main__":
    main()
