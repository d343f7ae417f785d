"""What checkpointing every epoch costs a whole `train` run: wall time of the same 20-epoch
run (α 0.1, batch 64, validation every epoch) with a checkpoint every epoch and with one at
the end, alternated, after one run that fills the compilation cache.

    python experiments/end_to_end/checkpoint_every.py --data-dir ../shared/data/cifar100-6class-arrayrecord
"""
import argparse
import shutil
import subprocess
import sys
import tempfile
import time


def wall(flags, workdir) -> float:
    shutil.rmtree(workdir, ignore_errors=True)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "mobilenet_jax.train", *flags, "--workdir", workdir],
                   check=True, capture_output=True)
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    flags = ["--alpha", "0.1", "--batch-size", "64", "--epochs", str(args.epochs),
             "--data-dir", args.data_dir, "--offline", "--no-progress"]
    every = {"every epoch": ["--checkpoint-every", "1"],
             "at the end": ["--checkpoint-every", str(args.epochs)]}
    with tempfile.TemporaryDirectory() as tmp:
        cache = ["--compile-cache", f"{tmp}/cache"]
        wall(flags + every["at the end"] + cache, f"{tmp}/run")  # fills the cache
        times = {name: [] for name in every}
        for _ in range(args.repeats):
            for name, extra in every.items():
                times[name].append(wall(flags + extra + cache, f"{tmp}/run"))
    for name, seconds in times.items():
        print(f"checkpoint {name}: " + ", ".join(f"{s:.1f}" for s in seconds) + " s")
    ratio = min(times["every epoch"]) / min(times["at the end"])
    print(f"every epoch / at the end (fastest of each): {ratio:.2f}x")


if __name__ == "__main__":
    main()
