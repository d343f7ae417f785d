"""Host memory (process.keep_freed_memory, models.memory): a freed large block is reused
without page faults, and the step-buffer estimate that decides the allocator tracks XLA's own;
the commands run under tcmalloc where the system has it (process.exec_with_tcmalloc)."""
import ctypes
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from mobilenet_jax import Config, process
from mobilenet_jax.benchmarks.throughput import synthetic_batch
from mobilenet_jax.core import steps
from mobilenet_jax.core.parallel import Devices
from mobilenet_jax.models.memory import estimated_step_bytes
from helpers import REPO, optimized

# Allocate SIZE, touch every page, free it, allocate again and touch again (in a new thread
# when asked, as XLA's workers do); print the minor page faults of the second round. 64 MiB is
# past glibc's largest mmap threshold (32 MiB), so by default the block is unmapped on free
# and faulted in afresh, as XLA:CPU's step buffer was.
PROBE = """
import ctypes, resource, sys, threading
from mobilenet_jax import process
apply, size, in_thread = sys.argv[1] == "1", int(sys.argv[2]), sys.argv[3] == "1"
step_bytes = int(sys.argv[4])
applied = process.keep_freed_memory(step_bytes) if apply else False
libc = ctypes.CDLL(None)
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, (ctypes.c_size_t,)
libc.free.argtypes = (ctypes.c_void_p,)
faults = []
def rounds():
    libc.free(ctypes.memset(libc.malloc(size), 1, size))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    ctypes.memset(libc.malloc(size), 2, size)
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
if in_thread:
    worker = threading.Thread(target=rounds)
    worker.start()
    worker.join()
else:
    rounds()
print(applied, faults[0])
"""


def _second_round_faults(apply: bool, size: int = 64 << 20, in_thread: bool = False,
                         step_bytes: int = 0):
    argv = ["1" if apply else "0", str(size), "1" if in_thread else "0", str(step_bytes)]
    out = subprocess.run([sys.executable, "-c", PROBE, *argv], check=True,
                         capture_output=True, text=True).stdout.split()
    return out[0] == "True", int(out[1])


GLIBC = (sys.platform.startswith("linux") and hasattr(ctypes.CDLL(None), "gnu_get_libc_version")
         and "tcmalloc" not in os.environ.get("LD_PRELOAD", ""))


@pytest.mark.skipif(not GLIBC, reason="keep_freed_memory acts on glibc malloc only")
def test_freed_block_is_reused_without_page_faults():
    pages = (64 << 20) // 4096
    applied, faults = _second_round_faults(True)
    assert applied
    assert faults < pages // 20, faults
    # The default allocator does fault it in again: the call is what makes the difference.
    _, default_faults = _second_round_faults(False)
    assert default_faults > pages // 2, default_faults


@pytest.mark.skipif(not GLIBC, reason="keep_freed_memory acts on glibc malloc only")
def test_block_larger_than_a_thread_heap_is_reused_when_the_step_is_that_large():
    size = 96 << 20  # past a thread arena's 64 MiB heap
    pages = size // 4096
    # In a worker thread's own arena the block is mmapped again despite keep_freed_memory...
    _, faults = _second_round_faults(True, size, in_thread=True)
    assert faults > pages // 2, faults
    # ...unless the expected step is that large: then all threads share the main arena.
    applied, faults = _second_round_faults(True, size, in_thread=True, step_bytes=size)
    assert applied
    assert faults < pages // 20, faults


@pytest.mark.parametrize("train", [True, False])
def test_step_buffer_estimate_tracks_xla(train):
    """The estimate behind the allocator choice is within 1.5x of XLA's own temp buffer."""
    config = Config(width_multiplier=0.25, batch_size=32)
    devices = Devices(config.recipe.batch_size)
    training = steps.build(config)
    state = training.new_state(jax.random.key(0), devices)
    batch = devices.global_batch({**synthetic_batch(32, config.network.num_classes),
                                  "mask": np.ones(32, np.float32)})
    jitted = training.jit_steps(devices)
    lowered = (jitted.train.lower(state, batch, jax.random.key(0)) if train
               else jitted.eval.lower(state, batch))
    with optimized():  # XLA's buffers as commands compile them
        temp = lowered.compile().memory_analysis().temp_size_in_bytes
    estimate = estimated_step_bytes(config, 32, train)
    assert temp / 1.5 < estimate < temp * 1.5, (estimate, temp)


def test_step_buffer_estimate_starts_no_backend():
    """The CLIs set the allocator from the estimate, which must come before JAX's backend."""
    probe = ("from jax._src import xla_bridge\n"
             "from mobilenet_jax import Config\n"
             "from mobilenet_jax.models.memory import estimated_step_bytes\n"
             "assert estimated_step_bytes(Config(width_multiplier=0.1), 128) > 0\n"
             "print(bool(xla_bridge._backends))")
    out = subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True,
                         text=True).stdout
    assert out.strip() == "False"


