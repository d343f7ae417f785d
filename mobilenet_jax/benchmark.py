"""Throughput of the real training step and of inference, on synthetic CIFAR-shaped data.

    python -m mobilenet_jax.benchmark --alphas 0.1,0.25,1.0 --kernels reference,cpu
    python -m mobilenet_jax.benchmark --smoke --json /tmp/bench.json
    python -m mobilenet_jax.benchmark --mode data --image-folder PATH --resolution 224

Times the train step that `train` runs, the inference forward pass (what other frameworks'
benchmarks time) and the eval step, on synthetic uint8 32x32 batches
(benchmarks/throughput.py): images/s, compile time, peak memory, GFLOP/s against a measured
matmul peak, and the input pipeline's share of the step. Beside the clock, from getrusage
over the timed steps: cores busy, page faults and context switches per step (JSON only).
Timing: warm-up steps, then at least 20 steps and 4 s (at most 30 s), median step time
(benchmarks/timing.py). `--mode data`: the streaming input path alone, images/s by worker
count, against a bare decode-crop-resize loop over the same files (benchmarks/data_pipeline.py).
"""
import argparse
import itertools
import json
import sys

from mobilenet_jax import cli, process
from mobilenet_jax.benchmarks.data_pipeline import bench_data, format_data_table
from mobilenet_jax.benchmarks.loop_overhead import bench_loop, format_loop_table
from mobilenet_jax.benchmarks.throughput import (SMOKE, bench_infer, bench_train,
                                                 forward_mult_adds, format_table)
from mobilenet_jax.benchmarks.timing import (MAX_TIME_S, MIN_STEPS, MIN_TIME_S, WARMUP,
                                             counting_cache_hits, machine_info, matmul_peak)
from mobilenet_jax.config import Config
from mobilenet_jax.data.arrays import DataError
from mobilenet_jax.models.memory import estimated_step_bytes
from mobilenet_jax.models.spec import KERNEL_CHOICES, resolve_kernels

MODEL_FLAGS = ("resolution", "stem_stride")
LOOP_SMOKE = {"round_s": 0.0, "rounds": 2, "min_steps": 3}


def parse_list(text, typ, name):
    try:
        values = [typ(v) for v in text.split(",") if v.strip()]
    except ValueError:
        cli.fail(f"--{name} must be a comma-separated list, got {text!r}")
    if not values:
        cli.fail(f"--{name} is empty")
    return values


def main(argv=None):
    process.start_command()
    args = build_parser().parse_args(argv)
    command = " ".join(["python -m mobilenet_jax.benchmark",
                        *(sys.argv[1:] if argv is None else argv)])
    if args.mode == "data":
        return data_mode(args, command)
    settings, rows = plan_rows(args)
    # The allocator is set once per process, before JAX starts, for the run's largest step:
    # time small and large models in separate runs (experiments/cpu_throughput/run_sitting.sh).
    step_bytes = max(estimated_step_bytes(row["config"], row["batch"], row["mode"] != "infer")
                     for row in rows)
    applied = process.keep_freed_memory(step_bytes)
    info = {**machine_info(), "allocator": "tcmalloc" if process.uses_tcmalloc() else "glibc",
            "keep_freed_memory": applied,
            "single_arena": applied and process.needs_single_arena(step_bytes)}
    peak = matmul_peak(512 if args.smoke else 2048)
    print(machine_line(info), flush=True)
    print(f"# float32 {peak['n']}^3 matmul: {peak['gflops_median']:.1f} GFLOP/s (median)",
          flush=True)
    result = {"machine": info, "matmul_peak": peak,
              "settings": {**settings, "command": command}, "results": []}
    table = format_loop_table if args.mode == "loop" else format_table
    with counting_cache_hits() as cache_hits:
        for row in rows:
            config, first_policy, mode = row.pop("config"), row.pop("first_policy"), row["mode"]
            rec = {**row, "resolved": resolve_kernels(config.compute.kernels, info["backend"]),
                   **run_row(config, mode, row["batch"], settings["timing"],
                             args.pipeline and first_policy, args.compile_only, cache_hits)}
            if "img_per_s" in rec:
                rec["gflops"] = rec["flops_per_image"] * rec["img_per_s"] / 1e9
                rec["pct_of_peak"] = 100 * rec["gflops"] / peak["gflops_median"]
            result["results"].append(rec)
            if args.compile_only:
                print(f"compiled {mode} alpha {rec['alpha']} {rec['dtype']} batch {rec['batch']} "
                      f"{rec['kernels']}: " + (rec.get("error") or f"{rec['compile_s']:.1f} s"),
                      flush=True)
            else:
                print(table([rec]).splitlines()[-1], flush=True)
            if args.json:  # as it goes: a run cut short keeps its rows
                write_json(result, args.json)
    if not args.compile_only:
        print()
        print(table(result["results"]))
    return result


