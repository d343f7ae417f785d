"""Does a whole training process run in a fast or a slow mode, and what decides which?

Runs the benchmark's α=1.0 training step (`python -m mobilenet_jax.benchmark --alphas 1.0
--mode train --no-pipeline`) in many fresh processes, one per condition per round, the
conditions' order rotating from round to round, and prints each process's median and fastest
step. A condition is a way of starting the process:

    default   as a user runs it
    no-aslr   `setarch -R`: the same addresses in every process
    thp       GLIBC_TUNABLES=glibc.malloc.hugetlb=1: malloc asks for transparent huge pages

    python experiments/slow_mode/process_modes.py --rounds 6 --out experiments/slow_mode/results/<stamp>.jsonl
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

CONDITIONS = {
    "default": ([], {}),
    "no-aslr": (["setarch", "-R"], {}),
    "thp": ([], {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}),
}


def run_once(condition, alpha, kernels):
    prefix, env = CONDITIONS[condition]
    with tempfile.NamedTemporaryFile(suffix=".json") as f:
        cmd = prefix + [sys.executable, "-m", "mobilenet_jax.benchmark", "--alphas", str(alpha),
                        "--mode", "train", "--kernels", kernels, "--no-pipeline", "--json", f.name]
        subprocess.run(cmd, env={**os.environ, **env}, check=True, stdout=subprocess.DEVNULL)
        result = json.load(open(f.name))
    r = result["results"][0]
    return {"condition": condition, "alpha": alpha, "kernels": kernels,
            "median_step_ms": 1000 * r["median_step_s"], "min_step_ms": 1000 * r["min_step_s"],
            "iqr_rel": r["iqr_rel"], "matmul_gflops": result["matmul_peak"]["gflops_median"],
            **{k: r.get(k) for k in ("cores_busy", "page_faults_per_step", "waits_per_step",
                                     "preemptions_per_step")},
            "date": result["machine"]["date"]}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--alpha", type=float, default=1.0)
    p.add_argument("--kernels", default="auto")
    p.add_argument("--conditions", default=",".join(CONDITIONS))
    p.add_argument("--out", required=True, help="append one JSON line per process here")
    a = p.parse_args()
    conditions = a.conditions.split(",")
    rows = []
    for rnd in range(a.rounds):
        order = conditions[rnd % len(conditions):] + conditions[:rnd % len(conditions)]
        for condition in order:
            row = {"round": rnd + 1, **run_once(condition, a.alpha, a.kernels)}
            rows.append(row)
            with open(a.out, "a") as f:
                f.write(json.dumps(row) + "\n")
            print(f"round {row['round']} {condition:<8} median {row['median_step_ms']:6.1f} ms  "
                  f"fastest {row['min_step_ms']:6.1f} ms  iqr {100 * row['iqr_rel']:4.1f}%  "
                  f"matmul {row['matmul_gflops']:5.1f} GFLOP/s  cores busy {row['cores_busy']:.2f}  "
                  f"per step: faults {row['page_faults_per_step']:.0f} waits "
                  f"{row['waits_per_step']:.0f} preempted {row['preemptions_per_step']:.0f}",
                  flush=True)
    print("\ncondition  processes  median step ms, each process (sorted)")
    for condition in conditions:
        ms = sorted(r["median_step_ms"] for r in rows if r["condition"] == condition)
        print(f"{condition:<10} {len(ms):>9}  median {statistics.median(ms):6.1f}: "
              + " ".join(f"{m:.0f}" for m in ms))


if __name__ == "__main__":
    main()
