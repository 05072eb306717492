"""CPU threads for small tensors. PyTorch's intra-op threads cost a barrier per operation: for a
tensor of a few thousand elements that costs more than the work (a row reduction of a 64x64
weight took 155 us on two threads against 6 us on one, on a loaded 2-core machine), and a
checkpoint of tens of thousands of small tensors spends its time there. Such tensors run on one."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

SMALL_ELEMENTS = 1 << 18  # below this, one thread beats several on every CPU measured


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
