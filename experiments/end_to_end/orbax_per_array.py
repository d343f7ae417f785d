"""Where an orbax save's CPU time goes: the α 0.1 state's 413 arrays (0.6 MiB) saved as they
are, against the same bytes as one array (wall / process CPU seconds, 5 saves each after one
warm-up).

    python experiments/end_to_end/orbax_per_array.py
"""
import resource
import tempfile
import time

import jax
import numpy as np
import orbax.checkpoint as ocp

from mobilenet_jax import Config
from mobilenet_jax.core import checkpoint, parallel, steps


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure(name, tree):
    with tempfile.TemporaryDirectory() as directory:
        saver = ocp.Checkpointer(ocp.StandardCheckpointHandler())
        saver.save(f"{directory}/warm-up", ocp.args.StandardSave(tree))
        rows = []
        for i in range(5):
            cpu, start = cpu_seconds(), time.perf_counter()
            saver.save(f"{directory}/{i}", ocp.args.StandardSave(tree))
            rows.append(f"{time.perf_counter() - start:.2f}/{cpu_seconds() - cpu:.2f}")
    print(f"{name}: {' '.join(rows)}")


def main():
    config = Config(width_multiplier=0.1)
    shapes = steps.build(config).abstract_state(parallel.Devices(config.recipe.batch_size))
    arrays = checkpoint.stored_arrays(jax.tree.map(lambda leaf: np.zeros(leaf.shape, leaf.dtype),
                                                   shapes))
    leaves = jax.tree.leaves(arrays)
    print(f"{len(leaves)} arrays, {sum(a.nbytes for a in leaves)} bytes")
    measure("as they are", arrays)
    measure("as one array", {"bytes": np.concatenate([a.ravel().view(np.uint8) for a in leaves])})


if __name__ == "__main__":
    main()
