"""What does a compilation-cache hit save on XLA:CPU? Traces, lowers and compiles
`Training.init_state` at alpha 0.1 into a fresh cache, then loads it in two more fresh
processes (which still trace and lower it):

    python experiments/suite_time/cache_load.py
"""
import subprocess
import sys
import tempfile

PROBE = """
import sys, time, jax
jax.config.update("jax_compilation_cache_dir", sys.argv[1])
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
from mobilenet_jax import Config
from mobilenet_jax.core import steps
training = steps.build(Config(width_multiplier=0.1, num_classes=6, batch_size=32), 8)
start = time.perf_counter()
lowered = jax.jit(training.init_state).lower(jax.random.key(0))
traced = time.perf_counter()
lowered.compile()
print(f"traced and lowered {traced - start:.2f} s, compiled {time.perf_counter() - traced:.2f} s")
"""

if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as cache:
        for name in ("compiled", "loaded", "loaded"):
            times = subprocess.run([sys.executable, "-c", PROBE, cache], check=True,
                                   capture_output=True, text=True).stdout.strip().splitlines()[-1]
            print(f"init_state, {name}: {times}")
