"""The item cache shared by ``CacheDataset`` and ``SmartCacheDataset``: compute, store, read, drop.

:class:`CacheCore` owns the deterministic prefix of a chain, its device point, the tier store and
the optional persistent cache. It knows nothing about which items are cached when; the datasets
decide that and address entries by integer *slots*. See ``docs/ARCHITECTURE.md`` ("Cache machinery").

Threading contract: :meth:`compute`, :meth:`put`, :meth:`get`, :meth:`drop` and :meth:`prefetch`
may run concurrently from several threads (for different slots).
"""

from __future__ import annotations

import threading
import warnings
from pathlib import Path
from typing import Any

import torch

from fastpipe.cache._fingerprint import chain_fingerprint
from fastpipe.cache._footprint import EntryBytes
from fastpipe.cache._key import check_persist_key, code_version, entry_owner, item_snapshot
from fastpipe.cache._persist import PersistentCache, reset_trace_ids
from fastpipe.cache._pickling import Unlocked, pickle_state, unpickle_state
from fastpipe.cache._tiers import TierStore, parse_budget, shallow_view
from fastpipe.profiling import annotate
from fastpipe.profiling.nvtx_ranges import transform_name
from fastpipe.runtime._fork import renew_locks_after_fork
from fastpipe.transforms.compose import apply_transform
from fastpipe.transforms.spatial import OrientSpacingd, fuse_spatial
from fastpipe.transforms.utility import device_point, on_host

#: The attribute naming the prefix transform an exception of :meth:`CacheCore.compute` came from.
FAILED_STEP = "fastpipe_failed_step"


def chain_device(prefix: list[Any]) -> torch.device:
    """The device of the last ``ToDeviced``/``EnsureTyped(device=...)`` in ``prefix`` (CPU when none)."""
    dev = torch.device("cpu")
    for t in prefix:
        found = device_point(t)
        if found is not None:
            dev = found
    return dev


class FromDataset:
    """The first step of a prefix whose input is a map-style dataset: ``index -> dataset[index]``."""

    def __init__(self, dataset: Any) -> None:
        self._dataset = dataset  # private: the persistent-cache fingerprint must not hash its contents
        self.dataset_type = f"{type(dataset).__module__}.{type(dataset).__qualname__}"
        self.length = len(dataset)

    def __call__(self, index: int) -> Any:
        return self._dataset[index]


