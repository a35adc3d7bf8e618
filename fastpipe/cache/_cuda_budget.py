"""The GPU cache tier's default byte budget: a fixed share of the device memory free when the cache is made.

Without a budget the CUDA tier would fill until an out-of-memory error and leave nothing for the
training step (and the int64 foreground/background index lists of a label cost twice the float32
image). So a cache on a GPU that is given no ``"cuda"`` budget takes :data:`DEFAULT_CUDA_SHARE` of
the free memory ``torch.cuda.mem_get_info`` reports at construction; items past it go to pinned host
memory. Pass ``budget={"cuda": "40GiB"}`` to choose, or ``budget={"cuda": None}`` for no limit.
"""

from __future__ import annotations

import torch

DEFAULT_CUDA_SHARE = 0.5  # of the memory free on the device when the cache is made


def default_cuda_budget(device: torch.device, share: float = DEFAULT_CUDA_SHARE) -> tuple[int | None, str]:
    """``(bytes, rule)``: ``share`` of the free memory of ``device``; ``(None, rule)`` without a usable GPU.

    Args:
        device: a CUDA device (``cuda`` or ``cuda:N``).
        share: the fraction of free memory the cache may hold (default :data:`DEFAULT_CUDA_SHARE`).

    Example:
        >>> default_cuda_budget(torch.device("cuda"))[0] if torch.cuda.is_available() else None
    """
    if not 0.0 < share <= 1.0:
        raise ValueError(f"default_cuda_budget: share must be in (0, 1], got {share}")
    if device.type != "cuda" or not torch.cuda.is_available():
        return None, "unlimited: no CUDA device available"
    free, total = torch.cuda.mem_get_info(device)
    budget = int(free * share)
    rule = (
        f"default: {share:.0%} of the {free / 2**30:.1f} GiB free of {total / 2**30:.1f} GiB "
        f"on {device} when the cache was made"
    )
    return budget, rule
