"""Are two checkpoints the same state? Restores both and compares every array bit for bit,
with its dtype, and the data positions:

    python experiments/checkpoint_time/compare.py STEP_DIR_A STEP_DIR_B
"""
import pathlib
import sys

import jax
import numpy as np

from mobilenet_jax.core import checkpoint
from mobilenet_jax.core.restore import restore

if __name__ == "__main__":
    a, b = (restore(pathlib.Path(p)) for p in sys.argv[1:3])
    la, lb = (jax.tree.leaves(checkpoint.stored_arrays(r.state)) for r in (a, b))
    same = len(la) == len(lb) and all(
        x.dtype == y.dtype and np.array_equal(np.asarray(x), np.asarray(y))
        for x, y in zip(la, lb))
    print(f"{len(la)} arrays bit-identical: {same}; positions equal: "
          f"{a.position == b.position}; step {a.step}")
