"""Worker threads on their creator's CUDA device.

CUDA's current device is per thread, and a new thread starts on ``cuda:0``. A rank that called
``torch.cuda.set_device(1)`` and whose chain says ``ToDeviced("image", "cuda")`` would have its fill,
replacement and loader threads put items on ``cuda:0``. torch's own pin-memory thread sets its device
for the same reason. Threads fastpipe starts take the current device of the thread that starts them.

Threading contract: :func:`creator_device` in the creating thread, :func:`use_device` in the new one.
"""

from __future__ import annotations

import torch


def creator_device() -> int | None:
    """The calling thread's current CUDA device, or ``None`` when CUDA is not initialized (never initializes it)."""
    if not torch.cuda.is_initialized():
        return None
    return torch.cuda.current_device()


def use_device(index: int | None) -> None:
    """Make ``index`` (from :func:`creator_device`) this thread's current CUDA device; ``None``: nothing."""
    if index is not None:
        torch.cuda.set_device(index)