class CacheCore:
    """Compute, place and read cached entries of one deterministic chain.

    Args:
        prefix: the deterministic transforms (output of :func:`fastpipe.transforms.split_chain`).
        budget: per-tier budgets, e.g. ``{"cuda": "20GiB", "host": "64GiB"}`` or one size for the
            first tier (default ``None``: unlimited device/host memory, no disk tier).
        persist_dir: folder of a persistent cache across runs (default ``None``: none).
        disk_dir: where the disk tier makes its own folder, removed on close (default ``None``: the
            system's temporary folder).
        version: the version that keys persistent entries (default: ``fastpipe.__version__`` plus a
            hash of fastpipe's sources, :func:`~fastpipe.cache._key.code_version`).
        persist_key: how source files enter a persistent key: ``"content"`` (default, a hash of their
            bytes) or ``"stat"`` (size, mtime, ctime, inode); see :mod:`fastpipe.cache._key`.

    Raises:
        ValueError: with ``persist_dir``, a prefix transform that cannot be fingerprinted (named).

    Example:
        >>> core = CacheCore([lambda d: {**d, "y": 1}])
        >>> core.put(0, core.compute({"x": 0}))
        'host'
        >>> core.get(0)
        {'x': 0, 'y': 1}
    """

    def __init__(
        self,
        prefix: list[Any],
        budget: Any = None,
        persist_dir: str | Path | None = None,
        disk_dir: str | Path | None = None,
        version: str | None = None,
        persist_key: str = "content",
    ) -> None:
        self.prefix = list(prefix)
        self.device = chain_device(self.prefix)
        self.host_prefix = [h for h in map(on_host, self.prefix) if h is not None]  # a full GPU's tail
        self._run_prefix, self._run_host_prefix = fuse_spatial(self.prefix), fuse_spatial(self.host_prefix)
        primary = "cuda" if self.device.type == "cuda" else "host"
        self.store = TierStore(self.device, parse_budget(budget, primary), disk_dir)
        self.persist = None if persist_dir is None else PersistentCache(persist_dir)
        if version is None and self.persist is not None:
            version = code_version()
        self._fingerprint = chain_fingerprint(self.prefix) if self.persist is not None else ""
        self._version = version
        self._persist_key = check_persist_key(persist_key)
        self._lock = threading.Lock()
        renew_locks_after_fork(self)  # a child forked mid-read gets free locks
        self.hits = 0
        self.computed = 0
        self.entry_bytes = EntryBytes()  # bytes per stored entry by tensor (stats, describe)

    def compute(self, item: Any, index: int | None = None) -> Any:
        """Run the prefix on ``item`` (or load it from the persistent cache): the entry to :meth:`put`.

        ``index`` (the item's position, when known) is recorded in a persistent entry for diagnostics.
        """
        owner = snapshot = None
        if self.persist is not None:
            snapshot = item_snapshot(item)  # a transform assigning into the item must not move its key
            owner = entry_owner(snapshot, index, self._fingerprint, self._version, self._persist_key)
            entry = self.persist.load(owner)
            if entry is not None:
                return entry
        with annotate("cache_compute", "cache"):
            entry, whole = self._run(item)
        with self._lock:
            self.computed += 1
        if owner is not None:
            reset_trace_ids(entry)  # this run's entry reads as the saved one will (MONAI's reset_ops_id)
        if owner is not None and whole:  # not the host tail of a full GPU: its key is the whole chain's
            # keyed by the files as they were before the read: a file replaced meanwhile would store
            # its new values under the old content's key, served when that content comes back
            again = entry_owner(snapshot, index, self._fingerprint, self._version, self._persist_key)
            if again.key == owner.key:
                self.persist.save(owner, entry)
            else:
                warnings.warn(
                    f"{list(owner.sources)} changed while it was read: its entry is not stored in the "
                    "persistent cache (the next run computes it again)",
                    RuntimeWarning,
                    stacklevel=2,
                )
        return entry

    def _run(self, item: Any) -> tuple[Any, bool]:
        """The prefix's output, and whether the whole prefix made it on its device (not the host tail of
        a full GPU, whose entries stay on the host: a persistent entry of it would serve them later)."""
        if not self.store.cuda_full:
            try:
                return _apply(self._run_prefix, item), True
            except torch.cuda.OutOfMemoryError:
                self.store.note_oom("cuda")
        # GPU full: the deterministic tail runs on the host
        return _apply(self._run_host_prefix, item), self.device.type == "cpu"

    def put(self, slot: int, entry: Any) -> str | None:
        """Store ``entry`` under ``slot``; returns its tier, or ``None`` when no tier has room."""
        tier = self.store.put(slot, entry)
        if tier is not None:
            self.entry_bytes.record(slot, entry)
        return tier

    def get(self, slot: int) -> Any:
        """The entry of ``slot`` on the chain's device: fresh dicts, shared tensors (never a deep copy)."""
        entry = self.store.get(slot)
        with self._lock:
            self.hits += 1
        return shallow_view(entry)

    def drop(self, slot: int) -> None:
        """Forget ``slot`` and free its bytes."""
        self.store.drop(slot)
        self.entry_bytes.forget(slot)

    def prefetch(self, slots: list[int]) -> None:
        """Start moving host/disk-tier entries of ``slots`` to the GPU ahead of use (no-op on CPU)."""
        self.store.prefetch(slots)

    def __contains__(self, slot: int) -> bool:
        return slot in self.store

    @property
    def budgets(self) -> dict[str, int | None]:
        """Byte budget per tier (``None``: unlimited)."""
        return self.store.budgets

    @property
    def nbytes(self) -> int:
        """Bytes stored over all tiers."""
        return sum(self.store.stats()["bytes"].values())

    def stats(self) -> dict[str, Any]:
        """Items and bytes per tier, budgets, hits, computed items, persistent-cache loads/saves."""
        out = self.store.stats()
        out.update(
            device=str(self.device),
            hits=self.hits,
            computed=self.computed,
            entry_bytes=self.entry_bytes.summary(),
        )
        if self.persist is not None:
            out["persist"] = self.persist.stats()
        return out

    def close(self) -> None:
        """Free every entry and the temporary disk tier (idempotent)."""
        self.store.close()
        self.entry_bytes.forget()

    def _after_fork_in_child(self) -> None:
        """In a forked child: new locks (another thread of the parent may have held them at the fork)."""
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        """Pickled without locks (a worker process, :mod:`fastpipe.cache._pickling`)."""
        state = pickle_state(self)
        state["persist"] = None if self.persist is None else Unlocked(self.persist)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        unpickle_state(self, state)


def _apply(transforms: list[Any], item: Any) -> Any:
    for t in transforms:
        try:
            item = apply_transform(t, item)
        except Exception as err:
            if getattr(err, FAILED_STEP, None) is None:  # the innermost step (a chain may nest a cache's)
                try:
                    fused = isinstance(t, OrientSpacingd)  # the user's chain has the two steps
                    setattr(err, FAILED_STEP, "Orientationd+Spacingd" if fused else transform_name(t))
                except AttributeError:  # an exception type without a __dict__: unnamed
                    pass
            raise
    return item
