"""Small host-to-device moves shared by the torch path, the CUDA launchers and the samplers."""

from __future__ import annotations

import torch


def with_index(device: torch.device | str) -> torch.device:
    """``device`` with its index: a bare ``"cuda"`` names the current device of the calling thread.

    CUDA's current device is per thread and a new thread starts on ``cuda:0``, so a ``"cuda"`` resolved
    later in a loader or fill thread would be ``cuda:0`` on a rank that chose ``cuda:1`` with
    ``torch.cuda.set_device``. Resolve it once, in the thread that builds the object.

    Example:
        >>> with_index("cpu")
        device(type='cpu')
    """
    device = torch.device(device)
    usable = device.type == "cuda" and torch.cuda.is_available() and torch.cuda.device_count() > 0
    if usable and device.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return device


def to_device(t: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """Move a small host tensor to ``device`` without stalling the host.

    A copy from pageable memory may wait for the stream's earlier work (a training step, say);
    staging through torch's cached pinned buffers makes it a truly asynchronous copy. A move to the
    host waits for the copy (the caller reads the values next).

    Example:
        >>> to_device(torch.arange(3), "cpu")
        tensor([0, 1, 2])
    """
    device = torch.device(device)
    if device.type == "cuda" and t.device.type == "cpu":
        return t.pin_memory().to(device, non_blocking=True)
    # device to host: a non-blocking copy returns before the bytes land, and the host reads them at once
    return t.to(device, non_blocking=device.type != "cpu")
