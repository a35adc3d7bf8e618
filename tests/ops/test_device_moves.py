"""``fastpipe.ops._device.to_device``: asynchronous towards a GPU, never towards the host."""

from __future__ import annotations

import torch

from fastpipe.ops._device import to_device


class _OnCuda:
    """A stand-in for a CUDA tensor (none here): records how it is moved."""

    device = torch.device("cuda", 0)

    def __init__(self) -> None:
        self.moves: list[tuple[torch.device, bool]] = []

    def to(self, device, non_blocking=False):
        self.moves.append((torch.device(device), non_blocking))
        return torch.zeros(3, dtype=torch.int64)


def test_a_move_to_the_host_waits_for_its_copy():
    """A non-blocking device-to-host copy returns before its bytes land: the sampler read stale centres."""
    t = _OnCuda()
    to_device(t, "cpu")
    assert t.moves == [(torch.device("cpu"), False)]


def test_a_host_tensor_stays_put():
    x = torch.arange(3)
    assert torch.equal(to_device(x, "cpu"), x)
