"""The rows of the spleen experiment matrix: each builds a dataset and a loader on the same volumes.

Main rows run the tutorial chain (crop, then the tutorial suffix); rows named ``*-crop-only`` stop at
the crop (``Config.tutorial=False``).

A row is a function ``(data, cfg) -> Row``. The harness times the fill (the function itself),
then iterates ``row.loader`` epoch after epoch. Every row yields batches of ``cfg.batch_size``
volumes x ``NUM_SAMPLES`` crops of ``PATCH`` voxels, image and label.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from benchmarks import workload
from benchmarks.row_types import Config, Row, RowSkipped


def regular(data, cfg: Config) -> Row:
    """MONAI's "regular" baseline: a MONAI Dataset + DataLoader with worker processes, no cache.

    MONAI's ``DataLoader`` (torch's, plus ``worker_init_fn``) reseeds the chain in every worker from
    the seeded generator: with torch's alone every worker forks the same random state and draws the
    same crops as the others.
    """
    from monai.data import DataLoader, Dataset, list_data_collate
    from monai.transforms import Compose

    ds = Dataset(data, Compose(workload.monai_chain(tutorial=cfg.tutorial)).set_random_state(cfg.seed))
    loader = DataLoader(
        ds,
        batch_size=cfg.batch_size,
        shuffle=True,
        num_workers=cfg.threads,
        collate_fn=list_data_collate,
        persistent_workers=True,
        generator=torch.Generator().manual_seed(cfg.seed),
    )

    def close() -> None:
        # persistent workers live as long as the loader's iterator: end (and reap) them here; their
        # memory is read just before (measure.peak_rss_bytes sums the live workers' peaks)
        it = getattr(loader, "_iterator", None)
        if it is not None:
            it._shutdown_workers()

    return Row(loader, len(ds), close=close, info={"workers": cfg.threads})


def monai_cache(data, cfg: Config, copy_cache: bool = False) -> Row:
    """MONAI 1.6 best practice: CacheDataset(copy_cache=False) + indices + ThreadDataLoader."""
    from monai.data import CacheDataset, ThreadDataLoader
    from monai.transforms import Compose

    chain = workload.monai_chain(device=_device_or_none(cfg), tutorial=cfg.tutorial)
    ds = CacheDataset(
        data,
        Compose(chain).set_random_state(cfg.seed),
        cache_rate=1.0,
        num_workers=cfg.threads,
        copy_cache=copy_cache,
        progress=False,
    )
    loader = ThreadDataLoader(
        ds, batch_size=cfg.batch_size, shuffle=True, num_workers=0, generator=_seeded(cfg)
    )
    return Row(loader, len(ds), info={"copy_cache": copy_cache})


def monai_cache_default(data, cfg: Config) -> Row:
    """MONAI's CacheDataset with its defaults (``copy_cache=True``)."""
    return monai_cache(data, cfg, copy_cache=True)


def monai_smartcache(data, cfg: Config) -> Row:
    """MONAI's SmartCacheDataset at cache_num = fraction of the data, with ThreadDataLoader."""
    from monai.data import SmartCacheDataset, ThreadDataLoader
    from monai.transforms import Compose

    cache_num = max(1, int(len(data) * cfg.smart_fraction))
    ds = SmartCacheDataset(
        data,
        Compose(workload.monai_chain(device=_device_or_none(cfg), tutorial=cfg.tutorial)).set_random_state(
            cfg.seed
        ),
        replace_rate=cfg.replace_rate,
        cache_num=cache_num,
        num_init_workers=cfg.threads,
        num_replace_workers=cfg.threads,
        copy_cache=False,
        progress=False,
    )
    ds.start()
    loader = _MonaiSmartLoader(ThreadDataLoader(ds, batch_size=cfg.batch_size, shuffle=True), ds)
    return Row(loader, cache_num, close=ds.shutdown, info={"cache_num": cache_num})


def _seeded(cfg: Config) -> torch.Generator:
    """The generator of a MONAI loader: with ``num_workers=0`` MONAI's ``DataLoader`` reseeds the chain
    from it (else from torch's unseeded global generator, overriding ``set_random_state``), and its
    shuffle draws from it."""
    return torch.Generator().manual_seed(cfg.seed)


