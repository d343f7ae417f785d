"""hostmem.keep_freed_memory: a freed large block is reused without page faults."""
import ctypes
import subprocess
import sys

import pytest

# Allocate 64 MiB, touch every page, free it, allocate again and touch again; print the minor
# page faults of the second round. 64 MiB is past glibc's largest mmap threshold (32 MiB), so
# by default the block is unmapped on free and faulted in afresh, as XLA:CPU's step buffer was.
PROBE = """
import ctypes, resource, sys
from mobilenet_jax import hostmem
applied = hostmem.keep_freed_memory() if sys.argv[1] == "1" else False
libc = ctypes.CDLL(None)
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, (ctypes.c_size_t,)
libc.free.argtypes = (ctypes.c_void_p,)
size = 64 << 20
libc.free(ctypes.memset(libc.malloc(size), 1, size))
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
ptr = libc.malloc(size)
ctypes.memset(ptr, 2, size)
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _second_round_faults(apply: bool):
    out = subprocess.run([sys.executable, "-c", PROBE, "1" if apply else "0"], check=True,
                         capture_output=True, text=True).stdout.split()
    return out[0] == "True", int(out[1])


GLIBC = sys.platform.startswith("linux") and hasattr(ctypes.CDLL(None), "gnu_get_libc_version")


@pytest.mark.skipif(not GLIBC, reason="keep_freed_memory acts on glibc malloc only")
def test_freed_block_is_reused_without_page_faults():
    pages = (64 << 20) // 4096
    applied, faults = _second_round_faults(True)
    assert applied
    assert faults < pages // 20, faults
    # The default allocator does fault it in again: the call is what makes the difference.
    _, default_faults = _second_round_faults(False)
    assert default_faults > pages // 2, default_faults
