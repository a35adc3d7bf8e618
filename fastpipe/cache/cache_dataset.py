"""``CacheDataset``: cache the deterministic prefix of a chain once, run only the random suffix per read."""

from __future__ import annotations

import copy
import logging
import threading
import warnings
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from fastpipe import distributed
from fastpipe.cache._checks import check_device_points, check_items, check_items_left
from fastpipe.cache._core import CacheCore, FromDataset
from fastpipe.cache._fill import FillReport, run_fill
from fastpipe.profiling import annotate
from fastpipe.profiling.nvtx_ranges import wrap_chain
from fastpipe.transforms.compose import apply_transform, is_random, split_chain

log = logging.getLogger(__name__)


class CacheDataset(torch.utils.data.Dataset):
    """A map-style dataset that caches the output of the chain's deterministic prefix.

    The chain is split at its first random transform (:func:`fastpipe.transforms.split_chain`). The
    prefix runs once per item during a threaded fill; a read takes the cached entry, never a deep
    copy, and runs the random suffix on it. When the prefix holds ``ToDeviced`` or
    ``EnsureTyped(device=...)`` (fastpipe's or MONAI's) cached items live on that device, and the
    prefix transforms after it run there during the fill.

    Args:
        data: a list of item dicts (MONAI style), or a map-style dataset of deterministic items (its
            outputs are then the cached prefix and ``transform`` runs after them).
        transform: a fastpipe/MONAI ``Compose``, a list of callables, or one callable (default ``None``).
        cache_rate: fraction of items to cache, in ``[0, 1]`` (default 1.0); the rest are computed per read.
        cache_num: at most this many items cached (default ``None``: no extra limit).
        num_workers: fill threads (default ``None``: one per core; 1 fills in the calling thread).
        progress: show a fill progress bar (default ``True``).
        copy_cache: deep-copy the cached entry on every read (default ``False``). Only needed when a
            suffix transform mutates its input tensors in place; fastpipe's and MONAI's transforms
            write new tensors.
        budget: byte budgets per tier, ``{"cuda": "20GiB", "host": "64GiB", "disk": "1TB"}``, or one
            size for the first tier (default ``None``: unlimited, no disk tier).
        persist_dir: folder of a persistent cache reused across runs (default ``None``).
        on_error: ``"raise"`` (default) or ``"skip"`` an item whose prefix fails during the fill.
        seed: seeds the random suffix (transform ``j`` gets ``seed + j``; default 0).
        disk_dir: folder of the disk tier (default ``None``: a temporary folder).
        rank, world_size: cache only this rank's shard (:mod:`fastpipe.distributed`; default ``None``:
            from ``torch.distributed`` when initialised, else no partition). Pass ``world_size=1`` for
            data that is already a shard. On several ranks the fill ends with a barrier that raises
            on every rank if one rank's fill failed; ``shard`` holds the shard's indices.
        even_divisible: pad shards by repeating items so all ranks get as many (default ``True``).
        partition_seed: the seed, shared by all ranks, of the partition (default 0).

    With a batched suffix ``__getitems__`` returns an already-collated dict: use it with
    :class:`fastpipe.ThreadDataLoader`, or give a torch ``DataLoader`` ``collate_fn=list_data_collate``.

    Threading contract: reads may run from several threads. :meth:`fetch_seeded` gives each thread
    its own copy of the random suffix, so results depend only on ``(indices, seed)``.

    Example:
        >>> ds = CacheDataset([{"x": 1}, {"x": 2}], [lambda d: {**d, "y": d["x"] * 2}], progress=False)
        >>> ds[1]
        {'x': 2, 'y': 4}
    """

    def __init__(
        self,
        data: Sequence[dict] | torch.utils.data.Dataset,
        transform: Any = None,
        cache_rate: float = 1.0,
        cache_num: int | None = None,
        num_workers: int | None = None,
        progress: bool = True,
        copy_cache: bool = False,
        budget: Any = None,
        persist_dir: str | Path | None = None,
        on_error: str = "raise",
        seed: int = 0,
        disk_dir: str | Path | None = None,
        rank: int | None = None,
        world_size: int | None = None,
        even_divisible: bool = True,
        partition_seed: int = 0,
    ) -> None:
        inputs, source = _inputs_of(data)
        inputs, self.shard = distributed.shard_inputs(
            inputs, rank, world_size, partition_seed, even_divisible
        )
        prefix, self.suffix = (wrap_chain(part) for part in split_chain(transform))  # NVTX ranges when on
        check_device_points(prefix)
        if source is None:
            check_items(inputs, [*prefix, *self.suffix])
        if source is not None:
            prefix = [FromDataset(source), *prefix]
        self.core = CacheCore(prefix, budget=budget, persist_dir=persist_dir, disk_dir=disk_dir)
        self._core_finalizer = weakref.finalize(self, self.core.close)  # frees a temporary disk tier
        distributed.check_device(self.core.device)
        self.copy_cache = copy_cache
        self.seed = seed
        self._inputs = inputs
        self._keep = list(range(len(inputs)))
        self._local = threading.local()
        self._suffix_lock = threading.Lock()
        self.misses = 0
        self.uncached_no_room = 0
        _seed_suffix(self.suffix, seed)
        n_cache = _cache_count(len(inputs), cache_rate, cache_num)
        self.fill_report = distributed.guarded_fill(
            lambda: self._fill(list(range(n_cache)), num_workers, progress, on_error), self.shard is not None
        )

    def _fill(self, slots: list[int], num_workers: int | None, progress: bool, on_error: str) -> FillReport:
        def job(slot: int) -> None:
            if self.core.put(slot, self.core.compute(self._inputs[slot])) is None:
                self.uncached_no_room += 1

        with annotate("cache_fill", "cache"):
            report = run_fill(slots, job, self._inputs.__getitem__, num_workers, progress, on_error)
        if report.skipped:
            self._keep = [s for s in self._keep if s not in report.skipped]
            check_items_left(len(self._keep), report.skipped, len(self._inputs))
        log.info(
            "cache fill: %d items, %.1f MiB in %s, %.2f s",
            report.items,
            self.core.nbytes / 2**20,
            self.core.device,
            report.seconds,
        )
        if self.uncached_no_room:
            warnings.warn(
                f"{self.uncached_no_room} item(s) fit no cache tier under budget {self.core.store.budgets}; "
                "they are recomputed on every read",
                RuntimeWarning,
                stacklevel=3,
            )
        return report

    def __len__(self) -> int:
        return len(self._keep)

    def cached_entry(self, index: int) -> Any:
        """The deterministic output of item ``index`` (cached, or computed now): fresh dicts, shared tensors."""
        slot = self._keep[index]
        if slot in self.core:
            entry = self.core.get(slot)
            return copy.deepcopy(entry) if self.copy_cache else entry
        self.misses += 1
        return self.core.compute(self._inputs[slot])

    @property
    def batched(self) -> bool:
        """Whether reads of a batch use the random suffix's one-call ``batch_call`` path."""
        return len(self.suffix) == 1 and callable(getattr(self.suffix[0], "batch_call", None))

    def __getitem__(self, index: int) -> Any:
        with self._suffix_lock:  # the shared suffix's random state is advanced by one thread at a time
            return _run_suffix(self.suffix, self.cached_entry(index))

    def __getitems__(self, indices: Sequence[int]) -> Any:
        """A batch: one ``batch_call`` dict when the suffix supports it, else a list of per-item results."""
        with self._suffix_lock:
            return self._fetch(list(indices), self.suffix)

    def fetch_seeded(self, indices: Sequence[int], seed: int) -> Any:
        """Like ``__getitems__`` with this thread's copy of the suffix reseeded from ``seed`` first."""
        suffix = self._thread_suffix()
        _seed_suffix(suffix, seed)
        return self._fetch(list(indices), suffix)

    def _fetch(self, indices: list[int], suffix: list[Any]) -> Any:
        with annotate("cache_get", "cache"):
            entries = [self.cached_entry(i) for i in indices]
        with annotate("random_suffix", "random"):
            if self.batched and suffix:
                return suffix[0].batch_call(entries)
            return [_run_suffix(suffix, e) for e in entries]

    def _thread_suffix(self) -> list[Any]:
        suffix = getattr(self._local, "suffix", None)
        if suffix is None:
            suffix = self._local.suffix = [_thread_copy(t) for t in self.suffix]
        return suffix

    def prefetch(self, indices: Sequence[int]) -> None:
        """Start moving the host-tier entries of ``indices`` to the device ahead of use (no-op on CPU)."""
        self.core.prefetch([self._keep[i] for i in indices])

    def stats(self) -> dict[str, Any]:
        """Items, cached items and bytes per tier, fill seconds, hits, misses, skipped items."""
        out = self.core.stats()
        out.update(
            length=len(self),
            fill_s=self.fill_report.seconds,
            skipped=dict(self.fill_report.skipped),
            misses=self.misses,
            nbytes=self.core.nbytes,
        )
        return out

    def close(self) -> None:
        """Free the cache (idempotent)."""
        self.core.close()

    def __repr__(self) -> str:
        s = self.stats()
        tiers = ", ".join(f"{t}: {s['items'][t]} items / {s['bytes'][t] / 2**20:.1f} MiB" for t in s["items"])
        suffix = ", ".join(type(t).__name__ for t in self.suffix) or "none"
        return (
            f"CacheDataset(len={len(self)}, device={s['device']}, {tiers}, fill={s['fill_s']:.2f}s, "
            f"hits={s['hits']}, misses={s['misses']}, random suffix=[{suffix}])"
        )


