"""How much does the compilation cache save when a run starts again?

    python experiments/compile_cache/measure.py --data-dir ../shared/data/cifar100-6class-tfds \
        --alpha 1.0 --out runs/compile_cache

Starts the same `train` command twice with an empty cache directory of its own: the first start
trains --max-steps 5 and stops; the second resumes that workdir to step 10 (what rerunning
after a stop does). For each start: its wall time, XLA's compile seconds (JAX's own
`backend_compile_duration` events), cache hits and the seconds of loading from the cache.
Then the same pair again with `--compile-cache off`, the baseline.
"""
import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path


def child(argv):
    """Run train.main(argv) in this process, then print what JAX compiled and loaded."""
    import jax

    from mobilenet_jax import train
    seen = {"compile_s": 0.0, "compiles": 0, "cache_hits": 0, "cache_load_s": 0.0}

    def duration(event, seconds, **_):
        if event == "/jax/core/compile/backend_compile_duration":
            seen["compile_s"] += seconds
            seen["compiles"] += 1
        elif event == "/jax/compilation_cache/cache_retrieval_time_sec":
            seen["cache_load_s"] += seconds

    def count(event, **_):
        if event == "/jax/compilation_cache/cache_hits":
            seen["cache_hits"] += 1
    jax.monitoring.register_event_duration_secs_listener(duration)
    jax.monitoring.register_event_listener(count)
    try:
        train.main(argv)
    finally:
        print("MEASURED " + json.dumps(seen), flush=True)


def start(argv):
    t = time.perf_counter()
    out = subprocess.run([sys.executable, __file__, "--child", *argv], capture_output=True,
                         text=True, check=True).stdout
    wall = time.perf_counter() - t
    seen = json.loads(next(l for l in out.splitlines() if l.startswith("MEASURED "))[9:])
    return {"wall_s": round(wall, 2), **{k: round(v, 2) for k, v in seen.items()}}


def main():
    if sys.argv[1:2] == ["--child"]:
        return child(sys.argv[2:])
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--alpha", default="1.0")
    parser.add_argument("--out", default="runs/compile_cache")
    args = parser.parse_args()
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    rows = []
    for cache in ("on", "off"):
        flag = str(out / "cache") if cache == "on" else "off"
        base = ["--alpha", args.alpha, "--data-dir", args.data_dir, "--offline", "--no-progress",
                "--workdir", str(out / f"run_{cache}"), "--compile-cache", flag]
        for name, steps in (("first start", 5), ("second start (resume)", 10)):
            row = {"cache": cache, "start": name, **start(base + ["--max-steps", str(steps)])}
            rows.append(row)
            print(json.dumps(row), flush=True)
    print(f"\nalpha {args.alpha}: | cache | start | wall s | compile s | compiles | cache hits "
          "| loading s |")
    for r in rows:
        print(f"| {r['cache']} | {r['start']} | {r['wall_s']:.1f} | {r['compile_s']:.1f} | "
              f"{r['compiles']} | {r['cache_hits']} | {r['cache_load_s']:.2f} |")


if __name__ == "__main__":
    main()
