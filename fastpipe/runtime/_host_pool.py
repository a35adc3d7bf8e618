"""Recycled host memory for batch outputs.

A batch of crops is tens of MB (8 float32 patches of 96^3 are 28 MB). Allocated fresh each batch
from a background thread, glibc serves it from a thread arena that is handed back to the kernel
when the batch dies, so every batch pays first-touch page faults again: on a 2-core VM that costs
as much as the copy itself. :class:`HostBufferPool` keeps the buffers and hands one out again once
nothing references it any more.

"Nothing references it" is exact, not a guess: a buffer is a numpy array, and every tensor made
from it (``torch.from_numpy``) holds a reference to the array through its storage, as does every
view, ``.numpy()`` export or DLPack capsule of those tensors. The array's reference count is back
at the pool's own count only when all of them are gone; a batch the consumer still holds is never
written to. Where the interpreter does not show that through ``sys.getrefcount`` (checked once at
import), the pool allocates fresh memory every time.
"""

from __future__ import annotations

import sys
import threading
from collections import OrderedDict

import numpy as np
import torch

from fastpipe._tensors import numpy_dtype
from fastpipe.runtime._fork import renew_locks_after_fork


def _probe_refcounts() -> int | None:
    """The reference count of an idle pooled array, or ``None`` when tensors do not show in it."""
    arrays = [np.empty(4, dtype=np.float32)]
    idle = sys.getrefcount(arrays[0])
    view = torch.from_numpy(arrays[0])[1:]
    held = sys.getrefcount(arrays[0])
    del view
    return idle if held > idle and sys.getrefcount(arrays[0]) == idle else None


_IDLE_REFS = _probe_refcounts()


class HostBufferPool:
    """Uninitialised CPU tensors whose memory is reused once every earlier user has let go of it.

    Args:
        max_per_shape: buffers kept per ``(shape, dtype)``. A loader has about ``buffer_size + 2``
            batches alive at once (queued, held by the training step, being built); beyond the
            limit a buffer is allocated and not kept.
        max_shapes: ``(shape, dtype)`` kinds kept; the least recently used kind is dropped first
            (a short last batch, a new patch size).

    Threading: :meth:`empty` may be called from several threads. Copies: ``copy.deepcopy`` shares the
    pool (the per-thread copies a loader makes of a transform recycle one set of buffers); pickling
    gives the other process a new, empty pool.

    Example:
        >>> pool = HostBufferPool()
        >>> a = pool.empty((2, 3), torch.float32)
        >>> b = pool.empty((2, 3), torch.float32)  # ``a`` is alive: new memory
        >>> a.data_ptr() != b.data_ptr()
        True
        >>> ptr = a.data_ptr(); del a
        >>> pool.empty((2, 3), torch.float32).data_ptr() == ptr  # ``a`` is gone: its memory again
        True
    """

    def __init__(self, max_per_shape: int = 6, max_shapes: int = 4) -> None:
        if max_per_shape < 1 or max_shapes < 1:
            raise ValueError(
                f"HostBufferPool: max_per_shape and max_shapes must be >= 1, got {max_per_shape}, {max_shapes}"
            )
        self.max_per_shape, self.max_shapes = max_per_shape, max_shapes
        self._kinds: OrderedDict[tuple, list[np.ndarray]] = OrderedDict()
        self._lock = threading.Lock()
        renew_locks_after_fork(self)
        self.reused = 0
        self.allocated = 0

    @property
    def enabled(self) -> bool:
        """Whether buffers are recycled (``False`` where reference counts cannot show tensor users)."""
        return _IDLE_REFS is not None

    def empty(self, shape: tuple[int, ...] | list[int], dtype: torch.dtype) -> torch.Tensor:
        """An uninitialised contiguous CPU tensor of ``shape`` and ``dtype``, in recycled memory when free."""
        try:
            np_dtype = numpy_dtype(dtype)
        except TypeError:  # a dtype numpy lacks (bfloat16): plain torch memory, not pooled
            return torch.empty(tuple(shape), dtype=dtype)
        kind = (tuple(int(s) for s in shape), np_dtype.str)
        with self._lock:
            kept = self._kinds.get(kind)
            if kept is not None:
                self._kinds.move_to_end(kind)
                for i in range(len(kept)):
                    if _IDLE_REFS is not None and sys.getrefcount(kept[i]) == _IDLE_REFS:
                        self.reused += 1
                        return torch.from_numpy(kept[i])
            arr = np.empty(kind[0], dtype=np_dtype)  # numpy: transparent huge pages for big buffers
            self.allocated += 1
            if _IDLE_REFS is not None:
                if kept is None:
                    kept = self._kinds[kind] = []
                    while len(self._kinds) > self.max_shapes:
                        self._kinds.popitem(last=False)  # buffers still in use live on with their tensors
                if len(kept) < self.max_per_shape:
                    kept.append(arr)
            return torch.from_numpy(arr)

    def _after_fork_in_child(self) -> None:
        self._lock = threading.Lock()  # a thread of the parent may have held it at the fork

    def __deepcopy__(self, memo: dict) -> HostBufferPool:
        return self

    def __reduce__(self) -> tuple:
        return (HostBufferPool, (self.max_per_shape, self.max_shapes))

    def nbytes(self) -> int:
        """Bytes of the buffers kept (in use or idle)."""
        with self._lock:
            return sum(a.nbytes for kept in self._kinds.values() for a in kept)

    def clear(self) -> None:
        """Drop every kept buffer (those still in use stay valid: their tensors own them)."""
        with self._lock:
            self._kinds.clear()

    def __repr__(self) -> str:
        return (
            f"HostBufferPool(kinds={len(self._kinds)}, bytes={self.nbytes()}, "
            f"reused={self.reused}, allocated={self.allocated}, enabled={self.enabled})"
        )
