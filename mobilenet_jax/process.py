"""Process-wide settings, made only by the command entry points (never by importing or calling
the library): the allocator, the compilation cache, quiet third-party start-up and failure
logs, stop signals, absl's flags.

Allocator: where the system has tcmalloc, the commands run under it (`exec_with_tcmalloc`).
With glibc's malloc, a process that compiled a step runs it markedly slower than one that only
loaded it from the compilation cache; under tcmalloc both run alike, and faster
(experiments/host_memory). Without tcmalloc: XLA:CPU allocates a step's temporary buffer (tens
to hundreds of MB) afresh for every call and frees it after. glibc serves blocks that large
with mmap and returns them with munmap, so every step page-faults the whole buffer in again.
Telling glibc never to mmap (the heap serves everything) and never to trim the heap makes the
freed buffer reusable by the next step. The cost: the process keeps its peak memory until it
exits, which is what a training or benchmark process does anyway.
"""
import contextlib
import ctypes
import logging
import os
import pathlib
import signal
import sys
import warnings
from typing import Optional

from mobilenet_jax.errors import short_reason


def quiet_tensorflow() -> None:
    """Before TensorFlow is first imported (tfds and the TFLite converter import it): no
    start-up banner. Its oneDNN line is logged whatever TF_CPP_MIN_LOG_LEVEL says, and that
    first log line brings absl's "before InitializeLog" warning; oneDNN only changes how
    TensorFlow computes, which here is reading data and converting models."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")


def quiet_library_logs() -> None:
    """Third-party logs that repeat what a command reports itself, in one line: tfds's
    warnings and orbax's errors with their tracebacks (both log through absl), and after a
    failed orbax save or restore, its other tasks and coroutines that failed too, and its
    reads that finish after it closed their event loop, which asyncio and Python would report
    one traceback each, after the command's error line. Other unraisable errors are still
    reported."""
    from absl import logging as absl_logging
    absl_logging.set_verbosity(absl_logging.FATAL)
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)
    warnings.filterwarnings("ignore", "coroutine '.*' was never awaited", RuntimeWarning)
    previous = sys.unraisablehook
    if getattr(previous, "drops_orbax", False):
        return

    def hook(unraisable):
        code = getattr(unraisable.object, "cr_code", None)
        orbax_coroutine = code is not None and "orbax" in code.co_filename
        closed_loop = (isinstance(unraisable.exc_value, RuntimeError)
                       and str(unraisable.exc_value) == "Event loop is closed")
        if not (orbax_coroutine or closed_loop):
            previous(unraisable)
    hook.drops_orbax = True
    sys.unraisablehook = hook


def absl_flags_parsed() -> None:
    """grain's worker processes read an absl flag, which raises unless the process parsed its
    absl flags (grain 0.2.18, google/grain#1355); the commands parse their own with argparse,
    so absl's keep their defaults."""
    from absl import flags
    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()


def start_command() -> None:
    """What every command's `main` does first (the library imports TensorFlow only when it
    reads a TFDS dataset or converts a model, later)."""
    quiet_tensorflow()
    quiet_library_logs()
    absl_flags_parsed()


def default_compile_cache() -> pathlib.Path:
    """$JAX_COMPILATION_CACHE_DIR if set, else a per-user cache directory."""
    if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        return pathlib.Path(os.environ["JAX_COMPILATION_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return pathlib.Path(base) / "mobilenet_jax" / "jax"


def use_compile_cache(directory: Optional[str]) -> Optional[pathlib.Path]:
    """Keep compiled steps in `directory` (None: `default_compile_cache()`; "off": nowhere), so
    the next process that compiles the same step loads it instead (experiments/compile_cache).
    JAX keys each entry by the program, the jax/jaxlib version, the device and the compile
    options, so another version's or device's entries are never used; an unreadable entry is
    compiled afresh. Returns the directory in use. An unusable `directory` raises ValueError;
    an unusable default turns the cache off, with one line saying so."""
    import jax
    if directory == "off":
        jax.config.update("jax_enable_compilation_cache", False)
        return None
    path = pathlib.Path(directory).expanduser() if directory else default_compile_cache()
    try:
        path.mkdir(parents=True, exist_ok=True)
        if not os.access(path, os.W_OK | os.X_OK):
            raise PermissionError(f"{path} is not writable")
    except OSError as e:
        if directory:
            raise ValueError(f"--compile-cache {directory} cannot hold the compilation cache "
                             f"({short_reason(e)}); pass a writable directory or off") from None
        print(f"note: compilation cache off ({short_reason(e)}); pass --compile-cache DIR to "
              "keep compiled steps elsewhere", file=sys.stderr)
        jax.config.update("jax_enable_compilation_cache", False)
        return None
    jax.config.update("jax_enable_compilation_cache", True)
    jax.config.update("jax_compilation_cache_dir", str(path))
    # A damaged entry is only a cache miss: JAX compiles the step again.
    warnings.filterwarnings("ignore", "Error (reading|writing) persistent compilation cache")
    return path


@contextlib.contextmanager
def output_dropped():
    """Drop what anything (Python or native code, any thread) writes to stdout and stderr
    meanwhile: for the model converters' and interpreters' logs, which no setting turns off."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    devnull = os.open(os.devnull, os.O_WRONLY)
    for fd in saved:
        os.dup2(devnull, fd)
    os.close(devnull)
    try:
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        for fd, copy in saved.items():
            os.dup2(copy, fd)
            os.close(copy)


class StopSignals:
    """SIGINT / SIGTERM set a flag (the training loop then checkpoints and returns) instead of
    killing the process; the previous handlers come back on close."""

    def __init__(self):
        self.received: Optional[str] = None
        self.previous = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}

    def _handle(self, signum, frame):
        self.received = signal.Signals(signum).name

    def __call__(self) -> Optional[str]:
        """The name of the signal received, or None."""
        return self.received

    def close(self):
        for s, handler in self.previous.items():
            signal.signal(s, handler)


ALLOCATOR_VARIABLE = "MOBILENET_JAX_ALLOCATOR"  # "glibc": keep glibc's malloc
TCMALLOC_NAMES = ("tcmalloc_minimal", "tcmalloc")   # gperftools' libraries, as ld.so names them


def tcmalloc_library() -> Optional[str]:
    """The system's tcmalloc as the dynamic loader finds it (e.g. 'libtcmalloc_minimal.so.4',
    Debian's and Ubuntu's libtcmalloc-minimal4), or None."""
    import ctypes.util
    return next(filter(None, map(ctypes.util.find_library, TCMALLOC_NAMES)), None)


def tcmalloc_environment(environ, library: Optional[str]) -> Optional[dict]:
    """The environment to run the command again in, with `library` preloaded; None where it
    runs as it is: no library, $MOBILENET_JAX_ALLOCATOR=glibc, or already preloaded."""
    preloaded = environ.get("LD_PRELOAD", "")
    if (library is None or environ.get(ALLOCATOR_VARIABLE, "tcmalloc") == "glibc"
            or library in preloaded.replace(":", " ").split()):
        return None
    return {**environ, "LD_PRELOAD": f"{library} {preloaded}".strip(),
            # A step's buffer can pass tcmalloc's 1 GiB "large alloc" report: not news here.
            "TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD": environ.get(
                "TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD", str(1 << 40))}


def exec_with_tcmalloc() -> None:
    """Run this command again, in place, with the system's tcmalloc preloaded; a no-op where
    there is none or it is loaded already. Entry points only, first thing: nothing before it
    survives the exec."""
    if not sys.platform.startswith("linux") or uses_tcmalloc():  # however it was loaded
        return
    environ = tcmalloc_environment(os.environ, tcmalloc_library())
    if environ is not None:
        os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], environ)


def uses_tcmalloc() -> bool:
    """Whether tcmalloc serves this process's malloc."""
    try:
        with open("/proc/self/maps") as maps:
            return "tcmalloc" in maps.read()
    except OSError:
        return False


M_TRIM_THRESHOLD, M_MMAP_MAX, M_ARENA_MAX = -1, -4, -8  # glibc's mallopt numbers (malloc.h)
# XLA's worker threads allocate from glibc's per-thread arenas, whose heaps hold at most
# 64 MiB (HEAP_MAX_SIZE on 64-bit): a larger block is mmapped whatever M_MMAP_MAX says.
THREAD_HEAP_BYTES = 64 << 20


def needs_single_arena(step_bytes: int) -> bool:
    """Whether a step's buffer of `step_bytes` is past a thread arena's heap."""
    return step_bytes > THREAD_HEAP_BYTES


def keep_freed_memory(step_bytes: int = 0) -> bool:
    """Make glibc malloc keep freed memory (no mmap, no trimming). True if it was applied;
    False under tcmalloc (which reuses freed memory itself) and where there is no glibc
    `mallopt` (macOS, musl reports failure).

    `step_bytes`: the expected size of a step's temporary buffer. Past a thread arena's heap,
    every thread allocates from the main arena instead, whose heap grows without that limit:
    faster for large steps, but the shared lock makes small ones slower (experiments/
    host_memory). Call it before any thread starts (JAX's backend, reading data): a thread
    keeps the arena it first allocated from. `models.memory.estimated_step_bytes` estimates
    the step's buffer.
    """
    if not sys.platform.startswith("linux") or uses_tcmalloc():
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    applied = bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, 2**31 - 1))
    if applied and needs_single_arena(step_bytes):
        applied = bool(mallopt(M_ARENA_MAX, 1))
    return applied
