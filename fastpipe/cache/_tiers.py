"""Where cached items live: byte budgets per tier ("cuda", "host", "disk") and moves between tiers.

An entry is a cached item (a dict of tensors, metadata dicts, strings...). :class:`TierStore` keeps
each entry in the first tier of its order that has room: the device tier when the chain's device
point is a GPU, then (pinned) host memory, then a disk tier of uncompressed ``.npy`` files opened
memory-mapped. Entries on the host tier of a GPU cache are copied to the device ahead of use on a
side CUDA stream (:meth:`TierStore.prefetch`), each copy tied to the entry it was made from. The
budgets are parsed in :mod:`fastpipe.cache._budgets`, the disk tier is :mod:`fastpipe.cache._disk_tier`. A GPU
cache given no ``"cuda"`` budget takes a share of the free device memory
(:mod:`fastpipe.cache._cuda_budget`); the pinned host tier accounts the bytes its blocks really take
(:mod:`fastpipe.cache._pinned_host`). Tensors placed on the device or pinned host tier are contiguous, so
the crop kernel can read them.

Threading contract: every public method may be called from several threads (fill pool, loader
producer and workers); the accounting and slot table are guarded by one lock.
"""

from __future__ import annotations

import threading
import warnings
from pathlib import Path
from typing import Any

import torch

from fastpipe._tensors import map_tensors, nbytes_of, tensors_of
from fastpipe.cache._budgets import TIERS, array_bytes, parse_budget, parse_bytes
from fastpipe.cache._cuda_budget import default_cuda_budget
from fastpipe.cache._disk_tier import DiskTier, open_slots, pickle_slots
from fastpipe.cache._pickling import pickle_state, unpickle_state
from fastpipe.cache._pinned_host import host_copy, pinned_bytes_of, release_cached
from fastpipe.ops._device import with_index
from fastpipe.runtime._fork import renew_locks_after_fork

# re-exported: the budget parsers, the disk tier and the tensor walkers are imported from here
__all__ = [
    "MAX_INFLIGHT", "TIERS", "DiskTier", "TierStore", "map_tensors", "parse_budget", "parse_bytes",
    "own_bytes", "shallow_view", "tensors_of",
]  # fmt: skip
MAX_INFLIGHT = 64  # prefetched device copies waiting to be read


def shallow_view(entry: Any) -> Any:
    """A new dict (and new nested dicts) sharing the entry's tensors: what a read hands out, never a copy."""
    if isinstance(entry, dict):
        return {k: (dict(v) if isinstance(v, dict) else v) for k, v in entry.items()}
    return entry


def own_bytes(t: torch.Tensor) -> torch.Tensor:
    """``t``, or a copy of its own bytes when it is a view into a larger block (a crop of a loaded
    volume): a cached view would keep the whole block alive while the budget counts the view's bytes."""
    if t.untyped_storage().nbytes() > t.numel() * t.element_size():
        return t.clone()
    return t


