"""How long a checkpoint save holds the training thread (the host copy of the state), and how
long until the background write is on disk, at α 0.1 and 1.0 (the initial state, 100 classes).

    python experiments/end_to_end/save_blocking.py
"""
import statistics
import tempfile
import time

import jax

from mobilenet_jax import Config
from mobilenet_jax.core import checkpoint, parallel, steps


def main():
    for alpha in (0.1, 1.0):
        config = Config(width_multiplier=alpha)
        devices = parallel.Devices(config.recipe.batch_size)
        state = steps.build(config).new_state(jax.random.key(0), devices)
        blocking, written = [], []
        with tempfile.TemporaryDirectory() as directory:
            saved = checkpoint.Checkpoints(f"{directory}/checkpoints", keep=2, keep_best=False)
            for step in range(1, 9):
                start = time.perf_counter()
                saved.save(state.replace(step=step), config, {"step": step, "rng": [0, 0]})
                returned = time.perf_counter()
                saved.wait()
                if step > 1:  # the first save also starts orbax's machinery
                    blocking.append(returned - start)
                    written.append(time.perf_counter() - start)
            saved.close()
        print(f"alpha {alpha}: save() returns after {1e3 * statistics.median(blocking):.1f} ms "
              f"(median of {len(blocking)}; max {1e3 * max(blocking):.1f} ms), written after "
              f"{statistics.median(written):.2f} s")


if __name__ == "__main__":
    main()
