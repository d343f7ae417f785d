"""Keep freed host memory inside the process, so XLA:CPU's per-step buffers stay mapped.

XLA:CPU allocates a step's temporary buffer (tens to hundreds of MB) afresh for every call
and frees it after. glibc serves blocks that large with mmap and returns them with munmap,
so every step page-faults the whole buffer in again: at alpha=0.25, batch 128, 12,500 faults
and ~35 ms of kernel time per ~50 ms step (experiments/cpu_benchmark.md). Telling glibc
never to mmap (the heap serves everything) and never to trim the heap makes the freed buffer
reusable by the next step. The cost: the process keeps its peak memory until it exits, which
is what a training or benchmark process does anyway. Called by the command-line entry points,
not on import: it changes the allocator of the whole process.
"""
import ctypes
import sys

M_TRIM_THRESHOLD, M_MMAP_MAX, M_ARENA_MAX = -1, -4, -8  # glibc's mallopt numbers (malloc.h)
# XLA's worker threads allocate from glibc's per-thread arenas, whose heaps hold at most
# 64 MiB (HEAP_MAX_SIZE on 64-bit): a larger block is mmapped whatever M_MMAP_MAX says.
THREAD_HEAP_BYTES = 64 << 20


def needs_single_arena(step_bytes: int) -> bool:
    """Whether a step's buffer of `step_bytes` is past a thread arena's heap."""
    return step_bytes > THREAD_HEAP_BYTES


def keep_freed_memory(step_bytes: int = 0) -> bool:
    """Make glibc malloc keep freed memory (no mmap, no trimming). True if it was applied;
    False where there is no glibc `mallopt` (macOS, musl reports failure).

    `step_bytes`: the expected size of a step's temporary buffer. Past a thread arena's heap,
    every thread allocates from the main arena instead, whose heap grows without that limit:
    at alpha=0.5 and 1.0 that made the train step 1.25-1.37x faster, but the shared lock
    costs 10-30 ms of CPU per step, which made alpha=0.1 1.4-1.7x slower
    (experiments/cpu_benchmark.md). Call it before JAX starts its backend: a thread keeps the
    arena it first allocated from.
    """
    if not sys.platform.startswith("linux"):
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
