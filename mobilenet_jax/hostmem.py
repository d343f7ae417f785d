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

M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # glibc's mallopt parameter numbers (malloc.h)


def keep_freed_memory() -> bool:
    """Make glibc malloc keep freed memory (no mmap, no trimming). True if it was applied;
    False where there is no glibc `mallopt` (macOS, musl reports failure)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, 2**31 - 1))
