"""The read path both cache datasets share: a cached entry (or a recomputed one), then the random suffix.

``CachedReads`` holds what ``CacheDataset`` and ``SmartCacheDataset`` have in common: the chain split
into a cached prefix (run by a :class:`~fastpipe.cache._core.CacheCore`) and a random suffix, the
shard of the data, the per-thread suffix copies and the read counters. A dataset says which slot an
index names and reads its entry through one hook, :meth:`CachedReads._lookup`; everything after that
(recompute on a miss, ``copy_cache``, the suffix, the batched path, seeding) is here, once.

Threading contract: reads may run from several threads. :meth:`CachedReads.fetch_seeded` gives each
thread its own copy of the random suffix, so results depend only on ``(indices, seed)``.
"""

from __future__ import annotations

import threading
import warnings
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from fastpipe import distributed
from fastpipe._chain import flatten, unwrapped
from fastpipe.cache._checks import ITEM_SHAPE, check_device_points, check_items
from fastpipe.cache._copies import deep_copy, seed_suffix, thread_copy
from fastpipe.cache._core import CacheCore, FromDataset
from fastpipe.cache._fill import FillReport
from fastpipe.cache._footprint import describe_bytes
from fastpipe.cache._item_errors import batch_step_error, compute_uncached, run_batch, run_suffix
from fastpipe.cache._pickling import pickle_state, unpickle_state
from fastpipe.profiling import annotate
from fastpipe.profiling.nvtx_ranges import wrap_chain
from fastpipe.runtime._fork import renew_locks_after_fork
from fastpipe.transforms._per_crop import as_item_list, run_per_crop
from fastpipe.transforms._plan import build_plan

#: ``_lookup``'s answer for a slot with no cached entry (no tier had room, or not cached at all).
MISS = object()


