"""Host-to-device batch copies for ``ThreadDataLoader(device=...)``: pinned ring buffers, a side stream, events.

FFCV's pattern. The producer copies each host tensor of a batch into a page-locked staging buffer of
the next ring slot (a host ``memcpy``, no GPU wait), then queues the host-to-device copy on a side
CUDA stream and records an event after it. The copy runs while the GPU is busy with the training step
on the consumer's stream: the producer never waits for that step. A slot's staging buffers are
reused once the event of its previous copy has completed, so the steady state allocates no pinned
memory. On the consumer side :meth:`DeviceCopier.hand_over` makes the consumer's current stream wait
on the event (no host sync) and records the batch's device tensors on that stream, so the caching
allocator does not hand their memory to the side stream while the step still reads it.

Stream contract: a batch is ready on the CUDA stream that is current in the consumer thread when the
loader hands it out (``next()``). A training loop on its own stream iterates inside
``with torch.cuda.stream(s):``. Tensors of a batch that are already on the device (a GPU-cached
dataset) are passed through (on another GPU named by index, copied to this one); the side stream
then first waits for the producer's stream, so the event covers the kernels that made them too. A
batch wholly on the host does not wait for that stream: its copy does not queue behind a training
step there.

Threading contract: :meth:`DeviceCopier.copy` from any number of producer threads (one lock);
:meth:`DeviceCopier.hand_over` from the consumer thread.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from typing import Any

import torch

from fastpipe.cache._tiers import map_tensors, tensors_of
from fastpipe.ops._device import with_index


def _other_gpu(have: torch.device, want: torch.device) -> bool:
    """Whether a tensor on ``have`` must move to reach ``want``: both name a device index and they differ."""
    return have.index is not None and want.index is not None and have != want


class _Slot:
    """One ring slot: staging buffers by tensor position, and the event of its last copy."""

    def __init__(self) -> None:
        self.buffers: dict[int, torch.Tensor] = {}
        self.event: Any = None

    def staging(self, pos: int, t: torch.Tensor, pin: bool) -> torch.Tensor:
        """A host buffer shaped like ``t`` (reused when the last one is large enough and of its dtype)."""
        buf = self.buffers.get(pos)
        if buf is None or buf.dtype != t.dtype or buf.numel() < t.numel():
            buf = torch.empty(t.numel(), dtype=t.dtype, pin_memory=pin)
            self.buffers[pos] = buf
        return buf[: t.numel()].view(t.shape)


class DeviceCopier:
    """Move batches (dicts/lists of tensors) to ``device`` through ``slots`` pinned staging slots.

    Args:
        device: the CUDA device batches go to.
        slots: ring slots; a slot is reused after its previous copy finished (default 4).
        cuda: the ``torch.cuda`` namespace (``Stream``, ``stream``, ``Event``, ``current_stream``);
            tests pass a stand-in.
        pin: stage in page-locked memory (default ``True``).
        h2d: ``h2d(staged) -> device tensor``, queued on the side stream (default ``.to(device,
            non_blocking=True)``).

    Example:
        >>> copier = DeviceCopier(torch.device("cuda"))  # doctest: +SKIP
        >>> batch, ready = copier.copy({"image": torch.zeros(2, 1, 8, 8, 8)})  # doctest: +SKIP
        >>> copier.hand_over(batch, ready)  # doctest: +SKIP
    """

    def __init__(
        self,
        device: torch.device,
        slots: int = 4,
        cuda: Any = torch.cuda,
        pin: bool = True,
        h2d: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        if slots < 1:
            raise ValueError(f"DeviceCopier: slots must be >= 1, got {slots}")
        self.device = with_index(device)  # "cuda": the constructing thread's device, not cuda:0 of a producer
        self.cuda, self.pin = cuda, pin
        self.h2d = h2d or (lambda t: t.to(self.device, non_blocking=True))
        self.slots = [_Slot() for _ in range(slots)]
        self.copied_bytes = 0
        self._turn = itertools.cycle(range(slots))
        self._stream: Any = None
        self._lock = threading.Lock()

    def copy(self, batch: Any) -> tuple[Any, Any]:
        """``(batch on the device, ready event)``: host tensors staged and copied on the side stream."""
        with self._lock:
            slot = self.slots[next(self._turn)]
            if slot.event is not None:
                slot.event.synchronize()  # its staging buffers may still feed the previous copy
            if self._stream is None:
                self._stream = self.cuda.Stream(self.device)
            if any(t.device.type != "cpu" for t in tensors_of(batch)):  # made by the producer's kernels
                self._stream.wait_stream(self.cuda.current_stream(self.device))
            positions = itertools.count()

            def move(t: torch.Tensor) -> torch.Tensor:
                if _other_gpu(t.device, self.device):  # made on another GPU: a peer copy
                    return t.to(self.device, non_blocking=True)
                if t.device.type != "cpu":
                    return t
                staged = slot.staging(next(positions), t, self.pin).copy_(t)
                self.copied_bytes += t.numel() * t.element_size()
                return self.h2d(staged)

            with self.cuda.stream(self._stream):
                out = map_tensors(batch, move)
                event = self.cuda.Event()
                event.record(self._stream)
            slot.event = event
        return out, event

    def hand_over(self, batch: Any, event: Any) -> None:
        """Consumer thread: order the batch before the current stream's next work, without a host sync."""
        stream = self.cuda.current_stream(self.device)
        stream.wait_event(event)
        for t in tensors_of(batch):
            if t.device.type == "cuda":
                t.record_stream(stream)
