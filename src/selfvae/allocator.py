"""Keep freed memory inside the process, so that CPU training does not page-fault its activations in anew each step.

PyTorch's CPU tensors come from ``malloc``. glibc serves every block of 32 MiB or more (and, by its dynamic
threshold, many smaller ones) with a fresh ``mmap`` and gives it back to the kernel on ``free``; the next step's
tensor of the same size then faults in every page again, each one zeroed by the kernel. A paper-size srVAE step
at batch 32 (activations of 130 MB at 32x32) took 1.56 million page faults and 6.6 s of kernel time out of 16 s
this way (``benchmarks/bench.py``, docs/RESULTS.md). :func:`retain_freed_memory` tells glibc to take every block
from its heap and to keep freed memory there for reuse: the process keeps its peak, as a caching allocator does.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4
_KEEP = 2**31 - 1  # the largest trim threshold mallopt takes (an int): never give the heap's top back


def retain_freed_memory() -> bool:
    """Serve all allocations from glibc's heap and never trim it (``mallopt``; for the whole process, and not
    undone: memory freed stays reserved for the process's later tensors). Returns whether it took effect: False
    on other platforms or C libraries (nothing changes there)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others have no mallopt
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, _KEEP))
