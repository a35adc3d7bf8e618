"""Persistent cache across runs: one file per item, keyed by its input files, the chain and the version.

The key of an item (:mod:`fastpipe.cache._key`) hashes the content (or, with ``persist_key="stat"``, the
size and times) of every file the item names, its other values, the fingerprint of the deterministic
prefix (:mod:`fastpipe.cache._fingerprint`: parameters, code, closures, defaults of each transform) and
``fastpipe.__version__`` with a hash of fastpipe's sources. A change in any of them gives a new key, so a stale entry is not looked up.

Each file (:mod:`fastpipe.cache._format`) holds tensors as raw bytes and the rest as JSON, with a
checksum, and records its own key and the item (index and source files) it was computed from. An entry
is loaded only if all of that matches; anything else (another format, a truncated or corrupt file, a
file copied over another key's, a folder in its place) is rejected with a warning naming the file and
recomputed. Loading never runs code from the folder. Entries are written atomically
(:mod:`fastpipe.cache._files`); temporary files left by a killed process are removed at open.

A folder that cannot be written (read-only, full, a file in its way) never fails a fill: the cache warns
once, naming the folder and the reason, and goes on in memory; a single entry that cannot be replaced
(a folder in its place) is warned about by name. An entry holding a value the format does not store
(see :mod:`fastpipe.cache._format`) is not saved: warned once per kind of value, kept in memory.
"""

from __future__ import annotations

import logging
import os
import threading
import warnings
from pathlib import Path
from typing import Any

from fastpipe._tensors import tensors_of
from fastpipe.cache._files import commit, remove_stale_temps, write_temp
from fastpipe.cache._format import CorruptEntryError, UnstorableEntryError, decode_entry, encode_entry
from fastpipe.cache._key import EntryOwner
from fastpipe.runtime._fork import renew_locks_after_fork

log = logging.getLogger(__name__)


class PersistentCache:
    """Entries on disk under ``root``, one ``{key}.fpc`` file each, written atomically and checksummed.

    Args:
        root: the cache folder, created if missing.

    Threading contract: different keys may be loaded and saved from several threads at once.

    Example:
        >>> cache = PersistentCache(tmp)  # doctest: +SKIP
        >>> owner = entry_owner({"image": "a.nii.gz"}, 0, chain_fingerprint(prefix), "0.1.0")  # doctest: +SKIP
        >>> cache.load(owner) or cache.save(owner, compute())  # doctest: +SKIP
    """

    def __init__(self, root: str | Path) -> None:
        # "~/cache": the home folder's, not a folder named "~"; absolute: the folder given, after a chdir too
        self.root = Path(root).expanduser().absolute()
        self.loads = self.saves = self.rejected = self.write_errors = self.unsaved = 0
        self.writable = self.opened = True
        self._warned: set[str] = set()
        self._lock = threading.Lock()
        renew_locks_after_fork(self)  # a child forked mid-read gets free locks
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            self.opened = False
            self._unwritable(f"cannot be created ({type(err).__name__}: {err})")
        self.removed_temps = len(remove_stale_temps(self.root)) if self.writable else 0

    def path(self, key: str) -> Path:
        """The file of ``key``."""
        return self.root / f"{key}.fpc"

    def load(self, owner: EntryOwner) -> Any | None:
        """The entry of ``owner`` on the CPU, or ``None`` when absent or rejected (with a warning)."""
        path = self.path(owner.key)
        if not self.opened:
            return None
        try:
            blob = _read(path)
        except FileNotFoundError:
            return None
        except OSError as err:  # a folder in its place, no permission to read
            return self._reject(path, f"{type(err).__name__}: {err}", owner)
        try:
            entry, record = decode_entry(blob)
        except CorruptEntryError as err:
            return self._reject(path, f"corrupt or not a fastpipe entry: {err}", owner)
        except Exception as err:  # noqa: BLE001 - an unforeseen failure on untrusted bytes: still a rejection
            return self._reject(path, f"unreadable ({type(err).__name__}: {err})", owner)
        mismatch = _mismatch(record, owner)
        if mismatch:
            return self._reject(path, mismatch, owner)
        with self._lock:
            self.loads += 1
        return entry

    def save(self, owner: EntryOwner, entry: Any) -> bool:
        """Store ``entry`` for ``owner`` (temporary file, fsync, atomic rename); ``False`` if not saved."""
        if not self.writable:
            return False
        try:
            blob = encode_entry(entry, owner.key, owner.index, list(owner.sources))
        except UnstorableEntryError as err:
            return self._unsaved(str(err))
        try:
            tmp = write_temp(self.root, owner.key, blob)
        except OSError as err:  # the folder: read-only, full, gone
            self._unwritable(f"cannot be written ({type(err).__name__}: {err})")
            return False
        try:
            commit(tmp, self.path(owner.key))
        except OSError as err:  # this entry's file: a folder in its place
            with self._lock:
                self.write_errors += 1
            self._warn_once(
                f"persistent cache entry {self.path(owner.key)} cannot be replaced ({err}); "
                f"{_item(owner)} stays in memory only"
            )
            return False
        with self._lock:
            self.saves += 1
        return True

    def stats(self) -> dict[str, Any]:
        """Folder, loads, saves, rejected files, write errors, unsaved entries, removed temporary files."""
        return {
            "dir": str(self.root),
            "loads": self.loads,
            "saves": self.saves,
            "rejected": self.rejected,
            "write_errors": self.write_errors,
            "unsaved": self.unsaved,
            "removed_temps": self.removed_temps,
            "writable": self.writable,
        }

    def _reject(self, path: Path, reason: str, owner: EntryOwner) -> None:
        with self._lock:
            self.rejected += 1
        self._warn_once(f"persistent cache entry {path} rejected ({reason}); recomputing {_item(owner)}")

    def _unwritable(self, reason: str) -> None:
        with self._lock:
            self.writable = False
            self.write_errors += 1
        self._warn_once(f"persistent cache folder {self.root} {reason}; going on in memory, nothing is saved")

    def _unsaved(self, reason: str) -> bool:
        with self._lock:
            self.unsaved += 1
        self._warn_once(
            f"an entry is not saved to the persistent cache {self.root}: {reason}; "
            "it is kept in memory and recomputed in the next run"
        )
        return False

    def _warn_once(self, message: str) -> None:
        with self._lock:
            if message in self._warned:
                return
            self._warned.add(message)
        warnings.warn(message, RuntimeWarning, stacklevel=3)

    def _after_fork_in_child(self) -> None:
        """In a forked child: new locks (another thread of the parent may have held them at the fork)."""
        self._lock = threading.Lock()


