"""Bytes of the cached entries, per tensor: what ``stats()`` and ``describe()`` report.

Each stored entry is summed per top-level key (a nested metadata dict counts under its key). The
crop's background support is classified too: a 0-d integer tensor under a key ending in
``bg_indices`` is a background *count* (centres drawn by rejection, see
``fastpipe.transforms._compact_indices``); a 1-D one is a list (MONAI's, or a compact entry's
fallback for a volume with little background).
"""

from __future__ import annotations

import threading
from typing import Any

import torch

from fastpipe._tensors import nbytes_of
from fastpipe.cache._pickling import pickle_state, unpickle_state
from fastpipe.runtime._fork import renew_locks_after_fork


def _bg_form(entry: dict) -> str | None:
    for key, value in entry.items():
        if isinstance(key, str) and key.endswith("bg_indices") and isinstance(value, torch.Tensor):
            return "count" if value.ndim == 0 else "list"
    return None


class EntryBytes:
    """Per-slot bytes by key of the stored entries (thread-safe).

    Example:
        >>> eb = EntryBytes()
        >>> eb.record(0, {"image": torch.zeros(4), "label_bg_indices": torch.tensor(3)})
        >>> eb.summary()["by_tensor"]
        {'image': 16, 'label_bg_indices': 8}
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        renew_locks_after_fork(self)  # a child forked mid-read gets free locks
        self._slots: dict[int, tuple[dict[str, int], str | None]] = {}

    def record(self, slot: int, entry: Any) -> None:
        """Remember ``entry``'s bytes by key under ``slot`` (replacing an earlier record)."""
        if isinstance(entry, dict):
            by_key = {str(k): nbytes_of(v) for k, v in entry.items()}
            form = _bg_form(entry)
        else:
            by_key, form = {"entry": nbytes_of(entry)}, None
        with self._lock:
            self._slots[slot] = (by_key, form)

    def forget(self, slot: int | None = None) -> None:
        """Drop ``slot``'s record (all records when ``None``)."""
        with self._lock:
            if slot is None:
                self._slots.clear()
            else:
                self._slots.pop(slot, None)

    def summary(self) -> dict[str, Any]:
        """``entries``, mean ``bytes_per_entry``, mean bytes per key ``by_tensor``, and ``background``:
        how many entries hold a background count (``rejection``) or a ``list``."""
        with self._lock:
            records = list(self._slots.values())
        n = len(records)
        totals: dict[str, int] = {}
        forms = {"rejection": 0, "list": 0}
        for by_key, form in records:
            for k, b in by_key.items():
                totals[k] = totals.get(k, 0) + b
            if form is not None:
                forms["rejection" if form == "count" else "list"] += 1
        by_tensor = {k: round(b / n) for k, b in totals.items()} if n else {}
        return {
            "entries": n,
            "bytes_per_entry": round(sum(totals.values()) / n) if n else 0,
            "by_tensor": by_tensor,
            "background": forms,
        }

    def _after_fork_in_child(self) -> None:
        """In a forked child: new locks (another thread of the parent may have held them at the fork)."""
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        return pickle_state(self)

    def __setstate__(self, state: dict[str, Any]) -> None:
        unpickle_state(self, state)


def _size(b: float) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if b >= scale:
            return f"{b / scale:.2f} {unit}"
    return f"{int(b)} B"


def describe_bytes(summary: dict[str, Any]) -> str:
    """Lines for ``describe()``: bytes per cached entry, by tensor, and the background support's form."""
    if not summary["entries"]:
        return "bytes per cached entry: nothing cached yet"
    parts = ", ".join(f"{k} {_size(b)}" for k, b in summary["by_tensor"].items() if b)
    lines = [
        f"bytes per cached entry ({summary['entries']} entries): {_size(summary['bytes_per_entry'])} = {parts}"
    ]
    bg = summary["background"]
    if bg["rejection"] or bg["list"]:
        lines.append(
            f"  crop background: {bg['rejection']} entries hold a count (centres drawn by rejection), "
            f"{bg['list']} a list"
        )
    return "\n".join(lines)
