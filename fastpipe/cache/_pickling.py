"""Pickling the cache objects into worker processes: their state without thread locks.

A ``torch.utils.data.DataLoader`` with worker processes started by ``spawn`` or ``forkserver`` (the
default on macOS and Windows, and on Linux from Python 3.14) pickles the dataset into every worker,
as it does MONAI's ``CacheDataset``. Locks, ``threading.local`` and CUDA streams cannot be pickled; the
cached entries can (torch shares their storage with the workers). Each class drops what cannot travel
and makes it new in the copy through its ``_after_fork_in_child`` (the hook that renews locks after a
``fork``), so a copy is never tied to the locks of another process.
"""

from __future__ import annotations

import threading
from typing import Any

from fastpipe.runtime._fork import renew_locks_after_fork

_UNPICKLABLE = (type(threading.Lock()), type(threading.RLock()), threading.local)


def pickle_state(obj: Any, drop: tuple[str, ...] = ()) -> dict[str, Any]:
    """``obj.__dict__`` without its locks, ``threading.local`` values and the attributes ``drop``."""
    return {k: v for k, v in obj.__dict__.items() if k not in drop and not isinstance(v, _UNPICKLABLE)}


def unpickle_state(obj: Any, state: dict[str, Any]) -> None:
    """Restore ``state`` into ``obj`` and give it new locks (its ``_after_fork_in_child``)."""
    obj.__dict__.update(state)
    obj._after_fork_in_child()
    renew_locks_after_fork(obj)


def _revive(cls: type, state: dict[str, Any]) -> Any:
    obj = cls.__new__(cls)
    unpickle_state(obj, state)
    return obj


class Unlocked:
    """Pickles ``obj`` (a class with ``_after_fork_in_child`` but no pickling of its own) as its
    :func:`pickle_state`; it unpickles as ``obj``'s class, with new locks."""

    def __init__(self, obj: Any) -> None:
        self.obj = obj

    def __reduce__(self) -> tuple[Any, tuple[type, dict[str, Any]]]:
        return _revive, (type(self.obj), pickle_state(self.obj))