class CachedReads(torch.utils.data.Dataset):
    """Base of the cache datasets: the chain split, the core, the shard and the read path (arguments:
    as ``CacheDataset``'s). Subclasses set ``fill_report`` and implement :meth:`_lookup` (index -> slot
    and entry) and :meth:`_slots` (indices -> slots, for prefetching). ``data_version`` grows at each
    ``set_data``."""

    data_version = 0

    def __init__(
        self,
        data: Sequence[dict] | torch.utils.data.Dataset,
        transform: Any,
        copy_cache: bool | None,
        budget: Any,
        persist_dir: str | Path | None,
        seed: int,
        disk_dir: str | Path | None,
        rank: int | None,
        world_size: int | None,
        even_divisible: bool,
        partition_seed: int,
        persist_key: str = "content",
        translate: bool = True,
    ) -> None:
        inputs, source = _inputs_of(data)
        if source is None:  # on the whole list, before sharding: every rank raises alike, none waits
            check_items(inputs, flatten(transform))
        inputs, self.shard = distributed.shard_inputs(
            inputs, rank, world_size, partition_seed, even_divisible
        )
        self.core = self._plan_core(
            transform, translate, inputs, source, budget, persist_dir, disk_dir, persist_key
        )
        self._core_finalizer = weakref.finalize(self, self.core.close)  # frees a temporary disk tier
        distributed.check_device(self.core.device)
        # auto: MONAI's copy (its default copy_cache=True) where the random part runs per item on the
        # entry itself; the batched crop cuts fresh crops and copies the other values instead
        self.copy_cache = bool(self.suffix) and not self.batched if copy_cache is None else bool(copy_cache)
        self.seed = seed
        self._inputs = inputs
        self._local = threading.local()
        self._suffix_lock = threading.Lock()
        renew_locks_after_fork(self)  # a child forked mid-read (a DataLoader worker) gets a free lock
        self.misses = 0
        self.fill_report = FillReport()
        seed_suffix(self.suffix, seed, getattr(self, "_keep_random_state", frozenset()))
        self._worker_seed: int | None = (
            None  # the torch DataLoader worker seed the suffix was last reseeded from
        )

    def _plan_core(
        self,
        transform: Any,
        translate: bool,
        inputs: list[Any],
        source: Any,
        budget: Any,
        persist_dir: str | Path | None,
        disk_dir: str | Path | None,
        persist_key: str,
    ) -> CacheCore:
        """Plan the chain (``self.plan``, ``self.suffix``) and make the core of its cached prefix."""
        self.plan = build_plan(transform, translate, inputs if source is None else None)
        # NVTX ranges: while enabled, or where the chain came wrapped (planned on the transforms inside)
        wrapped = any(unwrapped(t) is not t for t in flatten(transform))
        prefix = wrap_chain(self.plan.prefix, force=wrapped)
        self.suffix = wrap_chain(self.plan.suffix, force=wrapped)
        check_device_points(prefix)
        if source is not None:
            prefix = [FromDataset(source), *prefix]
        return CacheCore(
            prefix, budget=budget, persist_dir=persist_dir, disk_dir=disk_dir, persist_key=persist_key
        )

    # --- the hooks a dataset implements --------------------------------------------------------------

    def _lookup(self, index: int) -> tuple[int, Any]:
        """``(slot, entry)`` of ``index``; ``entry`` is :data:`MISS` when the slot has no cached entry."""
        raise NotImplementedError

    def _slots(self, indices: Sequence[int]) -> list[int]:
        """The slots of ``indices``."""
        raise NotImplementedError

    def _lookups(self, indices: Sequence[int]) -> list[tuple[int, Any]]:
        """``_lookup`` of each index, all from one window (a SmartCache holds its window over them)."""
        return [self._lookup(i) for i in indices]

    # --- reads -------------------------------------------------------------------------------------

    def cached_entry(self, index: int) -> Any:
        """The deterministic output of ``index`` (cached, or computed now): fresh dicts, shared tensors."""
        return self._entry(index)[1]

    def _entry(self, index: int, looked_up: tuple[int, Any] | None = None) -> tuple[int, Any]:
        """``(index in the data list, entry)`` of ``index``, both from one lookup (``looked_up``, else
        made now): a SmartCache swap between two lookups would otherwise name another item."""
        slot, entry = looked_up or self._lookup(index)
        name = self.input_index(slot)  # what errors call the item: its index in the data list given
        if entry is MISS:  # no tier had room for it (or it is not cached): computed per read
            self.misses += 1
            return name, compute_uncached(self.core, self._inputs[slot], name)
        return name, (deep_copy(entry) if self.copy_cache else entry)

    def data_index(self, index: int) -> int:
        """The index in the input data of ``index`` (differs once items were skipped, in a window, or
        on a rank's shard)."""
        return self.input_index(self._slots([index])[0])

    def input_index(self, slot: int) -> int:
        """The index in the data list given of ``slot`` (a position in this rank's shard, if sharded)."""
        return self.shard["indices"][slot] if self.shard else slot

    @property
    def batched(self) -> bool:
        """Whether reads of a batch start with the random suffix's one-call ``batch_call`` (the rest runs per crop)."""
        return bool(self.suffix) and callable(getattr(self.suffix[0], "batch_call", None))

    def __getitem__(self, index: int | slice | Sequence[int]) -> Any:
        """Item ``index`` (negative counts from the end); a slice or a list of indices gives a
        ``torch.utils.data.Subset`` of this dataset, as MONAI's datasets do."""
        if isinstance(index, slice):
            return torch.utils.data.Subset(self, range(*index.indices(len(self))))
        if isinstance(index, Sequence) and not isinstance(index, str):
            return torch.utils.data.Subset(self, index)
        with self._suffix_lock:  # the shared suffix's random state is advanced by one thread at a time
            self._reseed_in_worker()
            slot, entry = self._entry(index)
            return run_suffix(self.suffix, entry, slot)

    def __getitems__(self, indices: Sequence[int]) -> Any:
        """A batch as a list of items (crops) for any collate function; see :func:`as_item_list`."""
        with self._suffix_lock:
            self._reseed_in_worker()
            return as_item_list(self._fetch(list(indices), self.suffix))

    def _rebuild(self, data: Any, init_kwargs: dict[str, Any]) -> None:
        """``set_data``'s common part: free every entry, then build on ``data`` with ``init_kwargs`` (the
        arguments given at construction): shard, plan, core and fill, as a new dataset would.

        The random suffix goes on with its random state (as MONAI's ``set_data`` leaves its transforms)
        when the new plan's suffix has the same steps; a persistent cache serves only entries keyed by
        the new items' own files and values.
        """
        self._check_new_data(data)
        # what the new build would refuse, refused before the old entries are freed: a dataset whose
        # set_data raised keeps its cache, instead of recomputing every item on every read from then on
        _inputs_of(data)
        check_items(list(data), flatten(init_kwargs.get("transform")))
        suffix, local = self.suffix, self._local
        # counted before and after: a loader's run ahead that read any of it is stale (ThreadDataLoader)
        version = self.data_version = self.data_version + 1
        self._core_finalizer()  # the old entries (disk tier files included) go before the new fill
        # the user's own transform objects come back in the new plan: not reseeded (MONAI's set_data)
        self._keep_random_state = frozenset(id(unwrapped(t)) for t in suffix)
        try:
            type(self).__init__(self, data, **init_kwargs)
        finally:
            del self._keep_random_state
        self.data_version = version + 1
        if [type(t) for t in self.suffix] == [type(t) for t in suffix]:
            self.suffix, self._local = suffix, local

    def _check_new_data(self, data: Any) -> None:
        """``TypeError`` unless ``set_data`` can take ``data``: checked before anything is freed."""
        if not isinstance(data, Sequence) or isinstance(data, (str, bytes, torch.utils.data.Dataset)):
            raise TypeError(
                f"set_data() takes a list of items (MONAI's set_data takes a Sequence), got "
                f"{type(data).__name__}; build a new dataset on a map-style dataset"
            )
        if self.core.prefix and isinstance(self.core.prefix[0], FromDataset):
            raise TypeError(
                "set_data() on a dataset built on a map-style dataset: its persistent entries are keyed by "
                "index, not by what the new items hold; build a new dataset instead"
            )

    def _after_fork_in_child(self) -> None:
        """In a forked child: a new lock (another thread of the parent may have held it at the fork)."""
        self._suffix_lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        """What a worker process started by ``spawn``/``forkserver`` gets: the cache, not its locks."""
        return pickle_state(self, drop=("_core_finalizer",))

    def __setstate__(self, state: dict[str, Any]) -> None:
        unpickle_state(self, state)
        self._local = threading.local()  # this process's threads make their own suffix copies
        # frees nothing: a shallow copy (copy.copy) shares the owner's core, which only the owner closes
        self._core_finalizer = weakref.finalize(self, _keep_core)

    def _reseed_in_worker(self) -> None:
        """In a torch ``DataLoader`` worker process, reseed the suffix from the seed torch gives that
        worker (a new base seed each epoch, plus the worker's id), once per worker start, as MONAI's
        ``DataLoader`` does through its ``worker_init_fn``: else every worker of every epoch would
        replay the draws of the parent's copy, giving the same crops each epoch."""
        info = torch.utils.data.get_worker_info()
        if info is not None and info.seed != self._worker_seed:
            self._worker_seed = info.seed
            seed_suffix(self.suffix, info.seed % 2**62)

    def fetch_seeded(self, indices: Sequence[int], seed: int) -> Any:
        """Like ``__getitems__`` with this thread's copy of the suffix reseeded from ``seed`` first."""
        suffix = self._thread_suffix()
        seed_suffix(suffix, seed)
        return self._fetch(list(indices), suffix)

    def _fetch(self, indices: list[int], suffix: list[Any]) -> Any:
        with annotate("cache_get", "cache"):
            looked_up = [self._entry(i, lk) for i, lk in zip(indices, self._lookups(indices), strict=True)]
        slots, entries = [s for s, _ in looked_up], [e for _, e in looked_up]
        with annotate("random_suffix", "random"):
            if self.batched and suffix:
                batch = run_batch(suffix[0], entries, slots)
                return run_per_crop(
                    batch, suffix[1:], lambda err, t: batch_step_error(err, t, entries, slots)
                )
            return [run_suffix(suffix, e, slot) for slot, e in zip(slots, entries, strict=True)]

    def _thread_suffix(self) -> list[Any]:
        suffix = getattr(self._local, "suffix", None)
        if suffix is None:
            suffix = self._local.suffix = [thread_copy(t) for t in self.suffix]
        return suffix

    def prefetch(self, indices: Sequence[int]) -> None:
        """Start moving the host-tier entries of ``indices`` to the device ahead of use (no-op on CPU)."""
        self.core.prefetch(self._slots(indices))

    def describe(self) -> str:
        """The plan: which steps are cached (on which device), batched, fused, run per item, and why,
        with the cached bytes per entry by tensor under its first line."""
        head, _, rest = self.plan.describe(self.core.device).partition("\n")
        return f"{head}\n{describe_bytes(self.core.entry_bytes.summary())}\n{rest}"

    def stats(self) -> dict[str, Any]:
        """Items, cached items and bytes per tier, fill seconds, hits, misses, skipped items."""
        out = self.core.stats()
        out.update(
            length=len(self),
            fill_s=self.fill_report.seconds,
            # by index in the data list given (fill_report.skipped holds shard positions, on a shard)
            skipped={self.input_index(s): m for s, m in self.fill_report.skipped.items()},
            misses=self.misses,
            nbytes=self.core.nbytes,
        )
        return out


