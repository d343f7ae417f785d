"""The width table's markdown (alpha_table/table.md) and its figure (alpha_table.png: the
validation top-1 of each width's seed-0 run overlaid) from what alpha_table.sh wrote.

    python experiments/cifar10/alpha_table.py
"""
import json
import pathlib
import statistics

from mobilenet_jax.config import Config
from mobilenet_jax.models.mobilenet import MobileNetV1
from mobilenet_jax.models.summary import summarize, totals
from mobilenet_jax.training import curves

HERE = pathlib.Path(__file__).parent
OUT = HERE / "alpha_table"


def main():
    rows = [json.loads(line) for line in (OUT / "results.jsonl").read_text().splitlines()]
    by_setting = {}
    for row in rows:
        by_setting.setdefault((row["stem_stride"] == 2, row["alpha"]), []).append(row)
    lines = ["| α | stem stride | parameters | mult-adds | test top-1 | test top-5 | seeds "
             "| epoch, median | all epochs |", "|---|---|---|---|---|---|---|---|---|"]
    for (_, alpha), runs in sorted(by_setting.items()):
        stem = runs[0]["stem_stride"]
        config = Config(width_multiplier=alpha, stem_stride=stem, num_classes=10,
                        kernels="reference")
        counts = totals(summarize(MobileNetV1(**config.model_kwargs()), 32))
        top1 = [100 * r["test_top1"] for r in runs]
        top5 = [100 * r["test_top5"] for r in runs]
        spread = (lambda v: f" ± {statistics.stdev(v):.2f}" if len(v) > 1 else "")
        lines.append(
            f"| {alpha} | {stem} | {counts['params']:,} | {counts['mult_adds'] / 1e6:.2f} M | "
            f"{statistics.mean(top1):.2f}{spread(top1)} % | "
            f"{statistics.mean(top5):.2f}{spread(top5)} % | "
            + " / ".join(f"{t:.2f}" for t in top1)
            + " | " + " / ".join(f"{r['median_epoch_s']:.1f}" for r in runs) + " s | "
            + " / ".join(f"{r['train_wall_s'] / 60:.0f}" for r in runs) + " min |")
    (OUT / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    seed0 = sorted((r for r in rows if r["seed"] == 0),
                   key=lambda r: (r["stem_stride"], r["alpha"]))
    runs = [(json.loads((OUT / r["name"] / "config.json").read_text()),
             [json.loads(line) for line in (OUT / r["name"] / "metrics.jsonl").read_text()
              .splitlines()]) for r in seed0]
    curves.save(curves.figure(runs, ("top1",)), HERE / "alpha_table.png")


if __name__ == "__main__":
    main()