def build_parser() -> argparse.ArgumentParser:
    parser = cli.parser("mobilenet_jax.benchmark", __doc__)
    parser.add_argument("--alphas", default="0.1,0.25,1.0", help="width multipliers (comma list)")
    cli.add_config_flags(parser, names=MODEL_FLAGS)
    parser.add_argument("--batch-size", default="128",
                        help="train (and loop) batch sizes, comma list (default 128)")
    parser.add_argument("--dtype", default="float32",
                        help="computation dtypes, comma list of float32,bfloat16 (default "
                             "float32)")
    parser.add_argument("--infer-batch-size", type=int, default=1024,
                        help="inference batch (default 1024)")
    parser.add_argument("--kernels", default="auto",
                        help=f"kernel policies, comma list of {KERNEL_CHOICES} (default auto)")
    parser.add_argument("--mode", default="both",
                        choices=("train", "infer", "both", "loop", "data"),
                        help="train step, inference, both, loop: the training loop's time "
                             "per step against the bare step's, input on and off "
                             "(benchmarks/loop_overhead.py), or data: the streaming input path "
                             "alone, on --image-folder's training split")
    parser.add_argument("--image-folder", help="data mode: an image folder (PATH/train/<class>/*)")
    parser.add_argument("--data-workers", default="0,1,2",
                        help="data mode: worker counts, comma list (0: threads; default 0,1,2)")
    parser.add_argument("--images", type=int, default=2000,
                        help="data mode: images timed per row (default 2000)")
    parser.add_argument("--steps", type=int, default=MIN_STEPS,
                        help=f"minimum timed steps (default {MIN_STEPS}; also >= --min-time)")
    parser.add_argument("--min-time", type=float, default=MIN_TIME_S,
                        help=f"minimum timed seconds per row (default {MIN_TIME_S}); loop mode: "
                             "7 rounds of a quarter of it per variant")
    parser.add_argument("--pipeline", action=argparse.BooleanOptionalAction, default=True,
                        help="also time the input pipeline: on-device augmentation and the "
                             "host-side batch creation (first kernel policy of each alpha; "
                             "default on)")
    parser.add_argument("--compile-only", action="store_true",
                        help="compile every row's steps into --compile-cache and time nothing "
                             "(several such processes can fill the cache in parallel for a "
                             "later timing run)")
    parser.add_argument("--smoke", action="store_true",
                        help="CI check: alpha 0.05, batch 8, 2 timed steps, no time minimum")
    parser.add_argument("--json", default=None,
                        help="write all results to this JSON file (rewritten after each row)")
    cli.add_compile_cache_flag(parser, default="off")  # off: the compile column is XLA's time
    return parser


