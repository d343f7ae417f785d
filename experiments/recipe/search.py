"""Choose the recipe on validation accuracy: each candidate trains with several seeds on 90 % of
the training split (the held-out 10 % differs by seed) and is scored there; the test split is
not read. Every candidate names all recipe flags, so results do not depend on the defaults.

    python experiments/recipe/search.py --out experiments/recipe/results/search.jsonl \\
        --data-flags "--data-dir ../shared/data/cifar100-6class-tfds --offline"
    python experiments/recipe/search.py --summary experiments/recipe/results/search.jsonl

--parallel N runs N trainings at once (on one GPU); --deadline-s stops starting new ones.
Runs are started seed by seed, so a deadline leaves every candidate with as many seeds.
"""
import argparse
import collections
import concurrent.futures
import json
import os
import pathlib
import shlex
import subprocess
import sys
import time

import numpy as np

NETWORK = ["--alpha", "0.25", "--stem-stride", "1", "--val-fraction", "0.1"]
PLAIN = {"--label-smoothing": "0", "--ema-decay": "0", "--mixup-alpha": "0",
         "--cutmix-alpha": "0", "--weight-decay": "5e-4", "--batch-size": "128",
         "--warmup-epochs": "2", "--lr": "0.1", "--dropout": "0"}
SMOOTH_EMA = {"--label-smoothing": "0.1", "--ema-decay": "0.999"}
CANDIDATES = {
    "plain": {},
    "ls0.1": {"--label-smoothing": "0.1"},
    "ema0.999": {"--ema-decay": "0.999"},
    "ema0.99": {"--ema-decay": "0.99"},
    "ls0.1+ema": SMOOTH_EMA,
    "ls0.1+ema+mixup0.2": {**SMOOTH_EMA, "--mixup-alpha": "0.2"},
    "ls0.1+ema+cutmix1": {**SMOOTH_EMA, "--cutmix-alpha": "1.0"},
    "ls0.1+ema+bs64": {**SMOOTH_EMA, "--batch-size": "64"},
    "ls0.1+ema+wd1e-3": {**SMOOTH_EMA, "--weight-decay": "1e-3"},
    "ls0.1+ema+warmup5": {**SMOOTH_EMA, "--warmup-epochs": "5"},
    "ls0.1+ema+lr0.2": {**SMOOTH_EMA, "--lr": "0.2"},
    "ls0.1+ema+dropout0.2": {**SMOOTH_EMA, "--dropout": "0.2"},
    "ls0.1+ema+bs64+warmup5": {**SMOOTH_EMA, "--batch-size": "64", "--warmup-epochs": "5"},
}


def train_flags(name: str, epochs: int) -> list:
    return NETWORK + ["--epochs", str(epochs)] + [x for k, v in {**PLAIN, **CANDIDATES[name]}.items() for x in (k, v)]


def run_one(name: str, seed: int, epochs: int, data_flags: list, runs: pathlib.Path) -> dict:
    workdir = runs / f"{name}-seed{seed}"
    command = [sys.executable, "-m", "mobilenet_jax.train", *train_flags(name, epochs), *data_flags,
               "--seed", str(seed), "--workdir", str(workdir), "--no-progress",
               "--checkpoint-every", str(epochs), "--keep", "1"]
    start = time.time()
    done = subprocess.run(command, capture_output=True, text=True)
    record = {"candidate": name, "seed": seed, "epochs": epochs, "flags": CANDIDATES[name],
              "wall_s": round(time.time() - start, 1), "returncode": done.returncode}
    if done.returncode:
        record["error"] = (done.stderr or done.stdout).strip().splitlines()[-1:]
        return record
    epochs = [json.loads(line) for line in open(workdir / "metrics.jsonl")]
    record.update(val_top1=epochs[-1]["val_top1"], val_loss=epochs[-1]["val_loss"],
                  best_val_top1=max(e["val_top1"] for e in epochs),
                  train_top1=epochs[-1]["train_top1"],
                  images_per_s=float(np.median([e["images_per_s"] for e in epochs])))
    return record


def search(args):
    names = args.candidates.split(",") if args.candidates else list(CANDIDATES)
    unknown = set(names) - set(CANDIDATES)
    if unknown:
        sys.exit(f"unknown candidates {sorted(unknown)}; choose from {list(CANDIDATES)}")
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    done = {(r["candidate"], r["seed"]) for r in read(out)} if out.exists() else set()
    queue = [(n, s) for s in range(args.seeds) for n in names if (n, s) not in done]
    start = time.time()
    with concurrent.futures.ThreadPoolExecutor(args.parallel) as pool, open(out, "a") as log:
        def submit(item):
            if time.time() - start > args.deadline_s:
                return None
            return pool.submit(run_one, *item, args.epochs, shlex.split(args.data_flags),
                               pathlib.Path(args.runs))
        futures = [f for f in map(submit, queue[:args.parallel]) if f]
        pending, succeeded = queue[args.parallel:], False
        while futures:
            finished, rest = concurrent.futures.wait(
                futures, return_when=concurrent.futures.FIRST_COMPLETED)
            futures = list(rest)
            for f in finished:
                record = f.result()
                log.write(json.dumps(record) + "\n")
                log.flush()
                print(json.dumps(record), flush=True)
                succeeded = succeeded or not record["returncode"]
                if not succeeded:  # the first run failed: the others would too
                    pending.clear()
                if pending:
                    new = submit(pending.pop(0))
                    if new:
                        futures.append(new)
    summary(out)


def read(path) -> list:
    return [json.loads(line) for line in open(path) if line.strip()]


def summary(path):
    by_name = collections.defaultdict(list)
    for r in read(path):
        if "val_top1" in r:
            by_name[r["candidate"]].append(r)
    print(f"{'candidate':<24} {'seeds':>5} {'val top-1 mean':>14} {'sd':>5} {'each seed':<40}")
    for name, rs in sorted(by_name.items(), key=lambda kv: -np.mean([r["val_top1"] for r in kv[1]])):
        rs = sorted(rs, key=lambda r: r["seed"])
        v = 100 * np.array([r["val_top1"] for r in rs])
        print(f"{name:<24} {len(v):>5} {v.mean():>14.1f} {v.std(ddof=1) if len(v) > 1 else 0:>5.1f} "
              + " ".join(f"{x:.1f}" for x in v))


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", help="results, one JSON line per run (appended; done runs skipped)")
    parser.add_argument("--summary", metavar="RESULTS", help="print the table of a results file")
    parser.add_argument("--data-flags", default="--data-dir ../shared/data/cifar100-6class-tfds "
                        "--offline", help="train flags that say where the data is")
    parser.add_argument("--candidates", help="comma list (default: all)")
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--parallel", type=int, default=1)
    parser.add_argument("--deadline-s", type=float, default=float("inf"))
    parser.add_argument("--runs", default="runs/recipe_search")
    args = parser.parse_args()
    if args.summary:
        summary(args.summary)
    elif args.out:
        search(args)
    else:
        parser.error("pass --out (to search) or --summary")


if __name__ == "__main__":
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # several runs share a GPU
    main()
