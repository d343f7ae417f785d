"""Does a short run's evaluated model match its training? (The question behind eval-mode
statistics: BatchNorm's running statistics and the weights' moving average lag the weights.)

    python experiments/eval_statistics/measure.py --out runs/eval_statistics --seeds 0,1,2
        [--flag-sets "defaults,running statistics,no moving average"]

Writes a folder of 3 trivially separable classes (reds, greens, blues: 60 train / 20 test
images each, 20-60 px, colour noise), trains `--alpha 0.25 --epochs 6 --batch-size 32
--val-fraction 0` with each flag set below, and evaluates the final checkpoint on the test and
the training split. Prints one JSON line per run: the last epoch's train top-1 (train mode,
augmented) beside the evaluated top-1 of both splits, and the seconds the last recomputation
of the BatchNorm statistics took (the defaults).
"""
import argparse
import json
import pathlib
import shutil
import subprocess
import sys

from mobilenet_jax.data.synthetic import write_colour_folder

FLAG_SETS = {"defaults": [], "running statistics": ["--precise-bn-batches", "0"],
             "no moving average": ["--precise-bn-batches", "0", "--ema-decay", "0"]}
def run(args):
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True,
                          check=True).stdout


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/eval_statistics")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--flag-sets", default=",".join(FLAG_SETS))
    args = parser.parse_args()
    out = pathlib.Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    write_colour_folder(out / "folder")
    for seed in args.seeds.split(","):
        for name in args.flag_sets.split(","):
            flags = FLAG_SETS[name]
            workdir = out / f"{name.replace(' ', '_')}_s{seed}"
            run(["mobilenet_jax.train", "--image-folder", str(out / "folder"), "--alpha", "0.25",
                 "--epochs", "6", "--batch-size", "32", "--val-fraction", "0", "--seed", seed,
                 "--no-progress", "--workdir", str(workdir), *flags])
            last = json.loads((workdir / "metrics.jsonl").read_text().splitlines()[-1])
            row = {"flags": name, "seed": int(seed), "train_top1_last_epoch": last["train_top1"],
                   "precise_bn_s": last.get("precise_bn_s")}
            for split in ("test", "train"):
                report = workdir / f"{split}.json"
                run(["mobilenet_jax.evaluate", "--ckpt", str(workdir), "--split", split,
                     "--json", str(report)])
                row[f"evaluated_{split}_top1"] = json.loads(report.read_text())["top1"]
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