def _inputs_of(data: Any) -> tuple[list[Any], Any]:
    if isinstance(data, (list, tuple)):
        inputs, source = list(data), None
    elif hasattr(data, "__getitem__") and hasattr(data, "__len__"):
        inputs, source = list(range(len(data))), data
    else:
        raise TypeError(f"data must be a list of dicts or a map-style dataset, got {type(data).__name__}")
    if not inputs:
        raise ValueError("data is empty: CacheDataset needs at least one item")
    return inputs, source


def _cache_count(n: int, cache_rate: float, cache_num: int | None) -> int:
    if not 0.0 <= float(cache_rate) <= 1.0:
        raise ValueError(f"cache_rate must be in [0, 1], got {cache_rate}")
    if cache_num is not None and cache_num < 0:
        raise ValueError(f"cache_num must be >= 0 or None, got {cache_num}")
    count = int(n * cache_rate)
    return min(count, cache_num) if cache_num is not None else count


def _seed_suffix(suffix: list[Any], seed: int) -> None:
    for j, t in enumerate(suffix):
        if is_random(t) and callable(getattr(t, "set_random_state", None)):
            t.set_random_state(seed + j)


def _thread_copy(transform: Any) -> Any:
    """A copy of a suffix transform for one thread: deep, or shallow when it holds locks and such.

    A shallow copy is independent once reseeded only if ``set_random_state`` installs a new random
    state object (fastpipe's ``torch.Generator``, MONAI's ``RandomState``) rather than reseeding it in place.
    """
    try:
        return copy.deepcopy(transform)
    except (TypeError, copy.Error):
        return copy.copy(transform)


def _run_suffix(suffix: list[Any], entry: Any) -> Any:
    for t in suffix:
        entry = apply_transform(t, entry)
    return entry
