"""How the process's C allocator treats the large temporaries of training.

Every batch allocates and frees the same large tensors (logits tables, gradients, propagated embeddings). glibc's
defaults serve a block above 128 KB-32 MB by mapping fresh pages and unmap them on free, and give the top of the
heap back to the system, so the kernel faults in and zero-fills those pages again each batch: on this project's
2-core VM that is a third of a training step (SGL, XSimGCL, RLMRec, BC Loss 1.45-1.6x faster with it off,
bench/allocator.py). :func:`keep_freed_memory` keeps them in the process instead, as jemalloc or tcmalloc would,
at the cost of a resident size that stays at its peak. The ``lmrec`` command calls it at start.
"""

from __future__ import annotations

import ctypes
import sys

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)
MMAP_THRESHOLD = 1 << 30  # blocks up to 1 GiB come from the heap and are reused


def keep_freed_memory() -> bool:
    """glibc: serve blocks up to 1 GiB from the heap and never trim it (``mallopt``); True when applied, False on
    another C library or platform (nothing changes there)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library the process already runs on
    except (OSError, AttributeError):  # no mallopt there
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, 2**31 - 1))
