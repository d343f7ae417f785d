"""What experiments/gpu/run.sh measured, in short: the fastest settings of the train step, the
real run's epoch time and test top-1, and what they imply for 200 CIFAR-100 epochs.

    python experiments/gpu/summarize.py experiments/gpu/results

Reads whatever of grid.json, train.log, metrics.jsonl (the run's), eval.json, infer.json
and loop.json exists.
"""
import json
import re
import sys
from pathlib import Path

def load(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def grid_lines(grid: dict) -> list:
    rows = [r for r in grid["results"] if "img_per_s" in r]
    lines = [f"train step: {len(rows)} of {len(grid['results'])} rows measured"]
    for alpha in sorted({r["alpha"] for r in rows}, reverse=True):
        best = max((r for r in rows if r["alpha"] == alpha), key=lambda r: r["img_per_s"])
        lines.append(f"  alpha {alpha}: fastest {best['kernels']} {best['dtype']} batch "
                     f"{best['batch']}: {best['img_per_s']:,.0f} img/s "
                     f"({1000 * best['median_step_s']:.2f} ms a step)")
        for dtype in sorted({r["dtype"] for r in rows}):
            for batch in sorted({r["batch"] for r in rows}):
                pair = {r["kernels"]: r["img_per_s"] for r in rows
                        if (r["alpha"], r["dtype"], r["batch"]) == (alpha, dtype, batch)}
                if len(pair) == 2:
                    winner = max(pair, key=pair.get)
                    lines.append(f"    {dtype} batch {batch}: " + ", ".join(
                        f"{k} {v:,.0f}" for k, v in pair.items()) + f" -> {winner}")
    return lines


def train_lines(log: str) -> list:
    epochs = []
    for line in log.splitlines():
        m = re.match(r"(\d+\.\d+) epoch\s+(\d+)/(\d+).*\| (\d+) img/s", line)
        if m:
            epochs.append((float(m[1]), int(m[2]), int(m[3]), int(m[4])))
    if len(epochs) < 2:
        return [f"train: {len(epochs)} epochs logged"]
    (t1, _, total, _), (tn, n, _, _) = epochs[0], epochs[-1]
    per_epoch = (tn - t1) / (n - 1)
    step_rate = sorted(e[3] for e in epochs[1:])[len(epochs[1:]) // 2]
    return [f"train: {n} of {total} epochs; after the first, {per_epoch:.2f} s an epoch "
            "(train steps, validation, a checkpoint)",
            f"  train steps {step_rate:,} img/s (median of the epochs' own reading); 200 "
            f"CIFAR-100 epochs at that rate: {200 * 45_000 / step_rate / 60:.1f} min of train "
            "steps"]


def run_against_steps(epochs: list, grid: dict, alpha: float, batch: int) -> list:
    """An epoch of the real run, by the loop's own clocks, against its steps bare (the grid's
    fastest float32 row of that alpha and batch)."""
    if len(epochs) < 3:
        return []
    later = epochs[1:]  # the first epoch compiles

    def median(name):
        values = sorted(e.get(name, 0.0) for e in later)
        return values[len(values) // 2]

    steps = later[1]["step"] - later[0]["step"]
    lines = [f"  an epoch by the loop's clocks (median after the first): train steps "
             f"{median('train_s'):.2f} s, BatchNorm statistics {median('precise_bn_s'):.2f} s, "
             f"validation {median('val_s'):.2f} s ({steps} steps of batch {batch})"]
    rows = [r for r in (grid or {}).get("results", []) if "median_step_s" in r
            and (r["alpha"], r["batch"], r["dtype"]) == (alpha, batch, "float32")]
    if rows:
        bare = steps * min(r["median_step_s"] for r in rows)
        lines.append(f"  the same {steps} steps bare (train step grid): {bare:.2f} s; the run's "
                     f"train steps take {median('train_s') / bare:.2f}x that")
    return lines


def main():
    out = Path(sys.argv[1])
    lines = []
    grid = load(out / "grid.json")
    if grid:
        lines += [f"# {grid['machine']['device_kind']}, jax {grid['machine']['versions']['jax']}"]
        lines += grid_lines(grid)
    if (out / "train.log").exists():
        lines += train_lines((out / "train.log").read_text())
    if (out / "metrics.jsonl").exists():
        epochs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        stored = load(out / "config.json") or {}  # grouped, or flat as written before the groups
        config = {**stored, **stored.get("network", {}), **stored.get("recipe", {})}
        lines += run_against_steps(epochs, grid, config.get("width_multiplier", 1.0),
                                   config.get("batch_size", 512))
    result = load(out / "eval.json")
    if result:
        lines.append(f"  test top-1 {result['top1']:.4f} on {result['examples']} images (one "
                     "seed)")
    for name in ("infer", "loop"):
        bench = load(out / f"{name}.json")
        for r in (bench or {}).get("results", []):
            if "img_per_s" in r:
                lines.append(f"{name}: alpha {r['alpha']} {r['dtype']} batch {r['batch']}: "
                             f"{r['img_per_s']:,.0f} img/s")
            elif "variants" in r:
                lines.append(f"{name}: alpha {r['alpha']} batch {r['batch']}: " + ", ".join(
                    f"{k} {1000 * v['step_s']:.3f} ms ({v['overhead_pct']:+.1f}%)"
                    for k, v in r["variants"].items()))
    print("\n".join(lines) if lines else "nothing measured")


if __name__ == "__main__":
    main()