def _read(path: Path) -> bytearray:
    """The bytes of ``path`` in a ``bytearray``: the loaded tensors are writable views of it, not copies."""
    with open(path, "rb") as f:
        buf = bytearray(os.fstat(f.fileno()).st_size)
        if f.readinto(buf) != len(buf):
            raise OSError(f"{path} changed size while being read")
    return buf


def _item(owner: EntryOwner) -> str:
    """``the item of /data/a.nii.gz (and 1 more file)``: the item of an entry, as warnings name it (by
    its files: ``owner.index`` is a position in this rank's shard)."""
    if not owner.sources:
        return "the item" if owner.index is None else f"item {owner.index}"
    more = len(owner.sources) - 1
    return f"the item of {owner.sources[0]}" + (f" (and {more} more file{'s' * (more > 1)})" if more else "")


def _mismatch(record: dict[str, Any], owner: EntryOwner) -> str | None:
    """Why a file's record does not belong to ``owner`` (``None`` when it does)."""
    if record.get("key") != owner.key:
        return f"it records key {str(record.get('key'))[:16]}..., not {owner.key[:16]}... (copied over?)"
    if tuple(record.get("sources") or ()) != owner.sources:
        return f"it was computed from {record.get('sources')}, not {list(owner.sources)}"
    return None


def reset_trace_ids(entry: Any) -> None:
    """Set the transform ids in the applied operations of the MONAI ``MetaTensor`` values of ``entry`` to
    ``TraceKeys.NONE``, in place, as MONAI's ``PersistentDataset`` does (``reset_ops_id``).

    An id is the ``id()`` of a transform in the process that computed the entry: a run loading the
    entry could not invert it (``RuntimeError: ... getting the most recently applied invertible
    transform``), and the entry of the run that saved it is reset alike, so both read the same.
    """
    for t in tensors_of(entry):
        if getattr(t, "applied_operations", None):
            from monai.transforms.utils import reset_ops_id  # a MetaTensor: MONAI is installed

            t.applied_operations = reset_ops_id(t.applied_operations)
