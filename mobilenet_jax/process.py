"""Keep freed host memory inside the process, so XLA:CPU's per-step buffers stay mapped.

XLA:CPU allocates a step's temporary buffer (tens to hundreds of MB) afresh for every call
and frees it after. glibc serves blocks that large with mmap and returns them with munmap,
so every step page-faults the whole buffer in again (experiments/host_memory). Telling glibc
never to mmap (the heap serves everything) and never to trim the heap makes the freed buffer
reusable by the next step. The cost: the process keeps its peak memory until it exits, which
is what a training or benchmark process does anyway. Called by the command-line entry points,
not on import: it changes the allocator of the whole process.
"""
import ctypes
import functools
import sys

import jax
import jax.numpy as jnp

from mobilenet_jax.config import Config
from mobilenet_jax.model import MobileNetV1

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
    faster for large steps, but the shared lock makes small ones slower (experiments/
    host_memory). Call it before JAX starts its backend: a thread keeps the arena it first
    allocated from.
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


def estimated_step_bytes(config: Config, batch_size: int, train: bool = True) -> int:
    """About how large XLA:CPU's temporary buffer for one step of `batch_size` will be, from
    the model's layer outputs (`jax.eval_shape`: nothing runs, no backend starts). Training
    keeps every layer output for the backward, inference a few at a time; the factors are
    XLA's measured ratios (experiments/host_memory)."""
    model = MobileNetV1(**config.model_kwargs(backend="cpu"))  # asking JAX would start it
    image = jax.ShapeDtypeStruct((1, config.resolution, config.resolution, 3), jnp.float32)
    variables = jax.eval_shape(functools.partial(model.init, capture_intermediates=True),
                               jax.eval_shape(jax.random.key, 0), image)
    sizes = [leaf.size * leaf.dtype.itemsize
             for leaf in jax.tree.leaves(variables["intermediates"])]
    return int(batch_size * (1.5 * sum(sizes) if train else 2.5 * max(sizes)))
