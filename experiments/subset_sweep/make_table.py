"""The sweep's table (results/table.md) and its curves (alpha_stem.png, resolution.png) from
results/*.json and results/*.metrics.jsonl, as written by run.sh."""
import json
import pathlib
import statistics

from mobilenet_jax.config import flatten
from mobilenet_jax.training import curves
from mobilenet_jax.models.mobilenet import MobileNetV1
from mobilenet_jax.models.summary import summarize, totals

HERE = pathlib.Path(__file__).parent
RESULTS = HERE / "results"


def main():
    runs = {}
    for path in sorted(RESULTS.glob("*-seed*.json")):
        name, seed = path.stem.rsplit("-seed", 1)
        result = json.loads(path.read_text())
        runs.setdefault(name, {})[int(seed)] = {**result, "config": flatten(result["config"])}
    lines = ["| α | stem stride | resolution | parameters | mult-adds | test top-1, seed 0 / 1 "
             "| mean | training wall time, seed 0 / 1 |", "|---|---|---|---|---|---|---|---|"]
    def order(item):  # the α x stem sweep (stride 2 first), then the resolutions
        c = item[1][0]["config"]
        return (c["resolution"] != 32, -c["stem_stride"], c["width_multiplier"], -c["resolution"])
    runs = dict(sorted(runs.items(), key=order))
    for name, seeds in runs.items():
        c = seeds[0]["config"]
        counts = totals(summarize(MobileNetV1(num_classes=c["num_classes"],
                                              width_multiplier=c["width_multiplier"],
                                              stem_stride=c["stem_stride"]), c["resolution"]))
        tops = [seeds[s]["test_top1"] for s in sorted(seeds)]
        walls = [seeds[s]["train_wall_s"] for s in sorted(seeds)]
        lines.append(f"| {c['width_multiplier']} | {c['stem_stride']} | {c['resolution']} | "
                     f"{counts['params'] / 1e6:.2f}M | {counts['mult_adds'] / 1e6:.1f}M | "
                     + " / ".join(f"{t:.2%}" for t in tops) + f" | {statistics.mean(tops):.2%} | "
                     + " / ".join(f"{w:.0f} s" for w in walls) + " |")
    (RESULTS / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))

    def plot(names, out):
        chosen = [(seeds[0]["config"], read_metrics(name)) for name, seeds in runs.items()
                  if name in names]
        curves.save(curves.figure(chosen, ("loss", "top1")), HERE / out)

    plot([n for n in runs if n.endswith("res32")], "alpha_stem.png")
    plot([n for n in runs if n.startswith("alpha0.25-stem1")], "resolution.png")


def read_metrics(name):
    return [json.loads(line) for line in (RESULTS / f"{name}-seed0.metrics.jsonl").read_text()
            .splitlines()]


if __name__ == "__main__":
    main()
