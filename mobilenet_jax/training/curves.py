"""Training curves: loss and top-1 (train and validation) against the epoch, for one run or
several overlaid (legends from their configs). `CurvesWriter` redraws a run's `curves.png`
after every epoch while it trains."""
import json
import os
import pathlib
import threading
from typing import Optional

from mobilenet_jax.config import flatten
from mobilenet_jax.errors import short_reason

METRICS = ("loss", "top1", "top5")
TITLES = {"loss": "cross-entropy loss", "top1": "top-1 accuracy", "top5": "top-5 accuracy"}


class PlotError(Exception):
    """A run directory without metrics to plot; the message says what to do."""


def read_run(run_dir) -> tuple[dict, list]:
    """(config, one metrics record per epoch) of a run directory (its last record per epoch)."""
    run_dir = pathlib.Path(run_dir)
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        raise PlotError(f"{run_dir} has no metrics.jsonl; pass a run's --workdir (train writes "
                        "it at the end of every epoch)")
    by_epoch = {}
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
            by_epoch[int(record["epoch"])] = record
        except (ValueError, KeyError, TypeError):
            continue  # a line cut short by a kill: the others still plot
    if not by_epoch:
        raise PlotError(f"{path} holds no finished epoch yet; plot once one has finished")
    try:
        config = json.loads((run_dir / "config.json").read_text())
    except (OSError, ValueError):
        config = {}
    return config, [by_epoch[e] for e in sorted(by_epoch)]


# What tells runs apart in a legend (when it differs) and titles the figure (when shared).
LEGEND = {"α": "width_multiplier", "stem stride": "stem_stride", "res": "resolution",
          "block": "block", "seed": "seed", "epochs": "epochs", "optimizer": "optimizer",
          "lr": "lr", "batch": "batch_size", "wd": "weight_decay", "ls": "label_smoothing",
          "from": "init_from"}
TITLE = ("α", "stem stride", "res", "data")


def facts(config: dict) -> dict:
    """{"α": 0.25, ..., "data": "cifar100"} of a stored config (fields it lacks left out)."""
    config = flatten(config)
    out = {name: config[key] for name, key in LEGEND.items() if key in config}
    out["data"] = config.get("image_folder") or config.get("dataset")
    return out


def legend_labels(configs: list) -> list:
    """For each run, what differs between the runs, e.g. "α=0.25 stem stride=1 seed=0"."""
    all_facts = [facts(c) for c in configs]
    differ = [k for k in all_facts[0] if len({json.dumps(f.get(k)) for f in all_facts}) > 1]
    return [" ".join(f"{k}={f.get(k)}" for k in differ) or f"run {i + 1}"
            for i, f in enumerate(all_facts)]


def describe(configs: list) -> str:
    """The title: what the runs share, e.g. "α=0.25, stem stride=1, res=32, data=cifar100"."""
    all_facts = [facts(c) for c in configs]
    first = all_facts[0]
    shared = [k for k in TITLE
              if first.get(k) is not None and all(f.get(k) == first[k] for f in all_facts)]
    return ", ".join(f"{k}={first[k]}" for k in shared)


def figure(runs: list, metrics=("loss", "top1")):
    """A matplotlib Figure (no pyplot: safe off the main thread), one panel per metric:
    train (dashed) and validation (solid) of each run, one colour per run."""
    from matplotlib import colormaps
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator
    fig = Figure(figsize=(5.5 * len(metrics), 4))
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    configs = [config for config, _ in runs]
    labels = legend_labels(configs) if len(runs) > 1 else [""]
    colours = colormaps["tab10"].colors
    for i, ((config, epochs), label) in enumerate(zip(runs, labels)):
        x = [r["epoch"] for r in epochs]
        for ax, metric in zip(axes, metrics):
            for split, style in (("train", "--"), ("val", "-")):
                y = [r.get(f"{split}_{metric}") for r in epochs]
                if any(v is not None for v in y):
                    ax.plot(x, [float("nan") if v is None else v for v in y], style,
                            color=colours[i % len(colours)], label=f"{label} {split}".strip())
    for ax, metric in zip(axes, metrics):
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(TITLES[metric])
        if metric == "loss":  # early validation spikes would flatten the rest on a linear axis
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7 if len(runs) > 1 else 9)
    fig.suptitle(describe(configs), fontsize=10)
    fig.tight_layout()
    return fig


def save(fig, out) -> None:
    """Write the figure as PNG, atomically (a reader never sees half a file)."""
    out = pathlib.Path(out)
    tmp = out.with_name(f".{out.name}.tmp")
    try:
        fig.savefig(tmp, format="png", dpi=100)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)


def write_curves(workdir) -> None:
    """`<workdir>/curves.png` of the run in `workdir`."""
    save(figure([read_run(workdir)]), pathlib.Path(workdir) / "curves.png")


class CurvesWriter:
    """Redraws `<workdir>/curves.png` after each epoch in a background thread: training does
    not wait for a redraw, which can take as long as a short epoch."""

    def __init__(self, workdir, say=print):
        self.workdir, self.say = workdir, say
        self.thread: Optional[threading.Thread] = None
        self.failed = False

    def update(self) -> None:
        self.close()  # at most one redraw at a time; the newest metrics win
        self.thread = threading.Thread(target=self._draw, daemon=True)
        self.thread.start()

    def _draw(self) -> None:
        try:
            write_curves(self.workdir)
        except Exception as e:  # noqa: BLE001 - a figure must never stop training
            if not self.failed:
                self.say(f"note: could not draw {pathlib.Path(self.workdir) / 'curves.png'} "
                         f"({short_reason(e, 120)}); training goes on")
            self.failed = True

    def close(self) -> None:
        if self.thread is not None:
            self.thread.join()
