"""SmartCache's entry store: puts replacement entries into the shared ``CacheCore`` and tracks their bytes."""

from __future__ import annotations

import threading
from typing import Any

from fastpipe.runtime._fork import renew_locks_after_fork

#: what a replacement worker computes for an item already cached: the entry there is kept
KEPT = object()


class SlotStore:
    """Puts an entry into the core, counting entries with no room and the peak of cached bytes."""

    def __init__(self, core: Any) -> None:
        self.core = core
        self.no_room = 0
        self.peak_nbytes = 0
        self._lock = threading.Lock()
        renew_locks_after_fork(self)  # a child forked mid-read gets free locks

    def __call__(self, slot: int, entry: Any) -> None:
        if entry is KEPT:
            return
        placed = self.core.put(slot, entry)
        nbytes = self.core.nbytes
        with self._lock:
            self.no_room += placed is None
            self.peak_nbytes = max(self.peak_nbytes, nbytes)

    def _after_fork_in_child(self) -> None:
        """In a forked child: new locks (another thread of the parent may have held them at the fork)."""
        self._lock = threading.Lock()
