"""The train-step table of an `ours_grid.sh` output folder: img/s per round and variant, and
each variant's ratio to the first, per alpha, stem and batch.

    python experiments/cpu_throughput/grid_table.py OUT [--first NAME]
"""
import argparse
import collections
import json
import pathlib
import re


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--first", help="the variant the others are compared with")
    args = parser.parse_args()
    speed = collections.defaultdict(dict)  # (alpha, stem, batch) -> {(variant, round): img/s}
    faults = {}
    variants = []
    for path in sorted(pathlib.Path(args.out).glob("*_r*_a*_s*.json")):
        name, rep = re.match(r"(.+)_r(\d+)_a", path.name).groups()
        if name not in variants:
            variants.append(name)
        for row in json.loads(path.read_text())["results"]:
            key = (row["alpha"], row["stem_stride"], row["batch"])
            speed[key][name, int(rep)] = row["img_per_s"]
            faults[key, name, int(rep)] = row.get("page_faults_per_step", float("nan"))
    first = args.first or variants[0]
    others = [v for v in variants if v != first]
    print("| alpha | stem | batch | " + " | ".join(f"{v} img/s (faults/step)" for v in variants)
          + " | " + " | ".join(f"{v} / {first}" for v in others) + " |")
    print("|---" * (3 + len(variants) + len(others)) + "|")
    for key in sorted(speed):
        rounds = sorted({r for _, r in speed[key]})
        cells = [" / ".join(f"{speed[key].get((v, r), float('nan')):,.0f} "
                            f"({faults.get((key, v, r), float('nan')):,.0f})" for r in rounds)
                 for v in variants]
        ratios = [" / ".join(f"{speed[key].get((v, r), float('nan')) / speed[key][first, r]:.2f}"
                             for r in rounds if (first, r) in speed[key]) for v in others]
        print(f"| {key[0]} | {key[1]} | {key[2]} | " + " | ".join(cells + ratios) + " |")


if __name__ == "__main__":
    main()
