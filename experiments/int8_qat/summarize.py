"""The int8 models of experiments/int8_qat/run.sh: mean ± sd over seeds, and every seed.

    python experiments/int8_qat/summarize.py [RESULTS_DIR]

For each width and each model (the float model; 5 more epochs with --qat; 5 more without):
its float top-1 in JAX, its int8 TFLite model's top-1, and the share of test images where the
int8 model's top-1 is the float model's.
"""
import json
import pathlib
import re
import statistics
import sys

VARIANTS = {"float": "float model, post-training int8", "finetune": "+5 epochs, int8",
            "qat": "+5 epochs --qat, int8"}


def mean_sd(values: list) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else float("nan")
    return f"{100 * statistics.mean(values):.2f} ± {100 * sd:.2f}"


def main(results: pathlib.Path) -> None:
    runs: dict = {}
    for path in sorted(results.glob("alpha*-seed*/*/parity.json")):
        width, seed = re.fullmatch(r"(alpha[\d.]+-stem\d)-seed(\d+)", path.parent.parent.name).groups()
        parity = json.loads(path.read_text())["parity"]
        runs.setdefault(width, {}).setdefault(path.parent.name, {})[int(seed)] = (
            parity["jax"]["top1"], parity["int8"]["top1"],
            parity["int8"]["top1_agreement_with_float"])
    print(f"{'width':<16} {'model':<32} {'seeds':>5} {'float top-1 %':>14} {'int8 top-1 %':>14} "
          f"{'int8 = float %':>15}")
    for width, variants in runs.items():
        for variant, label in VARIANTS.items():
            seeds = variants.get(variant, {})
            if not seeds:
                continue
            columns = [mean_sd([v[i] for v in seeds.values()]) for i in range(3)]
            print(f"{width:<16} {label:<32} {len(seeds):>5} {columns[0]:>14} {columns[1]:>14} "
                  f"{columns[2]:>15}")
    print("\nper seed (float top-1 / int8 top-1 / agreement, %):")
    for width, variants in runs.items():
        for variant, seeds in variants.items():
            print(f"{width:<16} {variant:<9} " + "  ".join(
                f"seed {s}: {100 * f:.2f} / {100 * q:.2f} / {100 * a:.2f}"
                for s, (f, q, a) in sorted(seeds.items())))


if __name__ == "__main__":
    main(pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else
         pathlib.Path(__file__).parent / "results")
