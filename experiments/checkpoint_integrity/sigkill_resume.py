"""Does a run killed at random moments (SIGKILL: no chance to clean up) and rerun with the same
command end bit-identical to a run that was never interrupted?

    python experiments/checkpoint_integrity/sigkill_resume.py --kills 15 --seed 0

Trains α=0.1 on the 6-class CIFAR-100 subset (600 images: 540 train in 16 steps of 32 per
epoch, 60 validation), 20 epochs with a checkpoint every epoch, once straight through and
once killed `--kills` times and rerun with the same command after each kill. Each kill comes
at a random moment: one time in five during start-up (uniformly between 2 s and the time the
straight run took to its first epoch), else within 1.5 epochs after the rerun's first epoch
ended (its checkpoint save, the next epoch's steps and evaluation alike). After every kill it checks that each checkpoint left behind
either verifies or is set aside by the next start. At the end it compares params, BatchNorm
statistics and optimizer state of the two final checkpoints, bit for bit.
"""
import argparse
import os
import pathlib
import queue
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time

import jax
import numpy as np

from mobilenet_jax.core import checkpoint
from mobilenet_jax.core.restore import restore


EPOCHS = 20


def command(workdir, data_dir):
    return [sys.executable, "-m", "mobilenet_jax.train", "--alpha", "0.1", "--batch-size", "32",
            "--split", "train[:20%]", "--epochs", str(EPOCHS), "--data-dir", data_dir, "--offline",
            "--no-progress", "--keep", "2", "--workdir", str(workdir)]


def pump(stream, lines: queue.Queue):
    """Every line of a process's output into `lines`, then None."""
    for line in stream:
        lines.put(line)
    lines.put(None)


def unusable_because(step_dir):
    try:
        checkpoint.verify(step_dir)
    except checkpoint.CheckpointError as e:
        return e.args[0]
    return None


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kills", type=int, default=15)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", default=os.path.abspath("../shared/data/cifar100-6class-tfds"))
    args = parser.parse_args()
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        straight, killed = pathlib.Path(tmp) / "straight", pathlib.Path(tmp) / "killed"
        start, first_epoch = time.perf_counter(), None
        proc = subprocess.Popen(command(straight, args.data_dir), stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        for line in proc.stdout:
            if first_epoch is None and line.startswith("epoch"):
                first_epoch = time.perf_counter() - start
        assert proc.wait() == 0 and first_epoch is not None
        duration = time.perf_counter() - start
        epoch = (duration - first_epoch) / (EPOCHS - 1)
        print(f"straight run: {duration:.0f} s, first epoch done after {first_epoch:.0f} s, "
              f"then {epoch:.1f} s per epoch", flush=True)
        kills = 0
        while True:
            proc = subprocess.Popen(command(killed, args.data_dir), stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True)
            lines = queue.Queue()
            threading.Thread(target=pump, args=(proc.stdout, lines), daemon=True).start()
            if kills < args.kills:
                if rng.random() < 0.2:  # during start-up
                    delay = rng.uniform(2.0, first_epoch)
                    moment = f"{delay:.1f} s after the start"
                else:  # somewhere in the save after an epoch, or in the next epoch
                    while (line := lines.get()) is not None and not line.startswith("epoch"):
                        pass
                    delay = rng.uniform(0.0, 1.5 * epoch)
                    moment = f"{delay:.1f} s after an epoch ended"
                time.sleep(delay)
                if proc.poll() is None:
                    proc.send_signal(signal.SIGKILL)
                    proc.wait()
                    kills += 1
                    unusable = [problem for d in checkpoint.step_dirs(killed / "checkpoints")
                                if (problem := unusable_because(d))]
                    left = sorted(p.name for p in (killed / "checkpoints").glob("*")) \
                        if (killed / "checkpoints").exists() else []
                    print(f"kill {kills}, {moment}: {left}"
                          + (f"; to be set aside: {unusable}" if unusable else ""), flush=True)
                    continue
            assert proc.wait() == 0
            break  # the run finished (perhaps before all kills were spent)
        a = restore(straight / "checkpoints" / "latest").state
        b = restore(killed / "checkpoints" / "latest").state
        identical = int(a.step) == int(b.step) and all(
            np.array_equal(np.asarray(x), np.asarray(y))
            for x, y in zip(jax.tree.leaves((a.params, a.batch_stats, a.opt_state)),
                            jax.tree.leaves((b.params, b.batch_stats, b.opt_state))))
        print(f"{kills} kills; final step {int(b.step)} vs {int(a.step)}: "
              f"{'bit-identical' if identical else 'DIFFERENT'}")
        sys.exit(0 if identical else 1)


if __name__ == "__main__":
    main()
