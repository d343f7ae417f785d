"""What the checkpoint manifest costs: the time of a save and of a restore of one checkpoint,
and of writing and verifying its manifest (size and SHA-256 of every file).

    python experiments/checkpoint_integrity/manifest_cost.py --alpha 1.0 --repeats 5

The checkpoint is the whole TrainState of the network at --alpha (params, BatchNorm
statistics, SGD momentum), written and read by `checkpoint.Checkpoints` as `train` does, in a
temporary directory on the disk that holds TMPDIR.
"""
import argparse
import statistics
import tempfile
import time

import jax

from mobilenet_jax import Config
from mobilenet_jax.core import checkpoint, steps
from mobilenet_jax.core.parallel import Devices


def seconds(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--alpha", type=float, default=1.0)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    config = Config(width_multiplier=args.alpha)
    devices = Devices(1)
    training = steps.build(config)
    state = training.new_state(jax.random.key(0), devices)
    abstract = training.abstract_state(devices)
    times = {k: [] for k in ("save", "write manifest", "verify", "restore (verify included)")}
    with tempfile.TemporaryDirectory() as directory:
        manager = checkpoint.Checkpoints(directory, keep=args.repeats + 1, keep_best=False)
        for step in range(1, args.repeats + 1):
            step_dir = manager.directory / str(step)
            save = seconds(lambda: (manager.save(state.replace(step=step), config,
                                                 {"rng": [0, 0]}), manager.wait()))
            times["write manifest"].append(seconds(lambda: checkpoint.write_manifest(step_dir)))
            times["save"].append(save - times["write manifest"][-1])
            times["verify"].append(seconds(lambda: checkpoint.verify(step_dir)))
            times["restore (verify included)"].append(
                seconds(lambda: checkpoint.restore_step(step_dir, abstract)))
        size = sum(p.stat().st_size for p in step_dir.rglob("*") if p.is_file())
        files = sum(1 for p in step_dir.rglob("*") if p.is_file())
        manager.close()
    print(f"alpha {args.alpha}: one checkpoint is {size / 2**20:.1f} MiB in {files} files; "
          f"median of {args.repeats} checkpoints, ms:")
    for name, values in times.items():
        print(f"  {name:<26} {1000 * statistics.median(values):8.1f}  "
              f"(min {1000 * min(values):.1f}, max {1000 * max(values):.1f})")


if __name__ == "__main__":
    main()