class _MonaiSmartLoader:
    """MONAI leaves ``update_cache()`` to the user: call it at each epoch end, as its tutorial does."""

    def __init__(self, loader, ds):
        self.loader, self.ds, self._epochs = loader, ds, 0

    def __iter__(self):
        if self._epochs:
            self.ds.update_cache()
        self._epochs += 1
        return iter(self.loader)


def fastpipe_cache(data, cfg: Config, batched: bool = True) -> Row:
    """fastpipe CacheDataset + ThreadDataLoader; ``batched`` = batch-by-transform crops on."""
    import fastpipe as fp

    chain = workload.fastpipe_chain(device=_device_or_none(cfg), tutorial=cfg.tutorial)
    if not batched:
        i = next(i for i, t in enumerate(chain) if type(t).__name__ == "RandCropByPosNegLabeld")
        chain[i] = _PerItem(chain[i])
    ds = fp.CacheDataset(data, chain, cache_rate=1.0, num_workers=cfg.threads, progress=False, seed=cfg.seed)
    loader = fp.ThreadDataLoader(
        ds, batch_size=cfg.batch_size, shuffle=True, seed=cfg.seed, persistent_workers=True
    )
    return Row(loader, len(ds), close=loader.close, info={"batched_crops": batched, "cache": ds.stats()})


class _PerItem:
    """Hide a transform's ``batch_call``: the loader then crops volume by volume and collates."""

    random = True

    def __init__(self, inner) -> None:
        self.inner = inner

    def __call__(self, data):
        return self.inner(data)

    def set_random_state(self, seed=None, state=None):
        self.inner.set_random_state(seed)
        return self


def fastpipe_cache_per_item(data, cfg: Config) -> Row:
    """fastpipe CacheDataset with batch-by-transform off (per-volume crops + collate)."""
    return fastpipe_cache(data, cfg, batched=False)


def fastpipe_gpu_cache(data, cfg: Config) -> Row:
    """ToDevice-then-cache on the GPU with batched GPU crops (GPU only)."""
    if not torch.cuda.is_available():
        raise RowSkipped("needs a CUDA GPU; none on this machine")
    return fastpipe_cache(data, Config(**{**cfg.__dict__, "device": cfg.gpu_device}))


def fastpipe_smartcache(data, cfg: Config) -> Row:
    """fastpipe SmartCacheDataset at cache_num = fraction of the data, replace_rate 0.25."""

    cache_num = max(1, int(len(data) * cfg.smart_fraction))
    chain = workload.fastpipe_chain(device=_device_or_none(cfg), tutorial=cfg.tutorial)
    _, loader, close = workload.smart_cache_loader(
        data, chain, cache_num, cfg.replace_rate, cfg.threads, cfg.batch_size, cfg.seed
    )
    return Row(loader, cache_num, close=close, info={"cache_num": cache_num})


def dali(data, cfg: Config) -> Row:
    """NVIDIA DALI: numpy reader over the preprocessed volumes, random_object_bbox + roi_random_crop."""
    from benchmarks import dali_peer

    return dali_peer.build(data, cfg)


def crop_only(row: Callable[..., Row]) -> Callable[..., Row]:
    """``row`` with the chain stopped at the crop (no tutorial suffix)."""

    def build(data, cfg: Config) -> Row:
        return row(data, Config(**{**cfg.__dict__, "tutorial": False}))

    build.__doc__ = f"{row.__doc__} Crop only."
    return build


def _device_or_none(cfg: Config) -> str | None:
    return cfg.device if cfg.device != "cpu" else None


ROWS: dict[str, Callable[..., Row]] = {
    "regular": regular,
    "monai-cache": monai_cache,
    "monai-cache-default": monai_cache_default,
    "monai-smartcache": monai_smartcache,
    "fastpipe-cache": fastpipe_cache,
    "fastpipe-cache-per-item": fastpipe_cache_per_item,
    "fastpipe-smartcache": fastpipe_smartcache,
    "fastpipe-gpu-cache": fastpipe_gpu_cache,
    "dali": dali,
    "monai-cache-crop-only": crop_only(monai_cache),
    "fastpipe-cache-crop-only": crop_only(fastpipe_cache),
}
#: Which MONAI row each fastpipe row is matched against (same work, same settings).
MATCHED = {
    "fastpipe-cache": "monai-cache",
    "fastpipe-cache-per-item": "monai-cache",
    "fastpipe-smartcache": "monai-smartcache",
    "fastpipe-gpu-cache": "monai-cache",
    "fastpipe-cache-crop-only": "monai-cache-crop-only",
}