def _keep_core() -> None:
    """The finalizer of a copy made by pickling or ``copy``: the entries go with the last reference."""


def warn_no_room(count: int, core: CacheCore, stacklevel: int) -> None:
    """The one warning for entries that fit no cache tier (``stacklevel`` as seen from the caller)."""
    if count:
        warnings.warn(
            f"{count} item(s) fit no cache tier under budget {core.budgets}; "
            "they are recomputed on every read",
            RuntimeWarning,
            stacklevel=stacklevel + 1,
        )


def _inputs_of(data: Any) -> tuple[list[Any], Any]:
    if isinstance(data, Mapping):  # not a map-style dataset: data[0] is a KeyError that names nothing
        raise TypeError(
            f"data is a {type(data).__name__} with keys {list(data)[:4]}, not a list of items: pass "
            f"[item] for one item; the data list needs {ITEM_SHAPE}"
        )
    if isinstance(data, Sequence) and not isinstance(data, (str, bytes, torch.utils.data.Dataset)):
        inputs, source = list(data), None  # a list, or a list-like (UserList, OmegaConf's ListConfig)
    elif hasattr(data, "__getitem__") and hasattr(data, "__len__"):
        inputs, source = list(range(len(data))), data
    else:
        raise TypeError(f"data must be a list of dicts or a map-style dataset, got {type(data).__name__}")
    if not inputs:
        raise ValueError("data is empty: CacheDataset needs at least one item")
    return inputs, source
