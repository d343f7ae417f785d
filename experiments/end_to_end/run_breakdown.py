"""Where a whole `train` run's wall time goes, against the same number of bare train steps.

For each α: one run that fills the compilation cache, then with the cache warm
  1. the run's wall time (20 epochs by default, a checkpoint and validation every epoch);
  2. the same run under cProfile, for the breakdown: start-up (imports, reading the data, the
     state, compiling or loading the steps from the cache) and what each epoch spends beside
     its steps (recomputed BatchNorm statistics, validation, the save's hold on the loop,
     metrics and curves);
  3. the bare train step of `benchmark --mode train` at the same α and batch, just before and
     just after the run (the machine's speed drifts), times the run's number of steps;
  4. a fresh process that only imports `mobilenet_jax.train` (median of 3).
The profiler slows Python (tracing above all); the run's own clocks (`metrics.jsonl`) are not
slowed.

    python experiments/end_to_end/run_breakdown.py --data-dir ../shared/data/cifar100-6class-arrayrecord
"""
import argparse
import json
import pstats
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# part of the run -> the functions it is: (file name ending, name, caller's file name ending
# or None for any caller); cumulative seconds, so a part includes what compiling its first
# call did.
PARTS = {
    "read the data": [("data/sources.py", "load_split", None),
                      ("data/arrays.py", "split_validation", None)],
    "channel statistics": [("data/arrays.py", "channel_statistics", None)],
    "open / restore checkpoints": [("core/checkpoint.py", "__init__", None)],
    "new state": [("core/steps.py", "new_state", None)],
    "train steps (dispatch and waiting)": [("training/loop.py", "train_steps", None),
                                           ("training/step_metrics.py", "read_all",
                                            "training/loop.py")],
    "recompute BatchNorm statistics": [("training/precise_bn.py", "recompute", None)],
    "validation": [("evaluators/classification.py", "evaluate_split", None)],
    "checkpoint save() (the loop's share)": [("core/checkpoint.py", "save", None)],
    "waiting for the last checkpoint write": [("core/checkpoint.py", "wait", "training/loop.py")],
    "metrics.jsonl and TensorBoard": [("training/metrics_log.py", "write", None)],
    "curves (the loop's share)": [("training/curves.py", "update", None)],
    "whole loop (training/loop.py train)": [("training/loop.py", "train", None)],
    "of all: tracing Python to jaxprs": [("jax/_src/pjit.py", "_trace_for_jit", None)],
    "of all: lowering jaxprs for XLA": [("jax/_src/interpreters/pxla.py",
                                        "lower_sharding_computation", None)],
    "of all: compiling or loading from the cache": [("jax/_src/compiler.py",
                                                     "compile_or_get_cached", None)],
}


def seconds_in(profile: Path) -> dict:
    stats = pstats.Stats(str(profile)).stats
    parts = dict.fromkeys(PARTS, 0.0)
    for part, functions in PARTS.items():
        for (file, _, name), (_, _, _, cumulative, callers) in stats.items():
            for end, function, caller in functions:
                if not (file.endswith(end) and name == function):
                    continue
                parts[part] += cumulative if caller is None else sum(
                    by_caller[3] for (caller_file, _, _), by_caller in callers.items()
                    if caller_file.endswith(caller))
    return parts


def wall(command: list, check=True) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=check, capture_output=True)
    return time.perf_counter() - start


def bare_step_s(alpha: str, batch: int, cache: str) -> float:
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        subprocess.run([sys.executable, "-m", "mobilenet_jax.benchmark", "--mode", "train",
                        "--alphas", alpha, "--batch-size", str(batch), "--no-pipeline",
                        "--compile-cache", cache, "--json", out.name],
                       check=True, capture_output=True)
        return json.loads(Path(out.name).read_text())["results"][0]["median_step_s"]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--alphas", default="0.1,1.0")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    imports = statistics.median(
        wall([sys.executable, "-c", "import mobilenet_jax.train"]) for _ in range(3))
    print(f"python -c 'import mobilenet_jax.train': {imports:.2f} s (median of 3)")
    for alpha in args.alphas.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            cache, workdir = f"{tmp}/cache", f"{tmp}/run"
            train = [sys.executable, "-m", "mobilenet_jax.train", "--alpha", alpha,
                     "--batch-size", str(args.batch_size), "--epochs", str(args.epochs),
                     "--data-dir", args.data_dir, "--offline", "--no-progress",
                     "--compile-cache", cache, "--workdir", workdir]
            wall(train)  # fills the cache
            shutil.rmtree(workdir)
            step_before = bare_step_s(alpha, args.batch_size, cache)
            run_s = wall(train)
            step_after = bare_step_s(alpha, args.batch_size, cache)
            epochs = [json.loads(line) for line in Path(f"{workdir}/metrics.jsonl").open()]
            steps = epochs[-1]["step"]
            shutil.rmtree(workdir)
            profile = Path(f"{tmp}/train.prof")
            profiled_s = wall([train[0], "-m", "cProfile", "-o", str(profile), *train[1:]])
            parts = seconds_in(profile)
        loop = parts["whole loop (training/loop.py train)"]
        steps_in_run = statistics.median(e["train_s"] for e in epochs[1:])
        print(f"\n## alpha {alpha}, batch {args.batch_size}, {args.epochs} epochs "
              f"({steps} steps), compilation cache warm")
        print(f"| what | seconds |\n|---|---|")
        print(f"| the run, wall (process start to exit) | {run_s:.1f} |")
        step_s = (step_before + step_after) / 2
        print(f"| {steps} bare train steps (benchmark, just before and after the run: "
              f"{1000 * step_before:.1f}, {1000 * step_after:.1f} ms a step) | {steps * step_s:.1f} |")
        print(f"| run / bare steps | {run_s / (steps * step_s):.2f}x |")
        print(f"| an epoch's train steps in the run (median `train_s` after the first; bare: "
              f"{steps // len(epochs)} steps) | {steps_in_run:.2f} ({steps // len(epochs) * step_s:.2f}) |")
        for name, what in (("train_s", "train steps"), ("precise_bn_s", "BatchNorm statistics"),
                           ("val_s", "validation")):
            values = [e.get(name, 0.0) for e in epochs]
            print(f"| the run's {what}, by its own clocks (`{name}`): first epoch, all epochs | "
                  f"{values[0]:.2f}, {sum(values):.1f} |")
        print(f"| the profiled run, wall | {profiled_s:.1f} |")
        print(f"| of it, before the loop (interpreter, imports, flags, exit) | "
              f"{profiled_s - loop:.1f} |")
        for part, seconds in parts.items():
            print(f"| {part} | {seconds:.2f} |")


if __name__ == "__main__":
    main()
