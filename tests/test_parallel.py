"""One training path from 1 device to 8 devices to 2 processes: the same step up to the
rounding of summation order, and checkpoints that move between device and process counts.
The processes read the subset's ArrayRecord copy: the same records, without TensorFlow's
start-up."""
import functools
import json
import os
import shutil
import socket
import subprocess
import sys

import jax
import pytest

from mobilenet_jax.core import steps
from mobilenet_jax.core.compare import relative_difference
from mobilenet_jax.core.restore import restore
from helpers import REPO, finished, run, start_in_one_process, xla_flags

# The step on 8 devices against the 1-device step and its variants, in a process of 8 devices.
COMPARE_STEPS = """
import json, sys
from mobilenet_jax.core.compare import compare_device_counts
from mobilenet_jax.data import arrays, from_tfds
split = from_tfds.load("cifar100", "train[:10%]", sys.argv[1], offline=True)
split, _ = arrays.split_validation(split, 0.1, seed=0)
rows = list(compare_device_counts(split, 0.1, batches=1, reorderings=4))
open(sys.argv[2], "w").write(json.dumps(rows))
"""

EIGHT_DEVICES = xla_flags("--xla_force_host_platform_device_count=8")
# How far two results of the same step may differ, as a fraction of what the step changed
# (global norm per collection; experiments/device_count/ measured, at alpha 0.1 and 0.25):
# summation order alone (8 devices, or the batch reordered on 1 device) 1e-6-1e-5, and up to
# 4e-2 of params and optimizer state where it flips ReLU6 kinks behind BatchNorms of near-zero
# variance (block 13 sees a 1x1 map at 32x32 input), never more than 1e-6 of the BatchNorm
# statistics; another augmentation key or the next batch 1.07-1.86 (statistics 0.066-0.086);
# per-device BatchNorm statistics 3.2-8.1 (0.067-0.086).
FRACTION = {"params": 0.1, "opt_state": 0.1, "batch_stats": 1e-3}


@pytest.mark.numerics
def test_eight_devices_step_is_the_one_device_step_up_to_summation_order(subset_array_record_dir,
                                                                          tmp_path):
    """Same state, same (augmented) batch: 8 devices differ from 1 device no more than
    summation order may, while per-device statistics, another augmentation or another batch
    differ far more (so the bound is not blind to a real difference)."""
    out = tmp_path / "rows.json"
    subprocess.run([sys.executable, "-c", COMPARE_STEPS, subset_array_record_dir, str(out)],
                   env={**os.environ, **EIGHT_DEVICES}, check=True, capture_output=True,
                   timeout=600)
    rows = json.loads(out.read_text())
    assert [row["step"] for row in rows] == ["first", "second"]
    for row in rows:
        for collection, fraction in FRACTION.items():
            r = {kind: max(v["relative"]) for kind, v in row[collection].items()}
            where = (row["step"], collection, r)
            assert r["reordered"] <= fraction, ("summation order alone exceeds the bound", where)
            assert r["all_devices"] <= fraction, where
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


# A checkpoint that several comparisons read is restored once (nothing changes it meanwhile).
restored = functools.cache(restore)


def assert_same_step(a_dir, b_dir, start_dir=None):
    """The checkpoints in a_dir and b_dir took the same step from the one in start_dir (from
    the initial state when None): same step, data position and RNG, and states that differ by
    no more than summation order makes them."""
    a, b = restored(a_dir), restored(b_dir)
    start = (restored(start_dir).state if start_dir else
             jax.jit(steps.build(a.config).init_state)(jax.random.key(a.config.start.seed)))
    assert int(a.state.step) == int(b.state.step) == int(start.step) + 1
    assert a.position == b.position
    for name, difference in relative_difference(a.state, b.state, start).items():
        assert difference <= FRACTION[name], (name, difference)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.numerics
def test_one_device_eight_and_two_processes_take_one_step_and_checkpoints_move_between_them(
        subset_array_record_dir, tmp_path):
    """8 devices, and two processes joined by jax.distributed on 127.0.0.1 (gloo CPU
    collectives) each streaming only its share of the global batch, take the first step one
    device takes with the split in memory; a checkpoint written on 1 device resumes on 8 and
    on two processes, and one written on 8 resumes on 1, each taking the step that the
    device count that wrote it takes."""
    one, eight, two, one_on_eight, one_on_two, eight_on_one = (
        tmp_path / name for name in ("one", "eight", "two", "one_on_eight", "one_on_two",
                                     "eight_on_one"))
    in_memory, streamed = ("--input", "memory"), ("--input", "stream")
    train_all(subset_array_record_dir, (one, 1, None, *in_memory))
    for copy in (one_on_eight, one_on_two):
        shutil.copytree(one, copy, symlinks=True)
    coordinator = {"JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{free_port()}",
                   "JAX_NUM_PROCESSES": "2"}
    two_processes = [{**coordinator, "JAX_PROCESS_ID": str(i)} for i in range(2)]
    # each process's runs one after the other; the 1-device run meanwhile
    train_all(subset_array_record_dir,
              *[(workdir, max_steps, EIGHT_DEVICES)
                for workdir, max_steps in ((eight, 1), (eight, 2), (one_on_eight, 2))],
              *[(workdir, max_steps, env, *streamed) for env in two_processes
                for workdir, max_steps in ((two, 1), (one_on_two, 2))],
              (one, 2, None, *in_memory))
    # eight's run as it was at step 1 (step 1 is kept beside step 2: --keep 3)
    shutil.copytree(eight, eight_on_one, symlinks=True,
                    ignore=lambda directory, names: ["2"] if directory.endswith("checkpoints")
                    else [])
    train_all(subset_array_record_dir, (eight_on_one, 2, None, *in_memory))
    for first in (eight, two):
        assert_same_step(first / "checkpoints" / "1", one / "checkpoints" / "1")
    for copy, written in ((one_on_eight, one), (one_on_two, one), (eight_on_one, eight)):
        assert_same_step(copy / "checkpoints" / "2", written / "checkpoints" / "2",
                         written / "checkpoints" / "1")
