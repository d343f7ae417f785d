"""End to end through the command lines, on the real 6-class CIFAR-100 subset."""
import json
import os
import signal
import subprocess
import sys
import time

import jax
import pytest

from mobilenet_jax.core import checkpoint as ckpt_lib
from mobilenet_jax.core.restore import restore
from helpers import MIN_TEST_TOP1, assert_one_line_error, run, run_in_one_process


def test_train_then_evaluate_latest_beats_chance(trained_run):
    cwd, train_result = trained_run
    assert "epoch   5/5" in train_result.stdout
    for name in ("config.json", "metrics.jsonl", "checkpoints/latest"):
        assert (cwd / name).exists(), name
    assert any(p.name.startswith("events.out.tfevents") for p in (cwd / "tensorboard").iterdir())
    epochs = [json.loads(line) for line in (cwd / "metrics.jsonl").read_text().splitlines()]
    assert [e["epoch"] for e in epochs] == list(range(1, 6))
    # where each epoch's time went, beside what the clock of the whole run says
    assert all(e["train_s"] > 0 and ("val_loss" not in e or e["val_s"] > 0) for e in epochs)
    result = run(["mobilenet_jax.evaluate", "--ckpt", "checkpoints/latest", "--per-class",
                  "--json", "eval.json"], cwd)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((cwd / "eval.json").read_text())
    assert report["examples"] == 600 and report["split"] == "test"
    assert report["top1"] > MIN_TEST_TOP1, report
    assert report["top5"] >= report["top1"]
    assert set(report["per_class"]) == {"bee", "couch", "girl", "lawn_mower", "whale", "wolf"}
    assert "lawn_mower" in result.stdout and f"{report['top1']:.4f}" in result.stdout


