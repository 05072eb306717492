"""Process-wide settings that keep a conversion fast and its memory flat.

Threads: PyTorch's intra-op threads cost a barrier per operation; for a tensor of a few thousand
elements that costs more than the work (a row reduction of a 64x64 weight took 155 us on two
threads against 6 us on one, on a loaded 2-core machine), and a checkpoint of tens of thousands
of small tensors spends its time there. A run whose tensors are all small runs on one thread.

Memory: glibc raises its mmap threshold to the size of the largest block freed so far, so after
the first tensor buffers of a few MB come from the heap, which fragments and keeps growing
(a 192 MB checkpoint of 8 MB tensors peaked 115 MB above the start, not 3-4 tensors). A fixed
threshold keeps such buffers mmapped: each is returned to the system when freed.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
from collections.abc import Iterator

import torch

SMALL_ELEMENTS = 1 << 18  # below this, one thread beats several on every CPU measured
M_MMAP_THRESHOLD = -3  # mallopt parameter (glibc malloc.h)
MMAP_THRESHOLD_BYTES = 1 << 20


@contextlib.contextmanager
def threads_for(elements: int, device: torch.device | str = "cpu") -> Iterator[None]:
    """Run the block on one CPU thread when its largest tensor has fewer than SMALL_ELEMENTS elements
    (set once for the block: switching the thread count is itself costly)."""
    threads = torch.get_num_threads()
    if elements >= SMALL_ELEMENTS or torch.device(device).type != "cpu" or threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@functools.cache
def return_freed_buffers() -> bool:
    """Fix glibc's mmap threshold (once per process); False where the C library has no mallopt."""
    name = ctypes.util.find_library("c")
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError, TypeError):
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))
