"""The arms of the training experiment: how training and validation data reach the model.

Every arm gets the same split, the same seed, the same chain (the tutorial's prefix and random
suffix) and the same thread count; validation always runs on cached volumes.

- ``regular``: MONAI ``Dataset`` + ``monai.data.DataLoader`` (torch's, with a per-worker reseed)
  with worker processes (no cache), as the tutorial's regular arm.
- ``monai-fast``: MONAI's fast recipe: ``CacheDataset`` (``ToDeviced`` on a GPU, indices
  precomputed, ``copy_cache=False``) + MONAI's ``ThreadDataLoader``.
- ``fastpipe``: ``fp.CacheDataset`` (GPU tier on a GPU) + ``fp.ThreadDataLoader`` with the batched suffix.
- ``fastpipe-smartcache``: ``fp.SmartCacheDataset`` over half the training volumes, replace rate 0.25.
- ``fastpipe-smartcache-persist``: the same over a persistent cache (``persist_dir``) in a new empty
  temporary folder, removed when the arm closes: an item's first entry into the window runs the prefix
  and writes its entry; every later entry reads it back instead of decoding and resampling again.
  Not one of the published arms: the configuration for a machine whose cores the training keeps busy.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from benchmarks.train_recipe import BG_KEY, FG_KEY, KEYS, TrainConfig, prefix
from benchmarks.train_suffix import fastpipe_suffix, monai_suffix
from benchmarks.workload import smart_cache_loader

# the arms of the published experiments (the tutorial's regular and fast, Clara's batch-by-transform
# and SmartCache); ARMS adds one that only shows a configuration
PUBLISHED_ARMS = ("regular", "monai-fast", "fastpipe", "fastpipe-smartcache")
ARMS = (*PUBLISHED_ARMS, "fastpipe-smartcache-persist")
SMART_FRACTION, REPLACE_RATE = 0.5, 0.25


@dataclass
class Arm:
    """A ready training loader, the cached validation volumes and what an epoch must yield."""

    loader: Any
    val_volumes: list[dict[str, Any]]
    crops_per_epoch: int
    close: Callable[[], None] = lambda: None
    info: dict[str, Any] = field(default_factory=dict)


def build(arm: str, train: list[dict], val: list[dict], cfg: TrainConfig, device: torch.device) -> Arm:
    """Build arm ``arm`` (one of :data:`ARMS`) on ``train``/``val`` for ``device``."""
    builders = {
        "regular": _regular,
        "monai-fast": _monai_fast,
        "fastpipe": _fastpipe,
        "fastpipe-smartcache": _fastpipe_smartcache,
        "fastpipe-smartcache-persist": _fastpipe_smartcache_persist,
    }
    if arm not in builders:
        raise ValueError(f"unknown arm {arm!r}; expected one of {list(ARMS)}")
    return builders[arm](train, val, cfg, device)


def _monai_prefix(cfg: TrainConfig, device: torch.device) -> list[Any]:
    from monai import transforms as M

    chain = [*prefix(M, cfg), M.EnsureTyped([*KEYS, FG_KEY, BG_KEY], track_meta=False)]
    if device.type == "cuda":
        chain.append(M.ToDeviced(KEYS, device=str(device)))
    return chain


def _monai_val(val: list[dict], cfg: TrainConfig, device: torch.device) -> list[dict[str, Any]]:
    from monai.data import CacheDataset
    from monai.transforms import Compose

    ds = CacheDataset(val, Compose(_monai_prefix(cfg, device)), num_workers=cfg.threads, progress=False)
    return [ds[i] for i in range(len(ds))]


def _regular(train: list[dict], val: list[dict], cfg: TrainConfig, device: torch.device) -> Arm:
    from monai.data import DataLoader, Dataset
    from monai.transforms import Compose

    chain = Compose([*_monai_prefix(cfg, torch.device("cpu")), *monai_suffix(cfg)]).set_random_state(cfg.seed)
    loader = DataLoader(  # torch's DataLoader; MONAI's subclass reseeds the transforms in every worker
        Dataset(train, chain),
        batch_size=cfg.batch_size,
        shuffle=True,
        num_workers=cfg.threads,
        persistent_workers=True,
        pin_memory=device.type == "cuda",
        generator=torch.Generator().manual_seed(cfg.seed),
    )
    info = {"workers": cfg.threads, "cache": "none"}
    return Arm(loader, _monai_val(val, cfg, device), len(train) * cfg.num_samples, info=info)


def _monai_fast(train: list[dict], val: list[dict], cfg: TrainConfig, device: torch.device) -> Arm:
    from monai.data import CacheDataset, ThreadDataLoader
    from monai.transforms import Compose

    chain = Compose([*_monai_prefix(cfg, device), *monai_suffix(cfg)]).set_random_state(cfg.seed)
    ds = CacheDataset(train, chain, cache_rate=1.0, num_workers=cfg.threads, copy_cache=False, progress=False)
    loader = ThreadDataLoader(ds, batch_size=cfg.batch_size, shuffle=True, num_workers=0)
    info = {"cache": "monai", "to_device": device.type == "cuda"}
    return Arm(loader, _monai_val(val, cfg, device), len(ds) * cfg.num_samples, info=info)


def _fastpipe_prefix(cfg: TrainConfig, device: torch.device) -> list[Any]:
    from fastpipe import transforms as T

    chain = prefix(T, cfg)
    if device.type == "cuda":
        chain.append(T.ToDeviced([*KEYS, FG_KEY, BG_KEY], device=str(device)))
    return chain


def _fastpipe_val(val: list[dict], cfg: TrainConfig, device: torch.device) -> list[dict[str, Any]]:
    import fastpipe as fp

    ds = fp.CacheDataset(val, _fastpipe_prefix(cfg, device), num_workers=cfg.threads, progress=False)
    return [ds[i] for i in range(len(ds))]


def _fastpipe(train: list[dict], val: list[dict], cfg: TrainConfig, device: torch.device) -> Arm:
    import fastpipe as fp

    chain = [*_fastpipe_prefix(cfg, device), *fastpipe_suffix(cfg)]
    ds = fp.CacheDataset(train, chain, num_workers=cfg.threads, progress=False, seed=cfg.seed)
    loader = fp.ThreadDataLoader(
        ds, batch_size=cfg.batch_size, shuffle=True, seed=cfg.seed, persistent_workers=True
    )
    info = {"cache": ds.stats()["bytes"], "batched": ds.batched}
    return Arm(loader, _fastpipe_val(val, cfg, device), len(ds) * cfg.num_samples, loader.close, info)


def _fastpipe_smartcache(
    train: list[dict], val: list[dict], cfg: TrainConfig, device: torch.device, persist_dir: str | None = None
) -> Arm:
    cache_num = max(1, int(len(train) * SMART_FRACTION))
    chain = [*_fastpipe_prefix(cfg, device), *fastpipe_suffix(cfg)]
    ds, loader, close = smart_cache_loader(
        train, chain, cache_num, REPLACE_RATE, cfg.threads, cfg.batch_size, cfg.seed, persist_dir
    )

    info = {"cache_num": cache_num, "replace_rate": REPLACE_RATE, "batched": ds.batched}
    return Arm(loader, _fastpipe_val(val, cfg, device), cache_num * cfg.num_samples, close, info)


def _fastpipe_smartcache_persist(
    train: list[dict], val: list[dict], cfg: TrainConfig, device: torch.device
) -> Arm:
    import shutil
    import tempfile

    folder = tempfile.mkdtemp(prefix="fastpipe-bench-persist-")  # empty: the first fill computes every entry
    try:
        arm = _fastpipe_smartcache(train, val, cfg, device, persist_dir=folder)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    close = arm.close

    def close_and_remove() -> None:
        try:
            close()
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    arm.close = close_and_remove
    arm.info.update(persist_dir=folder, persist="a new empty folder, removed when the arm closes")
    return arm
