"""What the training loop costs beyond the step: its time per step against the bare step's.

The bare step: the compiled train step called back to back on one batch already on the
devices, synchronised once at the end (the most the device can do). The loop:
`loop.train_steps` as `train` runs it (metrics read late, a progress bar, the stop check),
fed either that same batch (input off) or the real input (input on: `arrays.train_batches`
from a host split, placed on the devices), each way with both of `parallel.run_ahead`'s
settings: synchronous (the metrics read one step late, no prefetching; what `train` does on
a CPU) and running ahead (read 8 steps late, 2 batches prefetched; elsewhere). Variants are
interleaved round by round, so drift of the machine hits them alike.
"""
import io
import itertools
import statistics
import time

import jax
from tqdm import tqdm

from mobilenet_jax.benchmarks.throughput import (STEPS_PER_EPOCH, synthetic_batch,
                                                 synthetic_split)
from mobilenet_jax.config import Config
from mobilenet_jax.core import steps
from mobilenet_jax.core.parallel import Devices, run_ahead
from mobilenet_jax.data import arrays
from mobilenet_jax.data.prefetch import prefetch
from mobilenet_jax.training import loop
from mobilenet_jax.training.step_metrics import StepMetrics

SYNC, AHEAD = run_ahead("cpu"), run_ahead("gpu")
VARIANTS = {"bare step": None,
            "sync, input off": (False, SYNC), "sync, input on": (True, SYNC),
            "ahead, input off": (False, AHEAD), "ahead, input on": (True, AHEAD)}


def bench_loop(config: Config, round_s: float = 1.0, rounds: int = 7, min_steps: int = 20) -> dict:
    """Median seconds per step of each of VARIANTS over `rounds` rounds of about `round_s`
    seconds (at least `min_steps` steps) each."""
    devices = Devices(config.recipe.batch_size)
    training = steps.build(config, STEPS_PER_EPOCH)
    train = training.jit_steps(devices).train
    rng = jax.random.key(1)
    fixed = devices.global_batch(synthetic_batch(config.recipe.batch_size,
                                                 config.network.num_classes))
    holder = [training.new_state(jax.random.key(0), devices)]
    steps_per_round = min_steps

    def bare():
        state = holder[0]
        for _ in range(steps_per_round):
            state, metrics = train(state, fixed, rng)
        jax.block_until_ready((state, metrics))
        holder[0] = state

    def looped(input_on: bool, ahead: dict):
        def run():
            bar = tqdm(total=steps_per_round, file=io.StringIO(), leave=False)
            metrics = StepMetrics(config.recipe.batch_size, lambda: None, ahead["lag"])
            metrics.on_read = lambda sums: bar.set_postfix(
                loss=f"{sums['loss'] / sums['count']:.3f}", refresh=False)
            batches = (prefetch(arrays.train_batches(split, config.recipe.batch_size, 0, 0),
                                devices.global_batch, ahead["prefetch"])
                       if input_on else itertools.repeat(fixed, steps_per_round))
            holder[0], _, _ = loop.train_steps(holder[0], batches, train, rng, metrics, 0,
                                               bar.update, lambda step: None)
            metrics.read_all()
            jax.block_until_ready(holder[0])
            bar.close()
        return run

    bare()  # compiles
    t = time.perf_counter()
    bare()
    steps_per_round = max(min_steps, round(round_s * min_steps / (time.perf_counter() - t)))
    split = synthetic_split(config.recipe.batch_size * steps_per_round, config.network.num_classes)
    runs = {name: bare if how is None else looped(*how) for name, how in VARIANTS.items()}
    for run in runs.values():  # warm up
        run()
    times = {name: [] for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            t = time.perf_counter()
            run()
            times[name].append((time.perf_counter() - t) / steps_per_round)
    medians = {name: statistics.median(t) for name, t in times.items()}
    bare_s = medians["bare step"]
    return {"steps_per_round": steps_per_round, "rounds": rounds,
            "train_uses": "sync" if run_ahead(jax.default_backend()) == SYNC else "ahead",
            "variants": {name: {"step_s": s, "overhead_pct": 100 * (s - bare_s) / bare_s,
                                "rounds_s": times[name]} for name, s in medians.items()}}


def format_loop_table(records) -> str:
    head = f"{'alpha':>5} {'kernels':<10} {'batch':>5} {'dtype':<8}  " + "  ".join(
        f"{name:>23}" for name in VARIANTS)
    lines = [head + "  train uses", "-" * len(head)]
    for r in records:
        if "error" in r:
            lines.append(f"{r['alpha']:>5} {r['kernels']:<10} error: {r['error']}")
            continue
        cells = [f"{1000 * v['step_s']:.3f} ms ({v['overhead_pct']:+.1f}%)"
                 for v in r["variants"].values()]
        lines.append(f"{r['alpha']:>5} {r['resolved']:<10} {r['batch']:>5} {r['dtype']:<8}  "
                     + "  ".join(f"{c:>23}" for c in cells) + f"  {r['train_uses']}")
    return "\n".join(lines)