# Runs a command's main with process.keep_freed_memory replaced by a probe that prints how
# many threads were started since the imports and whether JAX's backend is up (only the
# private registry shows the latter), then stops the command.
COMMAND_PROBE = """
import os, sys
from jax._src import xla_bridge
from mobilenet_jax import benchmark, process, train
threads = len(os.listdir("/proc/self/task"))
def probe(step_bytes=0):
    print(len(os.listdir("/proc/self/task")) - threads, bool(xla_bridge._backends), step_bytes > 0)
    os._exit(0)
process.keep_freed_memory = probe
{"benchmark": benchmark, "train": train}[sys.argv[1]].main(sys.argv[2:])
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="counts threads in /proc")
@pytest.mark.parametrize("command", ["benchmark", "train"])
def test_commands_set_the_allocator_before_any_thread_starts(command, subset_dir, tmp_path):
    """A thread keeps the glibc arena it first allocated from, and XLA's, tfds's and grain's
    threads start with the backend or the data: the allocator must come first."""
    args = {"benchmark": ["--alphas", "1.0", "--stem-stride", "1", "--mode", "train",
                          "--compile-cache", "off"],
            "train": ["--data-dir", str(subset_dir), "--workdir", str(tmp_path / "run"),
                      "--alpha", "0.1", "--compile-cache", "off"]}[command]
    out = subprocess.run([sys.executable, "-c", COMMAND_PROBE, command, *args], check=True,
                         capture_output=True, text=True).stdout
    assert out.split() == ["0", "False", "True"], out


def test_tcmalloc_environment():
    lib = "libtcmalloc_minimal.so.4"
    env = process.tcmalloc_environment({"PATH": "/bin"}, lib)
    assert env["LD_PRELOAD"] == lib and env["PATH"] == "/bin"
    assert int(env["TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD"]) >= 1 << 40
    # A user's preloads and report threshold stay; a library already preloaded is not again.
    env = process.tcmalloc_environment(
        {"LD_PRELOAD": "libfoo.so", "TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD": "5"}, lib)
    assert env["LD_PRELOAD"] == f"{lib} libfoo.so"
    assert env["TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD"] == "5"
    assert process.tcmalloc_environment({"LD_PRELOAD": f"libfoo.so:{lib}"}, lib) is None
    assert process.tcmalloc_environment({"LD_PRELOAD": env["LD_PRELOAD"]}, lib) is None
    # No library on the system, or the user keeps glibc's malloc: the command runs as it is.
    assert process.tcmalloc_environment({}, None) is None
    assert process.tcmalloc_environment({process.ALLOCATOR_VARIABLE: "glibc"}, lib) is None


@pytest.mark.skipif(not sys.platform.startswith("linux") or process.tcmalloc_library() is None,
                    reason="the system has no tcmalloc (Debian, Ubuntu: apt install "
                           "libtcmalloc-minimal4)")
@pytest.mark.parametrize("allocator", ["tcmalloc", "glibc"])
def test_command_runs_under_tcmalloc_unless_told_otherwise(allocator, tmp_path):
    out = tmp_path / "bench.json"
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    env[process.ALLOCATOR_VARIABLE] = allocator
    subprocess.run([sys.executable, "-m", "mobilenet_jax.benchmark", "--smoke", "--mode",
                    "infer", "--alphas", "0.1", "--json", str(out)],
                   cwd=REPO, env=env, check=True, capture_output=True, timeout=600)
    machine = json.loads(out.read_text())["machine"]
    assert machine["allocator"] == allocator
    # glibc's settings are made only where glibc's malloc serves the process.
    assert machine["keep_freed_memory"] == (allocator == "glibc")


@pytest.mark.skipif(not sys.platform.startswith("linux") or process.tcmalloc_library() is None,
                    reason="the system has no tcmalloc (Debian, Ubuntu: apt install "
                           "libtcmalloc-minimal4)")
def test_no_second_start_where_tcmalloc_is_loaded_already():
    """Preloaded under another name (its full path), tcmalloc is not preloaded again: the
    process carries on without starting again."""
    library = process.tcmalloc_library()
    # The file the loader takes for that name, from a child that loads it.
    probe = (f"import ctypes; ctypes.CDLL({library!r}); "
             f"print(next(l.split()[-1] for l in open('/proc/self/maps') if {library!r} in l))")
    path = subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True,
                          text=True).stdout.strip()
    assert path.startswith("/") and path != library
    script = ("import os; from mobilenet_jax import process; print('start', flush=True); "
              "process.exec_with_tcmalloc(); print(os.environ['LD_PRELOAD'])")
    env = {**os.environ, "LD_PRELOAD": path}
    out = subprocess.run([sys.executable, "-c", script], check=True, capture_output=True,
                         text=True, env=env, cwd=REPO).stdout.split()
    assert out == ["start", path], out