def test_commands_start_quietly(trained_run):
    """No TensorFlow start-up banner (absl, CPU-feature or oneDNN lines) on stderr, also when
    the user has set none of TensorFlow's variables (a real process: the banner is printed
    when TensorFlow is first imported)."""
    cwd, _ = trained_run
    env = {k: v for k, v in os.environ.items() if not k.startswith("TF_")}
    result = run(["mobilenet_jax.evaluate", "--ckpt", "."], cwd, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    for banner in ("absl::InitializeLog", "cpu_feature_guard", "oneDNN"):
        assert banner not in result.stderr, result.stderr


def test_evaluate_refuses_mismatched_architecture(trained_run):
    cwd, _ = trained_run
    result = run(["mobilenet_jax.evaluate", "--ckpt", ".", "--alpha", "0.5"], cwd)
    assert_one_line_error(result, "width_multiplier=0.25", "0.5")


def test_evaluate_missing_and_corrupt_checkpoints(trained_run, tmp_path):
    cwd, _ = trained_run
    assert_one_line_error(run(["mobilenet_jax.evaluate", "--ckpt", "nowhere/latest"], tmp_path),
                          "no checkpoint at nowhere/latest")
    (tmp_path / "empty").mkdir()
    assert_one_line_error(run(["mobilenet_jax.evaluate", "--ckpt", "empty"], tmp_path),
                          "no checkpoint in")
    import shutil
    broken = tmp_path / "broken"
    shutil.copytree((cwd / "checkpoints" / "latest").resolve(), broken)
    for f in (broken / "state").rglob("*"):
        if f.is_file():
            f.write_bytes(b"\0garbage")
    assert_one_line_error(run(["mobilenet_jax.evaluate", "--ckpt", str(broken)], tmp_path),
                          "is corrupt: state/")
    ckpt_lib.write_manifest(broken)  # a manifest of the garbage: orbax finds it out
    assert_one_line_error(run(["mobilenet_jax.evaluate", "--ckpt", str(broken)], tmp_path),
                          "cannot be restored")
    # Such a checkpoint's array data cut in half fails orbax's reads half-way; their
    # coroutines are collected at exit, and must not print after the error line (a process).
    cut = tmp_path / "cut"
    shutil.copytree(broken, cut)
    shutil.rmtree(cut / "state")
    shutil.copytree((cwd / "checkpoints" / "latest").resolve() / "state", cut / "state")
    data = max((cut / "state" / "ocdbt.process_0" / "d").iterdir(),
               key=lambda p: p.stat().st_size)
    data.write_bytes(data.read_bytes()[:data.stat().st_size // 2])
    ckpt_lib.write_manifest(cut)
    assert_one_line_error(run(["mobilenet_jax.evaluate", "--ckpt", str(cut)], tmp_path,
                              process=True),
                          "cannot be restored")
    # A stored config that no longer fits the arrays: refused before orbax reads any of them
    # (a restore refused half-way used to print tracebacks as the process exited).
    altered = tmp_path / "altered"
    shutil.copytree((cwd / "checkpoints" / "latest").resolve(), altered)
    config_file = altered / "config" / "metadata"
    config_file.write_text(config_file.read_text().replace('"width_multiplier": 0.25',
                                                           '"width_multiplier": 0.5'))
    assert_one_line_error(run(["mobilenet_jax.evaluate", "--ckpt", str(altered)], tmp_path),
                          "is corrupt: config/metadata")
    ckpt_lib.write_manifest(altered)  # consistent files, wrong architecture
    assert_one_line_error(run(["mobilenet_jax.evaluate", "--ckpt", str(altered)], tmp_path),
                          "other names or shapes")


def test_sigterm_saves_a_loadable_checkpoint(subset_array_record_dir, tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-m", "mobilenet_jax.train", "--alpha", "0.1", "--epochs", "50",
         "--batch-size", "32", "--precise-bn-batches", "2", "--data-dir", subset_array_record_dir,
         "--offline", "--no-progress", "--workdir", str(tmp_path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 300
        while not (tmp_path / "metrics.jsonl").exists():  # first epoch done: training is on
            assert proc.poll() is None and time.time() < deadline, proc.stderr.read()
            time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 0, err[-2000:]
    assert "stopped at step" in out and "SIGTERM" in out
    result = run(["mobilenet_jax.evaluate", "--ckpt", str(tmp_path)], tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "600 examples" in result.stdout


def test_offline_missing_dataset_is_one_line(tmp_path):
    result = run(["mobilenet_jax.train", "--data-dir", str(tmp_path / "nodata"), "--offline",
                  "--workdir", str(tmp_path / "run")], tmp_path)
    assert_one_line_error(result, "not found in", "--offline")


@pytest.mark.parametrize("flags,fragment", [
    (["--alpha", "0"], "alpha"), (["--alpha", "nan"], "nan"), (["--epochs", "0"], "epochs"),
    (["--block", "resnet"], "resnet"), (["--batch-size", "ten"], "ten"),
    (["--val-fraction", "1.5"], "val_fraction")])
def test_invalid_flags_are_one_line_exit_2(tmp_path, flags, fragment):
    assert_one_line_error(run(["mobilenet_jax.train", *flags], tmp_path), fragment)


def test_help_lists_the_config_flags(tmp_path):
    result = run(["mobilenet_jax.train", "--help"], tmp_path)
    assert result.returncode == 0
    for flag in ("--alpha", "--block", "--stem-stride", "--optimizer", "--schedule",
                 "--label-smoothing", "--workdir", "--max-steps", "--no-augment"):
        assert flag in result.stdout


def test_unwritable_workdir_is_one_line(tmp_path):
    result = run(["mobilenet_jax.train", "--workdir", "/proc/mobilenet-run", "--offline"], tmp_path)
    assert_one_line_error(result, "/proc/mobilenet-run", "--workdir")


@pytest.fixture
def small_filesystem(tmp_path):
    """A real tmpfs of a given size (needs root and mount rights; skipped where missing)."""
    mounted = []

    def make(size, options=""):
        where = tmp_path / f"fs{len(mounted)}"
        where.mkdir()
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}{options}", "tmpfs",
                                 str(where)], capture_output=True, text=True)
        if result.returncode != 0:
            pytest.skip(f"cannot mount a small tmpfs here ({result.stderr.strip()[:100]}): "
                        "the disk-full tests need root and mount rights")
        mounted.append(where)
        return where
    yield make
    for where in mounted:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


def _disk_full_args(workdir, data_dir, *flags):
    # helpers.tiny_config's run: the compilation cache may hold its steps already
    return ["mobilenet_jax.train", "--alpha", "0.1", "--batch-size", "32", "--split",
            "train[:10%]", "--epochs", "2", "--keep", "2", "--precise-bn-batches", "2",
            "--data-dir", data_dir, "--offline", "--no-progress", "--workdir", str(workdir),
            *flags]


def _assert_checkpoints_left(checkpoints, count):
    left = ckpt_lib.step_dirs(checkpoints)
    assert len(left) == count, [p.name for p in checkpoints.iterdir()]
    assert not list(checkpoints.glob("*orbax-checkpoint-tmp*"))
    if count:
        assert ckpt_lib.verify(left[0]) and (checkpoints / "latest").resolve() == left[0]


def test_a_full_disk_is_one_line_and_keeps_the_last_checkpoint(subset_array_record_dir,
                                                               small_filesystem):
    """Runs whose save fails for want of room, in one process that must print nothing more
    up to its exit, each ending in exit 2 and one line. On a filesystem with less room than
    the state's arrays, the save is refused before anything is written: nothing is left. On
    one that fills up part-way through the second save (room for the arrays, not for the
    whole checkpoint), the first checkpoint stays intact and `latest`; writes orbax still had
    in flight may land after the failed save was removed, and the next start removes them.
    The first checkpoint is written with room to spare (a save's transient peak varies), then
    the filesystem is shrunk and the run resumed."""
    at_first = small_filesystem("200k") / "run"
    fs = small_filesystem("20m")
    at_second = fs / "run"
    first = run(_disk_full_args(at_second, subset_array_record_dir, "--max-steps", "8"), fs)
    assert first.returncode == 0, first.stderr[-2000:]
    arrays_kib = sum(a.nbytes for a in jax.tree.leaves(ckpt_lib.stored_arrays(
        restore(at_second / "checkpoints" / "8").state))) // 1024
    stat = os.statvfs(fs)
    used_kib = (stat.f_blocks - stat.f_bfree) * stat.f_frsize // 1024  # ~ one checkpoint
    assert used_kib > arrays_kib + 40  # what a checkpoint holds besides its arrays
    remount = subprocess.run(["mount", "-o", f"remount,size={used_kib + arrays_kib + 20}k",
                              str(fs)], capture_output=True, text=True)
    assert remount.returncode == 0, remount.stderr
    results = run_in_one_process([_disk_full_args(workdir, subset_array_record_dir)
                                  for workdir in (at_first, at_second)], fs, os.environ,
                                 quiet=True)
    for result in results:
        assert_one_line_error(result, "disk is full")
    _assert_checkpoints_left(at_first / "checkpoints", 0)
    ckpt_lib.Checkpoints(at_second / "checkpoints").close()  # what the next start does first
    _assert_checkpoints_left(at_second / "checkpoints", 1)


def test_read_only_workdir_is_one_line(subset_dir, small_filesystem):
    read_only = small_filesystem("1m", ",ro")
    result = run(["mobilenet_jax.train", "--alpha", "0.1", "--data-dir", subset_dir, "--offline",
                  "--workdir", str(read_only / "run")], read_only.parent)
    assert_one_line_error(result, "read-only or not writable", str(read_only / "run"))


def test_evaluate_json_to_an_unwritable_path_is_one_line(trained_run, tmp_path):
    cwd, _ = trained_run
    (tmp_path / "file").write_text("")
    result = run(["mobilenet_jax.evaluate", "--ckpt", str(cwd), "--json",
                  str(tmp_path / "file" / "e.json")], tmp_path)
    assert_one_line_error(result, "--json")
    assert "top-1" in result.stdout  # the results were printed before
