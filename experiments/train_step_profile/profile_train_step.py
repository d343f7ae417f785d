"""Where the time of one training step goes, per kind of XLA op, from a jax.profiler trace.

    python experiments/train_step_profile/profile_train_step.py --alpha 1.0 --stem-stride 1 [--steps 5]
    python experiments/train_step_profile/profile_train_step.py --alpha 0.1 --mode infer --batch-size 1024
    python experiments/train_step_profile/profile_train_step.py --alpha 0.1 --per-op   # each op, with its shape

Traces a few steps of the jitted train step that `train` runs (synthetic batch 128; with
`--mode infer`, the eval step), then sums the
trace's per-op durations by op kind: the fusion name without its number plus the set of HLO
ops inside it (from the compiled HLO text), e.g. `ynn_fusion (dot)` for the pointwise matmuls.
Durations of ops that ran concurrently on the two cores overlap, so columns add up to more
than the step time: use it to rank costs, not as a wall-clock split.
"""
import argparse
import collections
import glob
import gzip
import json
import re
import tempfile
import time

import jax
import numpy as np

from mobilenet_jax import Config, process
from mobilenet_jax.core import steps
from mobilenet_jax.models.memory import estimated_step_bytes
from mobilenet_jax.benchmarks.throughput import synthetic_batch
from mobilenet_jax.core.parallel import Devices


def op_kinds(hlo_text):
    """fusion instruction name -> (name without number, sorted HLO ops inside it), and
    fusion instruction name -> its output shape."""
    bodies = {}
    for m in re.finditer(r"\n(%[\w.\-]+) [^\n]*\{\n(.*?)\n\}", hlo_text, re.S):
        ops = set(re.findall(r"= \S+ ([a-z][\w-]*)\(", m.group(2)))
        bodies[m.group(1)] = tuple(sorted(ops - {"parameter", "bitcast", "constant"}))
    kinds, shapes = {}, {}
    for m in re.finditer(r"%([\w.\-]+) = (\S+) fusion\(.*?calls=(%[\w.\-]+)", hlo_text):
        kinds[m.group(1)] = (re.sub(r"\.\d+$", "", m.group(1)), bodies.get(m.group(3), ()))
        shapes[m.group(1)] = re.sub(r"\{[^}]*\}", "", m.group(2))
    return kinds, shapes


def main():
    process.exec_with_tcmalloc()  # the CLIs' allocator, where the system has it
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--alpha", type=float, default=1.0)
    parser.add_argument("--stem-stride", type=int, default=2)
    parser.add_argument("--kernels", default="auto")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--mode", choices=("train", "infer"), default="train")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--per-op", action="store_true",
                        help="rank single ops (with their output shapes), not op kinds")
    args = parser.parse_args()

    config = Config(width_multiplier=args.alpha, stem_stride=args.stem_stride,
                    kernels=args.kernels, batch_size=args.batch_size)
    # The allocator of the CLIs, so the profile does not show page faults they do not pay.
    process.keep_freed_memory(estimated_step_bytes(config, config.recipe.batch_size,
                                                           args.mode == "train"))
    devices = Devices(config.recipe.batch_size)
    local = synthetic_batch(config.recipe.batch_size, config.network.num_classes)
    if args.mode == "infer":
        local["mask"] = np.ones((config.recipe.batch_size,), np.float32)
    batch = devices.global_batch(local)
    training = steps.build(config)
    state = training.new_state(jax.random.key(0), devices)
    if args.mode == "train":
        jitted = training.jit_steps(devices).train
        key = jax.random.key(1)
        kinds, shapes = op_kinds(jitted.lower(state, batch, key).compile().as_text())

        def step(state):
            return jitted(state, batch, key)
    else:
        jitted = training.jit_steps(devices).eval
        kinds, shapes = op_kinds(jitted.lower(state, batch).compile().as_text())

        def step(state):
            return state, jitted(state, batch)

    def run(state, steps):
        for _ in range(steps):
            state, out = step(state)
        jax.block_until_ready(out)
        return state

    state = run(state, 3)
    start = time.perf_counter()
    state = run(state, args.steps)
    step_ms = (time.perf_counter() - start) / args.steps * 1e3

    with tempfile.TemporaryDirectory() as trace_dir:
        with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
            state = run(state, args.steps)
        path = glob.glob(f"{trace_dir}/**/*.trace.json.gz", recursive=True)[0]
        events = json.load(gzip.open(path))["traceEvents"]

    # Thunks that are not fusions (a lone convolution, copies, conditionals) under their own
    # name; runtime bookkeeping events (ThunkExecutor, Python frames) are left out.
    per_kind, calls = collections.Counter(), collections.Counter()
    for e in events:
        if e.get("ph") != "X" or e["name"].startswith(("$", "Thunk", "Pjit", "Common", "end:")):
            continue
        kind = kinds.get(e["name"], (re.sub(r"\.\d+$", "", e["name"]), ()))
        if args.per_op:
            kind = (f'{e["name"]} {shapes.get(e["name"], "")}', kind[1])
        per_kind[kind] += e["dur"] / 1e3 / args.steps
        calls[kind] += 1 / args.steps
    batch = config.recipe.batch_size
    print(f"{args.mode}: alpha {args.alpha}, stem {args.stem_stride}, "
          f"kernels {config.compute.kernels}, batch {batch}: "
          f"{step_ms:.1f} ms per step untraced ({batch / step_ms * 1e3:,.0f} img/s), "
          f"{'tcmalloc' if process.uses_tcmalloc() else 'glibc malloc'}")
    print(f"{'ms/step':>8} {'calls':>6}  op kind (ops inside)")
    for (name, ops), ms in per_kind.most_common(args.top):
        print(f"{ms:8.2f} {calls[(name, ops)]:6.0f}  {name} ({', '.join(ops)})")


if __name__ == "__main__":
    main()