def plan_rows(args) -> tuple[dict, list]:
    """(settings, rows): every row to measure, in order, each with its Config; a bad flag
    ends the command here, before anything is timed."""
    policies = parse_list(args.kernels, str, "kernels")
    for policy in policies:
        if policy not in KERNEL_CHOICES:
            cli.fail(f"unknown kernel policy {policy!r}; choose from {KERNEL_CHOICES}")
    dtypes = parse_list(args.dtype, str, "dtype")
    if args.smoke:
        alphas, batches, infer_batch, timing = [0.05], [8], 16, SMOKE
    else:
        alphas, batches = parse_list(args.alphas, float, "alphas"), \
            parse_list(args.batch_size, int, "batch-size")
        infer_batch = args.infer_batch_size
        timing = dict(warmup=WARMUP, min_steps=args.steps, min_time_s=args.min_time,
                      max_time_s=max(MAX_TIME_S, args.min_time))
    if infer_batch < 1 or min(batches) < 1:
        cli.fail("batch sizes must be >= 1")
    if args.compile_only and args.compile_cache == "off":
        cli.fail("--compile-only fills the compilation cache: pass --compile-cache DIR")
    try:
        process.use_compile_cache(args.compile_cache)
        model = {name: getattr(args, name) for name in MODEL_FLAGS}
        configs = {(a, d, b): Config(**model, width_multiplier=a, dtype=d, batch_size=b)
                   for a in alphas for d in dtypes for b in batches}
    except ValueError as e:
        cli.fail(str(e))
    modes = ("train", "infer") if args.mode == "both" else (args.mode,)
    rows = []
    for alpha in alphas:
        macs = forward_mult_adds(configs[alpha, dtypes[0], batches[0]])
        for mode, dtype in itertools.product(modes, dtypes):
            for batch in (batches if mode != "infer" else batches[:1]):
                for k, policy in enumerate(policies):
                    rows.append({"config": configs[alpha, dtype, batch].replace(kernels=policy),
                                 "first_policy": k == 0, "mode": mode, "alpha": alpha,
                                 "kernels": policy,
                                 "batch": infer_batch if mode == "infer" else batch,
                                 "resolution": args.resolution, "stem_stride": args.stem_stride,
                                 "dtype": dtype, "forward_mult_adds_per_image": macs,
                                 "flops_per_image": (2 if mode == "infer" else 6) * macs})
    settings = {"alphas": alphas, "batch_sizes": batches, "dtypes": dtypes,
                "infer_batch_size": infer_batch, "resolution": args.resolution,
                "stem_stride": args.stem_stride, "kernels": policies, "mode": args.mode,
                "smoke": args.smoke, "timing": timing, "compile_only": args.compile_only}
    return settings, rows


def machine_line(info: dict) -> str:
    return (f"# {info['cpu']} | {info['cpu_count']} cores | backend {info['backend']} "
            f"({info['device_kind']}) | jax {info['versions']['jax']} flax "
            f"{info['versions']['flax']} optax {info['versions']['optax']} python "
            f"{info['versions']['python']} | {info['allocator']}"
            + (f", keep freed memory {'on' if info['keep_freed_memory'] else 'off'}"
               f"{', single arena' if info['single_arena'] else ''}"
               if info["allocator"] == "glibc" else ""))


def data_mode(args, command: str) -> dict:
    if not args.image_folder:
        cli.fail("--mode data times an image folder: pass --image-folder PATH")
    workers = parse_list(args.data_workers, int, "data-workers")
    batch = parse_list(args.batch_size, int, "batch-size")[0]
    if min(workers) < 0 or batch < 1 or args.images < 1:
        cli.fail("--data-workers must be >= 0, --batch-size and --images >= 1")
    try:
        rows = bench_data(args.image_folder, args.resolution, batch, workers, args.images)
    except (ValueError, DataError) as e:
        cli.fail(str(e))
    result = {"machine": machine_info(), "results": rows, "settings": {"command": command}}
    print(format_data_table(rows))
    if args.json:
        write_json(result, args.json)
    return result


def run_row(config, mode, batch, timing, pipeline, compile_only, cache_hits) -> dict:
    """One row's measurements, or {"error": ...}: a failing row does not stop the others."""
    try:
        if mode == "loop":
            if compile_only:  # the loop runs the train step
                return bench_train(config, timing, False, cache_hits, compile_only=True)
            return bench_loop(config, **(LOOP_SMOKE if timing is SMOKE
                                         else {"round_s": timing["min_time_s"] / 4}))
        if mode == "train":
            return bench_train(config, timing, pipeline, cache_hits, compile_only)
        return bench_infer(config, batch, timing, cache_hits, compile_only)
    except Exception as e:  # noqa: BLE001 - report and go on with the others
        return {"error": repr(e)[:300]}


def write_json(result: dict, path: str) -> None:
    with open(path, "w") as f:
        json.dump(result, f, indent=2)
        f.write("\n")


if __name__ == "__main__":
    process.exec_with_tcmalloc()
    main()
