"""``SmartCacheDataset``: a cached window of the data list, refreshed every epoch by background threads."""

from __future__ import annotations

import math
import threading
import warnings
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fastpipe import distributed
from fastpipe.cache._fill import default_workers, run_fill
from fastpipe.cache._reads import MISS, CachedReads, warn_no_room
from fastpipe.cache._replacer import release
from fastpipe.cache._rotation import Rotation, check_args
from fastpipe.cache._skip import check_on_error, fill_skipping
from fastpipe.cache._slots import SlotStore
from fastpipe.cache._smart_rounds import SmartRounds, make_replacer
from fastpipe.cache._swap_guard import SwapGuard
from fastpipe.cache._traced_reads import TracedReads
from fastpipe.profiling import annotate
from fastpipe.runtime._fork import renew_locks_after_fork


class SmartCacheDataset(SmartRounds, TracedReads, CachedReads):
    """Keep ``cache_num`` items cached; each round swap the oldest ``R = ceil(cache_num * replace_rate)``.

    Same chain split, device tier ("ToDevice-then-cache"), budgets and byte reporting as
    :class:`~fastpipe.CacheDataset`: both share one read path (``fastpipe.cache._reads``), this one
    reading a moving window. The window follows MONAI's running-window order over the data list
    (shuffled once with ``seed`` when ``shuffle``), so the set of cached items per round equals
    MONAI's ``SmartCacheDataset`` and every item enters within ``ceil(len(data) / R)`` rounds.
    Replacements of the next round are computed during the epoch by ``num_replace_workers`` threads
    outside any lock a reader takes; :meth:`update_cache` (called by
    :class:`~fastpipe.ThreadDataLoader` at each epoch end) swaps them in atomically, waiting only
    for the items not yet ready. As in MONAI, the outgoing items are the window's first, the others
    move up and the incoming ones come last, so ``ds[i]`` is MONAI's item ``i`` in every round.

    Args:
        data: a list of item dicts, or a map-style dataset of deterministic items.
        transform: a fastpipe/MONAI ``Compose``, a list of callables, or one callable (default ``None``).
        cache_num: items in the window (> 0; default ``None``: ``int(len(data) * cache_rate)``, as
            MONAI's ``cache_num``/``cache_rate`` pair). A window of ``len(data)`` or more falls back to a
            full ``CacheDataset`` (one warning, no replacement).
        replace_rate: fraction of the window replaced per round, in ``(0, 1]`` (default 0.1).
        num_init_workers: threads of the first fill (default ``None``: one per core).
        num_replace_workers: replacement threads (default ``None``: one per core, at most ``R``).
        shuffle: shuffle the data order once before windowing (default ``True``).
        seed: seeds that shuffle and the random suffix (default 0).
        progress: show the first fill's progress bar (default ``True``).
        budget: per-tier byte budgets as in ``CacheDataset`` (default ``None``: unlimited).
        cache_rate: MONAI's option; the window is ``min(cache_num, int(len(data) * cache_rate))``, at
            least 1 (default 1.0).
        copy_cache: deep-copy entries on read (default ``None``: as ``CacheDataset`` decides it).
        persist_dir: persistent cache folder (default ``None``); see ``CacheDataset``.
        disk_dir: where the disk tier makes its own folder, removed on shutdown (default ``None``:
            the system's temporary folder).
        replace_nice: niceness added to the replacement threads on Linux (default 10; ``None``: normal
            priority), so the loader's reads win the CPU and replacements use what is left; a round
            that is still late at the epoch end shows in ``stats()["lag_s"]``.
        on_error: ``"raise"`` (default): an item whose chain fails raises
            :class:`~fastpipe.cache.errors.CacheFillError` at the first fill, or
            :class:`~fastpipe.cache.errors.ReplacementError` from :meth:`update_cache` (retried at the next
            call). ``"skip"``: the item is dropped from the rotation with a warning naming it, and the
            item after it takes its place; the window goes on rotating over the items left
            (``stats()["skipped"]`` lists the dropped ones).
        rank, world_size, even_divisible, partition_seed: rotate through this rank's shard only; see
            :class:`~fastpipe.cache.cache_dataset.CacheDataset` and :mod:`fastpipe.distributed`.
        persist_key: ``"content"`` (default) or ``"stat"``; see ``CacheDataset``.
        translate: swap MONAI transforms for fastpipe's where the semantics are the same (default
            ``True``), as in :class:`~fastpipe.cache.cache_dataset.CacheDataset`.

    Threading contract: reads may run from several threads at any time, including during
    :meth:`update_cache`; a read sees an item of the window before or after the swap, never a
    half-built one. :meth:`start`, :meth:`update_cache` and :meth:`shutdown` are called from one
    thread (the training loop or the loader); :meth:`wait_replacements` from any thread. Cached bytes
    stay within ``cache_num + R`` items' worth. :meth:`shutdown` stops the threads and keeps the
    window readable; :meth:`start` restarts them (MONAI's semantics). :meth:`close` (or leaving a
    ``with`` block) frees all cached memory (GPU included); the dataset is unusable after it.

    Example:
        >>> ds = SmartCacheDataset([{"x": i} for i in range(8)], None, cache_num=4, replace_rate=0.5,
        ...                        shuffle=False, progress=False)
        >>> with ds:
        ...     first = sorted(ds[i]["x"] for i in range(len(ds)))
        ...     ds.update_cache()
        ...     second = sorted(ds[i]["x"] for i in range(len(ds)))
        >>> first, second
        ([0, 1, 2, 3], [2, 3, 4, 5])
    """

    def __init__(
        self,
        data: Sequence[dict] | torch.utils.data.Dataset,
        transform: Any = None,
        cache_num: int | None = None,
        replace_rate: float = 0.1,
        num_init_workers: int | None = None,
        num_replace_workers: int | None = None,
        shuffle: bool = True,
        seed: int = 0,
        progress: bool = True,
        budget: Any = None,
        cache_rate: float = 1.0,
        copy_cache: bool | None = None,
        persist_dir: str | Path | None = None,
        disk_dir: str | Path | None = None,
        replace_nice: int | None = 10,
        on_error: str = "raise",
        rank: int | None = None,
        world_size: int | None = None,
        even_divisible: bool = True,
        partition_seed: int = 0,
        persist_key: str = "content",
        translate: bool = True,
    ) -> None:
        self._init_kwargs = {k: v for k, v in locals().items() if k not in ("self", "data", "__class__")}
        check_args(cache_num, replace_rate, cache_rate)
        shard = (rank, world_size, even_divisible, partition_seed)
        self.on_error = check_on_error(on_error)
        super().__init__(
            data, transform, copy_cache, budget, persist_dir, seed, disk_dir, *shard, persist_key, translate
        )
        self._setup_window(cache_num, replace_rate, cache_rate, shuffle, seed)
        self._make_replacer(num_replace_workers, replace_nice, on_error)
        distributed.guarded_fill(
            lambda: self._fill_window(num_init_workers, progress),
            self.shard is not None,
            agree=self.shard and self.shard["fingerprint"],
        )

    def _make_replacer(self, num_workers: int | None, nice: int | None, on_error: str) -> None:
        """The entry store, the replacement pool and the finalizer that stops it and frees the cache."""
        self._store = SlotStore(self.core)  # no reference to self: threads must not keep the dataset alive
        workers = default_workers(num_workers, self.replace_num)
        self._replacer = make_replacer(
            self.core, self._inputs, self._store, self.shard, workers, self.replace_num, nice, on_error
        )
        self._finalizer = weakref.finalize(self, release, self._replacer, self.core)

    def _setup_window(
        self, cache_num: int | None, replace_rate: float, cache_rate: float, shuffle: bool, seed: int
    ) -> None:
        n = len(self._inputs)
        self.cache_num = min(n if cache_num is None else int(cache_num), n, max(1, int(n * cache_rate)))
        if self.cache_num >= n:
            asked = f"cache_num={cache_num}" if cache_num is not None else f"cache_rate={cache_rate}"
            warnings.warn(
                f"{asked} gives a window of all {n} items: SmartCacheDataset falls back to a full "
                "CacheDataset (every item cached, no replacement; pass cache_num < len(data) for a window)",
                UserWarning,
                stacklevel=3,
            )
        self.replace_num = min(math.ceil(self.cache_num * replace_rate), n - self.cache_num)
        self.replace_rate = replace_rate
        if not hasattr(self, "_shuffle_rng"):  # kept by set_data: MONAI shuffles new data with the same state
            self._shuffle_rng = np.random.RandomState(seed % 2**32)
        self._rotation = Rotation(n, self.cache_num, self.replace_num, shuffle, rng=self._shuffle_rng)
        self._window: tuple[int, ...] = tuple(self._rotation.window())  # slot (= data index), oldest first
        self._window_lock = threading.Lock()
        renew_locks_after_fork(self)  # a child forked mid-read gets free locks
        self._closed = False
        self._submitted = False
        self._restarted = False  # the window no longer follows the rotation (MONAI's restart)
        self._warned_lag = False
        self._lags: list[float] = []
        self._late: list[int] = []
        self.items_swapped = 0
        self._swap_guard = SwapGuard()

    def _fill_window(self, num_workers: int | None, progress: bool) -> None:
        def job(slot: int) -> None:
            self._store(slot, self.core.compute(self._inputs[slot]))

        def fill(slots: list[int]) -> Any:
            return run_fill(
                slots,
                job,
                self._inputs.__getitem__,
                num_workers,
                progress,
                self.on_error,
                index_of=self.input_index,
            )

        with annotate("smartcache_fill", "smartcache"):
            if self.on_error == "skip":
                self.fill_report = fill_skipping(self._rotation, fill, self.input_index)
                self._sync_window()
            else:
                self.fill_report = fill(list(self._window))
        warn_no_room(self._store.no_room, self.core, stacklevel=3)

    def _sync_window(self) -> None:
        """Take the window from the rotation after items were dropped from it (first fill only)."""
        self.cache_num, self.replace_num = self._rotation.cache_num, self._rotation.replace_num
        self._window = tuple(self._rotation.window())

    # --- reads -------------------------------------------------------------------------------------

    def __len__(self) -> int:
        return self.cache_num

    def _lookup(self, index: int) -> tuple[int, Any]:
        """Slot and entry of window position ``index``."""
        return self._lookups([index])[0]

    def _lookups(self, indices: Sequence[int]) -> list[tuple[int, Any]]:
        """Slots and entries of window positions ``indices``, all from one window."""
        with self._window_lock:  # held only for the lookups, so a swap cannot free an entry under us
            return [self._lookup_locked(i) for i in indices]

    def _lookup_locked(self, index: int) -> tuple[int, Any]:
        if self._closed:
            raise RuntimeError("SmartCacheDataset was closed; create a new one to read again")
        if not -self.cache_num <= index < self.cache_num:
            raise IndexError(f"index {index} out of range for a SmartCacheDataset of {self.cache_num} items")
        slot = self._window[index]
        return slot, (self.core.get(slot) if slot in self.core else MISS)

    def _slots(self, indices: Sequence[int]) -> list[int]:
        window = self._window
        return [window[i] for i in indices]

    def window_indices(self) -> list[int]:
        """Data indices currently cached, by window position (indices in the data list given, on a shard too)."""
        return [self.input_index(slot) for slot in self._window]

    # --- rounds ------------------------------------------------------------------------------------

    def set_data(self, data: Sequence[dict]) -> None:
        """Replace the data list and fill a new window for it, as MONAI's ``set_data`` does.

        MONAI requires the replacement threads to be stopped: when they run, this warns and calls
        :meth:`shutdown` first, as MONAI's does. Every entry of the old data is freed; the new list
        is sharded, shuffled (continuing the shuffle's random state, as MONAI's), and its first window
        filled with the arguments given at construction; the rotation starts at its beginning.
        :meth:`start` (or :meth:`update_cache`) starts the replacements again.

        Raises:
            TypeError: ``data`` is not a list of items, or this dataset was built on a map-style dataset.
            RuntimeError: the dataset was closed.
        """
        if self._closed:
            raise RuntimeError("SmartCacheDataset was closed; create a new one on the new data")
        self._check_new_data(data)  # before anything stops or is freed
        if self.is_started():
            warnings.warn(
                "SmartCacheDataset.set_data(): the replacement threads still run; shutting them down first "
                "(call shutdown() before set_data(), as MONAI asks)",
                UserWarning,
                stacklevel=2,
            )
            self.shutdown()
        self._finalizer.detach()
        release(self._replacer, self.core)
        self._rebuild(data, self._init_kwargs)

    def close(self) -> None:
        """Stop the threads and free every cached entry, GPU memory included (idempotent; final)."""
        with self._window_lock:
            self._closed = True
        self._finalizer()

    def __enter__(self) -> SmartCacheDataset:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- reporting ---------------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """The cache's figures (as ``CacheDataset.stats``) plus the window: rounds, swaps, lag, peak bytes."""
        out = super().stats()
        out.update(
            cache_num=self.cache_num,
            replace_num=self.replace_num,
            data_len=len(self._inputs),
            rounds=len(self._lags),
            items_swapped=self.items_swapped,
            lag_s=list(self._lags),
            late_items=list(self._late),
            peak_nbytes=self._store.peak_nbytes,
            uncached_no_room=self._store.no_room,
            started=self.is_started(),
            replace_workers=self._replacer.num_workers,
        )
        return out

    def __repr__(self) -> str:
        s = self.stats()
        lag = max(s["lag_s"], default=0.0)
        suffix = ", ".join(type(t).__name__ for t in self.suffix) or "none"
        return (
            f"SmartCacheDataset(len={self.cache_num} of {s['data_len']}, replace={self.replace_num}/round, "
            f"device={s['device']}, cached={s['nbytes'] / 2**20:.1f} MiB, rounds={s['rounds']}, "
            f"max lag={lag:.3f}s, started={s['started']}, random suffix=[{suffix}])"
        )

    def _after_fork_in_child(self) -> None:
        """In a forked child: new locks (another thread of the parent may have held them at the fork)."""
        super()._after_fork_in_child()
        self._window_lock = threading.Lock()
