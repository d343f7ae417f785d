"""One training path from 1 device to 8 devices to 2 processes: the same step up to the
rounding of summation order, and checkpoints that move between device counts. The processes
read the subset's ArrayRecord copy: the same records, without TensorFlow's start-up."""
import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys

import jax

from mobilenet_jax.core import steps
from mobilenet_jax.core.restore import restore
from tests.conftest import REPO, finished, run, start_in_one_process, xla_flags

COMPARE_STEPS = REPO / "experiments" / "device_count" / "compare_steps.py"
# Its measure of how far two results of a step differ (`relative_difference`) is the tests'.
_spec = importlib.util.spec_from_file_location("compare_steps", COMPARE_STEPS)
compare_steps = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(compare_steps)

EIGHT_DEVICES = xla_flags("--xla_force_host_platform_device_count=8")
# How far two results of the same step may differ, as a fraction of what the step changed
# (global norm per collection; experiments/device_count/ measured, at alpha 0.1 and 0.25):
# summation order alone (8 devices, or the batch reordered on 1 device) 1e-6-1e-5, and up to
# 4e-2 of params and optimizer state where it flips ReLU6 kinks behind BatchNorms of near-zero
# variance (block 13 sees a 1x1 map at 32x32 input), never more than 1e-6 of the BatchNorm
# statistics; another augmentation key or the next batch 1.07-1.86 (statistics 0.066-0.086);
# per-device BatchNorm statistics 3.2-8.1 (0.067-0.086).
FRACTION = {"params": 0.1, "opt_state": 0.1, "batch_stats": 1e-3}


def test_eight_devices_step_is_the_one_device_step_up_to_summation_order(subset_array_record_dir,
                                                                          tmp_path):
    """Same state, same (augmented) batch: 8 devices differ from 1 device no more than
    summation order may, while per-device statistics, another augmentation or another batch
    differ far more (so the bound is not blind to a real difference)."""
    out = tmp_path / "compare.json"
    subprocess.run([sys.executable, str(COMPARE_STEPS),
                    "--alphas", "0.1", "--batches", "1", "--reorderings", "4",
                    "--data-dir", subset_array_record_dir, "--json", str(out)],
                   check=True, capture_output=True, timeout=600)
    rows = json.loads(out.read_text())["rows"]
    assert [row["step"] for row in rows] == ["first", "second"]
    for row in rows:
        for collection, fraction in FRACTION.items():
            r = {kind: max(v["relative"]) for kind, v in row[collection].items()}
            where = (row["step"], collection, r)
            assert r["reordered"] <= fraction, ("summation order alone exceeds the bound", where)
            assert r["eight_devices"] <= fraction, where
            # What the bound must not hide: a real device-count dependence, and a wrong RNG
            # stream or data position (which the checkpoint tests below rely on).
            assert r["per_device_bn"] > 3 * fraction, where
            assert min(r["other_augmentation"], r["next_batch"]) > 3 * fraction, where


def flags(data_dir, workdir, max_steps):
    return ["--alpha", "0.1", "--batch-size", "32", "--split", "train[:10%]", "--epochs", "3",
            "--lr", "0.01", "--warmup-epochs", "0", "--schedule", "constant",
            "--data-dir", data_dir, "--offline", "--no-progress", "--workdir", str(workdir),
            "--max-steps", str(max_steps), "--precise-bn-batches", "2"]


def train_all(data_dir, *runs):
    """Train each (workdir, max_steps, env, *more flags) run: those with env None here (one
    device), while the others run, one after the other for each env, in a process of that
    env's own (os.environ with `env` added)."""
    by_env = {}
    for workdir, max_steps, env, *more in runs:
        if env is not None:
            by_env.setdefault(tuple(sorted(env.items())), []).append(
                ["mobilenet_jax.train", *flags(data_dir, workdir, max_steps), *more])
    started = [start_in_one_process(commands, REPO, {**os.environ, **dict(env)})
               for env, commands in by_env.items()]
    try:
        for workdir, max_steps, env, *more in runs:
            if env is None:
                result = run(["mobilenet_jax.train", *flags(data_dir, workdir, max_steps), *more],
                             workdir.parent)
                assert result.returncode == 0, result.stderr[-3000:]
    finally:
        results = [result for process in started for result in finished(process)]
    for result in results:
        assert result.returncode == 0, result.stderr[-3000:]


def assert_same_step(a_dir, b_dir, start_dir=None):
    """The checkpoints in a_dir and b_dir took the same step from the one in start_dir (from
    the initial state when None): same step, data position and RNG, and states that differ by
    no more than summation order makes them."""
    a, b = restore(a_dir), restore(b_dir)
    start = (restore(start_dir).state if start_dir else
             jax.jit(steps.build(a.config).init_state)(jax.random.key(a.config.seed)))
    assert int(a.state.step) == int(b.state.step) == int(start.step) + 1
    assert a.position == b.position
    for name, difference in compare_steps.relative_difference(a.state, b.state, start).items():
        assert difference <= FRACTION[name], (name, difference)


def test_checkpoints_move_between_device_counts(subset_array_record_dir, tmp_path):
    """A checkpoint written on 1 device resumes on 8 and one written on 8 resumes on 1, each
    taking the step that the device count that wrote it takes."""
    one, eight = tmp_path / "one", tmp_path / "eight"
    train_all(subset_array_record_dir, (one, 1, None), (eight, 1, EIGHT_DEVICES))
    assert_same_step(eight / "checkpoints" / "1", one / "checkpoints" / "1")
    moved = {written: written.with_name(written.name + "_moved") for written in (one, eight)}
    for written, copy in moved.items():
        shutil.copytree(written, copy, symlinks=True)
    train_all(subset_array_record_dir, (one, 2, None), (moved[one], 2, EIGHT_DEVICES),
              (eight, 2, EIGHT_DEVICES), (moved[eight], 2, None))
    for written, copy in moved.items():  # step 1 is kept beside step 2 (--keep 3)
        assert_same_step(copy / "checkpoints" / "2", written / "checkpoints" / "2",
                         written / "checkpoints" / "1")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_match_one_and_a_run_resumes_on_another_process_count(
        subset_array_record_dir, tmp_path):
    """Two processes joined by jax.distributed on 127.0.0.1 (gloo CPU collectives), each
    streaming only its share of the global batch, take the first step one process takes
    with the split in memory; and a checkpoint one process wrote resumes on two, which take
    the step the one process takes from it."""
    single, multi = tmp_path / "single", tmp_path / "multi"
    moved = single.with_name("single_moved")
    train_all(subset_array_record_dir, (single, 1, None, "--input", "memory"))
    shutil.copytree(single, moved, symlinks=True)
    port = free_port()
    coordinator = {"JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{port}", "JAX_NUM_PROCESSES": "2"}
    train_all(subset_array_record_dir,
              *[(workdir, max_steps, {**coordinator, "JAX_PROCESS_ID": str(i)}, "--input", "stream")
                for i in range(2) for workdir, max_steps in ((multi, 1), (moved, 2))],
              (single, 2, None, "--input", "memory"))
    assert_same_step(multi / "checkpoints" / "1", single / "checkpoints" / "1")
    assert_same_step(moved / "checkpoints" / "2", single / "checkpoints" / "2",
                     single / "checkpoints" / "1")