class TierStore:
    """Slot -> entry table with per-tier byte budgets, spilling cuda -> host -> disk.

    Args:
        device: where reads must deliver entries (the chain's device point; CPU when it has none).
        budgets: ``{"cuda"|"host"|"disk": bytes or None}`` from :func:`parse_budget`; absent = unlimited.
        disk_dir: folder of the disk tier (a temporary folder, removed on :meth:`close`, when ``None``).

    Threading contract: safe to call from several threads; a slot is written by one thread at a time.
    """

    def __init__(
        self, device: torch.device, budgets: dict[str, int | None], disk_dir: str | Path | None = None
    ) -> None:
        self.device = with_index(device)  # "cuda": this thread's device, never cuda:0 of a fill thread
        self.order = list(TIERS) if self.device.type == "cuda" else ["host", "disk"]
        self.budgets = {t: budgets.get(t) for t in self.order}
        self.budget_rules = {t: "given" if t in budgets else "unlimited" for t in self.order}
        if self.device.type == "cuda" and "cuda" not in budgets:
            self.budgets["cuda"], self.budget_rules["cuda"] = default_cuda_budget(self.device)
        if "disk" not in budgets and self.budgets.get("host") is None:
            self.budgets["disk"] = 0  # nothing ever spills when host memory is unlimited
            self.budget_rules["disk"] = "0: host memory is unlimited"
        self.used = dict.fromkeys(self.order, 0)
        self.cuda_full = self.disk_full = False
        self.oom_warnings = 0
        self.host_full = False  # a pinned host allocation failed: the host tier takes no more entries
        self.pin_failures = 0
        self.h2d_bytes = 0  # host/disk -> device bytes copied by reads and prefetches
        self._slots: dict[int, tuple[str, Any, int]] = {}
        self._inflight: dict[int, tuple[Any, Any, Any]] = {}  # slot -> (source entry, copy, event)
        self._lock = threading.Lock()
        renew_locks_after_fork(self)  # a child forked mid-read gets free locks
        self._disk_dir = disk_dir
        self._disk: DiskTier | None = None
        self._stream = None

    def put(self, slot: int, entry: Any) -> str | None:
        """Store ``entry`` under ``slot`` (replacing any entry there) in the first tier with room; returns that tier or ``None``."""
        if slot in self:
            self.drop(slot)
        for tier in self.order:
            nb = self._tier_bytes(tier, entry)
            if not self._reserve(tier, nb):
                continue
            try:
                placed = self._place(tier, slot, entry)
            except (
                RuntimeError
            ) as err:  # a failed cudaHostAlloc raises AcceleratorError "CUDA error: out of memory"
                oom = isinstance(err, torch.OutOfMemoryError)
                if tier == "cuda" and oom:
                    self.note_oom(tier, nb)
                elif tier == "host" and (oom or "out of memory" in str(err)):
                    self._note_pin_failure(nb, err)
                else:
                    with self._lock:
                        self.used[tier] -= nb
                    raise
                continue
            except OSError as err:  # the disk tier's folder is full or gone: the disk tier is closed
                if tier != "disk":
                    raise
                self._disk_failed(slot, nb, err)
                continue
            with self._lock:
                self._slots[slot] = (tier, placed, nb)
            return tier
        return None

    def _pins(self) -> bool:
        return self.device.type == "cuda" and torch.cuda.is_available()

    def _tier_bytes(self, tier: str, entry: Any) -> int:
        """Bytes ``entry`` takes in ``tier``: pinned blocks are rounded up as the pinned allocator does;
        numpy arrays (kept as they are, in host memory, whatever the tier) count too."""
        if tier == "host" and self._pins():
            return pinned_bytes_of(tensors_of(entry)) + array_bytes(entry)
        return nbytes_of(entry) + array_bytes(entry)

    def _reserve(self, tier: str, nb: int) -> bool:
        with self._lock:
            budget = self.budgets.get(tier)
            if getattr(self, f"{tier}_full") or (budget is not None and self.used[tier] + nb > budget):
                return False
            self.used[tier] += nb
            return True

    def _close_tier(self, tier: str, nb: int, counter: str | None = None) -> tuple[bool, int]:
        """Release ``nb`` bytes reserved in ``tier`` and take no more entries there (``{tier}_full``);
        returns whether the tier was open until now (warn then, once) and the bytes it still holds."""
        with self._lock:
            self.used[tier] -= nb
            first = not getattr(self, f"{tier}_full")
            setattr(self, f"{tier}_full", True)
            if counter is not None:
                setattr(self, counter, getattr(self, counter) + 1)
            return first, self.used[tier]

    def note_oom(self, tier: str = "cuda", nb: int = 0) -> None:
        """Record a GPU out-of-memory: release ``nb`` reserved bytes, close the cuda tier, warn once."""
        first, held = self._close_tier(tier, nb, "oom_warnings")
        if first:
            warnings.warn(
                f"GPU out of memory while caching on {self.device} after {held} bytes; "
                "the remaining items go to host memory (set budget={'cuda': ...} to choose the split)",
                RuntimeWarning,
                stacklevel=3,
            )

    def _note_pin_failure(self, nb: int, err: BaseException) -> None:
        """A pinned host allocation failed: release ``nb`` reserved bytes, close the host tier, warn once."""
        first, pinned = self._close_tier("host", nb, "pin_failures")
        if first:
            warnings.warn(
                f"pinned host memory allocation of {nb} bytes failed while caching for {self.device} after "
                f"{pinned} bytes pinned ({str(err).splitlines()[0]}); the remaining "
                "items go to the disk tier, or are not cached when it has no room (set budget={'host': ...})",
                RuntimeWarning,
                stacklevel=3,
            )

    def _disk_failed(self, slot: int, nb: int, err: OSError) -> None:
        """A disk-tier write failed (``ENOSPC``, say): its files go, no later entry tries the disk, one warning."""
        first, _ = self._close_tier("disk", nb)
        if self._disk is not None:
            self._disk.remove(slot)  # the tensors written before the failing one, and its partial file
        if first:
            warnings.warn(
                f"the disk cache tier in {self._disk.root if self._disk else self._disk_dir} cannot be "
                f"written ({type(err).__name__}: {err}); entries that fit no other tier are recomputed "
                "on every read",
                RuntimeWarning,
                stacklevel=4,
            )

    def _place(self, tier: str, slot: int, entry: Any) -> Any:
        if tier == "cuda":  # contiguous: a strided volume would leave the crop kernel for the torch path
            return map_tensors(
                entry, lambda t: own_bytes(t.to(self.device, memory_format=torch.contiguous_format))
            )
        if tier == "host":
            pin = self._pins()
            return map_tensors(entry, lambda t: host_copy(t, pin) if pin else own_bytes(t.cpu()))
        with self._lock:
            if self._disk is None or not self._disk.owned:  # a forked child writes to a folder of its own
                self._disk = DiskTier(self._disk_dir)
        return self._disk.write(slot, entry)

    def get(self, slot: int) -> Any:
        """The entry of ``slot`` on ``self.device`` (prefetched copy when one is ready; never a deep copy)."""
        with self._lock:
            tier, entry, _ = self._slots[slot]
            pending = self._inflight.pop(slot, None)
        if tier == "cuda" or self.device.type != "cuda":
            return entry
        if pending is not None and pending[0] is entry:  # a copy of an entry since replaced is stale
            _, moved, event = pending
            stream = torch.cuda.current_stream(self.device)
            stream.wait_event(event)
            for t in tensors_of(moved):
                t.record_stream(stream)
            return moved
        with self._lock:
            self.h2d_bytes += nbytes_of(entry)
        return map_tensors(entry, lambda t: t.to(self.device, non_blocking=True))

    def prefetch(self, slots: list[int]) -> None:
        """Start copying host/disk-tier entries of ``slots`` to the GPU on a side stream (no-op on CPU)."""
        if self.device.type != "cuda" or not torch.cuda.is_available():
            return
        if self._stream is None:
            self._stream = torch.cuda.Stream(self.device)
        for slot in slots:
            with self._lock:
                tier, entry, _ = self._slots.get(slot, ("cuda", None, 0))
                if tier == "cuda" or slot in self._inflight:
                    continue
            # host-tier sources are written once at put: no need to queue behind the caller's stream (a step)
            with torch.cuda.stream(self._stream):
                moved = map_tensors(entry, lambda t: t.to(self.device, non_blocking=True))
                event = torch.cuda.Event()
                event.record(self._stream)
            with self._lock:
                self.h2d_bytes += nbytes_of(entry)
                current = self._slots.get(slot)
                if current is None or current[1] is not entry:  # dropped or replaced meanwhile
                    continue
                while len(self._inflight) >= MAX_INFLIGHT:  # never read: forget the oldest copy
                    self._inflight.pop(next(iter(self._inflight)))
                self._inflight[slot] = (entry, moved, event)

    def drop(self, slot: int) -> None:
        """Forget ``slot`` and give its bytes back to its tier."""
        with self._lock:
            tier, _, nb = self._slots.pop(slot)
            self._inflight.pop(slot, None)
            self.used[tier] -= nb
        if tier == "disk" and self._disk is not None:
            self._disk.remove(slot)

    def tier_of(self, slot: int) -> str | None:
        """The tier holding ``slot``, or ``None`` when it is not stored."""
        with self._lock:
            found = self._slots.get(slot)
        return None if found is None else found[0]

    def __contains__(self, slot: int) -> bool:
        with self._lock:
            return slot in self._slots

    def stats(self) -> dict[str, Any]:
        """Items and bytes per tier, budgets, and how many GPU out-of-memory fallbacks happened."""
        with self._lock:
            items = dict.fromkeys(self.order, 0)
            for tier, _, _ in self._slots.values():
                items[tier] += 1
            return {
                "items": items,
                "bytes": dict(self.used),
                "budgets": dict(self.budgets),
                "budget_rules": dict(self.budget_rules),
                "oom_fallbacks": self.oom_warnings,
                "pin_failures": self.pin_failures,
                "h2d_bytes": self.h2d_bytes,
            }

    def close(self) -> None:
        """Drop every slot and remove a temporary disk tier (idempotent)."""
        with self._lock:
            self._slots.clear()
            self._inflight.clear()
            self.used = dict.fromkeys(self.order, 0)
        if self._disk is not None:
            self._disk.close()
            self._disk = None
        if self._pins():
            release_cached()

    def _after_fork_in_child(self) -> None:
        """In a forked child: new locks (another thread of the parent may have held them at the fork)."""
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        """Pickled into a worker process: the device and host entries (torch shares their memory) and
        the disk tier's as their files, mapped read-only by the copy, which owns no disk tier (removes no
        file); no CUDA stream nor prefetched copies."""
        state = pickle_state(self)
        with self._lock:
            state["_slots"], state["used"] = pickle_slots(self._slots, self.used, self._disk)
        return {**state, "_stream": None, "_inflight": {}, "_disk": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        state["_slots"], state["used"] = open_slots(state["_slots"], state["used"])
        unpickle_state(self, state)
