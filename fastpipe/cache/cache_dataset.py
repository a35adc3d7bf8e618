"""``CacheDataset``: cache the deterministic prefix of a chain once, run only the random suffix per read."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from fastpipe import distributed
from fastpipe.cache._checks import check_items_left, check_monai_only
from fastpipe.cache._fill import FillReport, run_fill
from fastpipe.cache._reads import MISS, CachedReads, warn_no_room
from fastpipe.cache._traced_reads import TracedReads
from fastpipe.profiling import annotate

log = logging.getLogger(__name__)


class CacheDataset(TracedReads, CachedReads):
    """A map-style dataset that caches the output of the chain's deterministic prefix.

    The chain is split at its first random transform (:func:`fastpipe.transforms.split_chain`). The
    prefix runs once per item during a threaded fill; a read takes the cached entry, never a deep
    copy, and runs the random suffix on it. When the prefix holds ``ToDeviced`` or
    ``EnsureTyped(device=...)`` (fastpipe's or MONAI's) cached items live on that device, and the
    prefix transforms after it run there during the fill.

    Args:
        data: a list (or list-like sequence) of item dicts (MONAI style), or a map-style
            ``torch.utils.data.Dataset`` of deterministic items (its
            outputs are then the cached prefix and ``transform`` runs after them).
        transform: a fastpipe/MONAI ``Compose``, a list of callables, or one callable (default ``None``).
        cache_rate: fraction of items to cache, in ``[0, 1]`` (default 1.0); the rest are computed per read.
        cache_num: at most this many items cached (default ``None``: no extra limit).
        num_workers: fill threads (default ``None``: one per core; 1 fills in the calling thread).
        progress: show a fill progress bar (default ``True``).
        copy_cache: deep-copy the cached entry on every read. Default ``None``: when the random part
            runs per item on the entry itself, as MONAI's default ``copy_cache=True`` does (several MONAI
            transforms write into their input, and an unfired flip hands the entry itself out); not when
            it starts with the batched crop, which cuts fresh crops and copies the other values. ``False``
            never copies: faster, but then no transform after the cache, nor the training code, may
            edit what a read returns in place, or later epochs see the edit.
        budget: byte budgets per tier, ``{"cuda": "20GiB", "host": "64GiB", "disk": "1TB"}``, or one
            size for the first tier (default ``None``: unlimited, no disk tier).
        persist_dir: folder of a persistent cache reused across runs (default ``None``). An entry is
            reused only when the item's source files, every value of the item, the prefix's fingerprint
            (parameters, code, closures and defaults of each transform; see ``docs/persistent-cache.md``)
            and the fastpipe version are unchanged. A prefix transform that cannot be fingerprinted
            raises ``ValueError`` naming it. A folder that cannot be written warns once and the cache
            goes on in memory; a damaged or foreign entry warns, naming the file, and is recomputed.
        on_error: ``"raise"`` (default) or ``"skip"`` an item whose prefix fails during the fill. A
            raised :class:`~fastpipe.cache.errors.CacheFillError` names the item index and the file that
            failed, and is also an instance of the cause's type (``except ValueError`` works).
        seed: seeds the random suffix (transform ``j`` gets a hash of ``seed`` and ``j``; default ``None``: drawn from
            torch's global generator when the dataset is made, so ``torch.manual_seed`` decides it).
        disk_dir: where the disk tier makes its own ``fastpipe-tier-*`` folder, removed on close
            (default ``None``: the system's temporary folder).
        rank, world_size: cache only this rank's shard (:mod:`fastpipe.distributed`; default ``None``:
            from ``torch.distributed`` when initialised, else no partition). Pass ``world_size=1`` for
            data that is already a shard. On several ranks the fill ends with a barrier that raises
            on every rank if one rank's fill failed; ``shard`` holds the shard's indices.
        even_divisible: pad shards by repeating items so all ranks get as many (default ``True``).
        partition_seed: the seed, shared by all ranks, of the partition (default 0).
        persist_key: how source files enter a persistent key (default ``"content"``: a blake2b hash of
            their bytes, one extra read of each file per run; ``"stat"``: size, mtime, ctime and inode,
            no read, trusts the filesystem's ctime).
        translate: swap each MONAI transform of ``transform`` that fastpipe implements with the same
            semantics for fastpipe's (default ``True``; logged once at INFO). ``False`` keeps them.
        as_contiguous, hash_as_key, hash_func, runtime_cache: MONAI's, taken so that a MONAI script runs;
            they would change only memory and timing, not what is read. ``hash_as_key=True`` and a true
            ``runtime_cache`` warn that fastpipe keeps one entry per item and fills the cache when made.

    :meth:`describe` prints the plan: what is cached where, what is batched, what runs per item and
    why. Any loader works: fastpipe's ``ThreadDataLoader`` takes a batched suffix's collated dict as it
    is; ``__getitems__`` returns per-crop items that torch's and MONAI's collate functions stack
    (``fastpipe.list_data_collate`` hands back the collated dict without a copy).

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
        copy_cache: bool | None = None,
        budget: Any = None,
        persist_dir: str | Path | None = None,
        on_error: str = "raise",
        seed: int | None = None,
        disk_dir: str | Path | None = None,
        rank: int | None = None,
        world_size: int | None = None,
        even_divisible: bool = True,
        partition_seed: int = 0,
        persist_key: str = "content",
        translate: bool = True,
        as_contiguous: bool = True,
        hash_as_key: bool = False,
        hash_func: Any = None,
        runtime_cache: Any = False,
    ) -> None:
        if not hasattr(self, "core"):  # once, when made (not again at each set_data)
            check_monai_only(hash_as_key, runtime_cache)
        if seed is None:  # drawn once: set_data() keeps it, as MONAI's transforms keep their state
            seed = int(torch.randint(0, 2**62, (1,)).item())
        self._init_kwargs = {k: v for k, v in locals().items() if k not in ("self", "data", "__class__")}
        shard = (rank, world_size, even_divisible, partition_seed)
        super().__init__(
            data, transform, copy_cache, budget, persist_dir, seed, disk_dir, *shard, persist_key, translate
        )
        self._keep = list(range(len(self._inputs)))
        self.uncached_no_room = 0
        n_cache = _cache_count(len(self._inputs), cache_rate, cache_num)
        self.fill_report = distributed.guarded_fill(
            lambda: self._fill(list(range(n_cache)), num_workers, progress, on_error),
            self.shard is not None,
            agree=self.shard and self.shard["fingerprint"],
        )

    def _fill(self, slots: list[int], num_workers: int | None, progress: bool, on_error: str) -> FillReport:
        def job(slot: int) -> None:
            if self.core.put(slot, self.core.compute(self._inputs[slot], slot)) is None:
                self.uncached_no_room += 1

        with annotate("cache_fill", "cache"):
            report = run_fill(
                slots,
                job,
                self._inputs.__getitem__,
                num_workers,
                progress,
                on_error,
                index_of=self.input_index,
            )
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
        warn_no_room(self.uncached_no_room, self.core, stacklevel=3)
        return report

    def __len__(self) -> int:
        return len(self._keep)

    def _lookup(self, index: int) -> tuple[int, Any]:
        if not -len(self._keep) <= index < len(self._keep):
            raise IndexError(f"index {index} out of range for a CacheDataset of {len(self._keep)} items")
        slot = self._keep[index]
        return slot, (self.core.get(slot) if slot in self.core else MISS)

    def _slots(self, indices: Sequence[int]) -> list[int]:
        return [self._keep[i] for i in indices]

    def set_data(self, data: Sequence[dict]) -> None:
        """Replace the data list and compute the cache for it, as MONAI's ``set_data`` does.

        Every entry of the old data is freed first (device, host and disk tiers); the new list is
        sharded, checked, planned and filled with the arguments given at construction (``cache_rate``
        and ``cache_num`` apply to its length). Call it between epochs, not during reads.

        Raises:
            TypeError: ``data`` is not a list of items (or holds a path where the chain reads keys), or
                this dataset was built on a map-style dataset.
            ValueError: ``data`` is empty.

        A refused list leaves the dataset as it was, its cache included.
        """
        self._rebuild(data, self._init_kwargs)

    def close(self) -> None:
        """Free the cache (idempotent)."""
        self.core.close()

    def __repr__(self) -> str:
        s = self.stats()
        tiers = ", ".join(f"{t}: {s['items'][t]} items / {s['bytes'][t] / 2**20:.1f} MiB" for t in s["items"])
        suffix = ", ".join(type(t).__name__ for t in self.suffix) or "none"
        return (
            f"CacheDataset(len={len(self)}, device={s['device']}, {tiers}, fill={s['fill_s']:.2f}s, "
            f"hits={s['hits']}, misses={s['misses']}, random suffix=[{suffix}], plan: {self.plan.summary()})"
        )


def _cache_count(n: int, cache_rate: float, cache_num: int | None) -> int:
    if not 0.0 <= float(cache_rate) <= 1.0:
        hint = ""
        if float(cache_rate).is_integer():  # MONAI's third argument is cache_num, fastpipe's cache_rate
            hint = (
                f" (for at most {int(cache_rate)} cached items pass cache_num={int(cache_rate)} by keyword)"
            )
        raise ValueError(f"cache_rate must be in [0, 1], got {cache_rate}{hint}")
    if cache_num is not None and cache_num < 0:
        raise ValueError(f"cache_num must be >= 0 or None, got {cache_num}")
    count = int(n * cache_rate)
    return min(count, int(cache_num)) if cache_num is not None else count  # int(): MONAI's, for 2.0 or 2.5
