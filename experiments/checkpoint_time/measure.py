"""How long does an orbax save and restore of a TrainState take, and what in it costs? Median
of 7 in one process, after one of each to warm:

    python experiments/checkpoint_time/measure.py [--alpha 0.1] [--dir DIR]

Saves: device arrays with orbax's default handler; device arrays with an ArrayHandler that
writes no per-array sharding file; host (numpy) copies (what `checkpoint.Checkpoints.save`
does). Restores of each: into device arrays placed by orbax, and into host arrays placed by
one `jax.device_put` (what `checkpoint.restore_step` does). Each restore is checked bit for
bit, with dtype and sharding.
"""
import argparse
import pathlib
import tempfile

import jax
import numpy as np
import orbax.checkpoint as ocp

from mobilenet_jax import Config
from mobilenet_jax.benchmarks.timing import time_steps
from mobilenet_jax.core import checkpoint, steps
from mobilenet_jax.core.parallel import Devices


def median_s(fn):
    """The benchmarks' procedure, here one warm-up and 7 timed calls."""
    return time_steps(fn, lambda _: None, warmup=1, min_steps=7, min_time_s=0)["median_step_s"]


def without_sharding_files() -> ocp.PyTreeCheckpointHandler:
    return ocp.PyTreeCheckpointHandler(
        type_handler_registry=ocp.type_handlers.create_type_handler_registry(
            (jax.Array, ocp.type_handlers.ArrayHandler(enable_write_sharding_file=False))))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--alpha", type=float, default=0.1)
    parser.add_argument("--dir", default=None, help="where to write (default: the temp dir)")
    args = parser.parse_args()
    config = Config(width_multiplier=args.alpha, num_classes=100)
    training, devices = steps.build(config), Devices(config.recipe.batch_size)
    arrays = checkpoint.stored_arrays(training.new_state(jax.random.key(0), devices))
    abstract = checkpoint.stored_arrays(training.abstract_state(devices))
    shardings = jax.tree.map(lambda a: a.sharding, abstract)
    host_target = jax.tree.map(lambda a: np.empty(a.shape, a.dtype), abstract)
    leaves = jax.tree.leaves(arrays)
    print(f"# alpha {args.alpha}: {len(leaves)} arrays, "
          f"{sum(a.nbytes for a in leaves) / 2**20:.1f} MiB; jax {jax.__version__}, "
          f"orbax {ocp.__version__}")
    root = pathlib.Path(tempfile.mkdtemp(dir=args.dir))
    count = iter(range(10**6))
    saves = {"device arrays, orbax's default handler":
             (ocp.StandardCheckpointHandler, ocp.args.StandardSave, lambda: arrays),
             "device arrays, no sharding files":
             (without_sharding_files, ocp.args.PyTreeSave, lambda: arrays),
             "host copies (jax.device_get), orbax's default handler":
             (ocp.StandardCheckpointHandler, ocp.args.StandardSave,
              lambda: jax.device_get(arrays))}
    restores = {"into device arrays (orbax places each)": (abstract, lambda tree: tree),
                "into host arrays, then one jax.device_put": (
                    host_target, lambda tree: jax.device_put(tree, shardings))}
    print("| step | median s |\n|---|---|")
    for name, (handler, save_args, tree) in saves.items():
        def save():
            with ocp.Checkpointer(handler()) as c:
                c.save(root / str(next(count)), args=save_args(tree()))
        print(f"| save: {name} | {median_s(save):.3f} |")
        path = root / str(next(count) - 1)
        for how, (target, place) in restores.items():
            def restore():
                with ocp.Checkpointer(ocp.StandardCheckpointHandler()) as c:
                    return place(c.restore(path, args=ocp.args.StandardRestore(target)))
            print(f"| restore {how} | {median_s(restore):.3f} |")
            for got, want in zip(jax.tree.leaves(restore()), leaves):
                assert got.dtype == want.dtype and got.sharding == want.sharding
                np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
        metadata = lambda: ocp.StandardCheckpointHandler().metadata(path)  # noqa: E731
        print(f"| orbax's metadata of it (names, shapes) | {median_s(metadata):.3f} |")


if __name__ == "__main__":
    main()
