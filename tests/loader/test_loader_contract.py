"""The contract every dataset x loader pair keeps: same seed -> same batches (whatever num_workers),
two epochs, ``len``, clean shutdown, exception propagation."""

from __future__ import annotations

import gc
import threading

import pytest
import torch
from _cache_helpers import CountingDet, RandAdd, items, rand_noise_list  # noqa: E402

from fastpipe import CacheDataset, ThreadDataLoader  # noqa: E402
from fastpipe.transforms import mark_random  # noqa: E402

N = 10


def _make_list(fail_at=None):
    return [
        {"x": torch.tensor(i), "image": torch.full((1, 2, 2, 2), float(i)), "fail": i == fail_at}
        for i in range(N)
    ]


def _failing(fail_at):
    @mark_random
    def maybe_fail(d):
        if d["x"] == fail_at:
            raise RuntimeError(f"suffix failed on x={fail_at}")
        return d

    return [maybe_fail] if fail_at is not None else []


def _cache(suffix_factory):
    def make(fail_at=None, seed=0):
        return CacheDataset(
            items(N), [CountingDet(), *suffix_factory(), *_failing(fail_at)], progress=False, seed=seed
        )

    return make


def _smart(fail_at=None, seed=0):
    from fastpipe.cache.smart_cache import SmartCacheDataset

    return SmartCacheDataset(
        items(N),
        [CountingDet(), RandAdd(), *_failing(fail_at)],
        cache_num=6,
        replace_rate=0.5,
        progress=False,
        seed=seed,
    )


def _monai_rand():
    from monai.transforms import RandScaleIntensityd

    return RandScaleIntensityd("image", factors=0.5, prob=1.0)


class _PlainList(torch.utils.data.Dataset):
    """A map-style dataset without ``fetch_seeded``: deterministic items, read per index."""

    def __init__(self, fail_at=None, seed=0):
        self.data = _make_list(fail_at)

    def __len__(self):
        return len(self.data)

    def __getitem__(self, i):
        if self.data[i]["fail"]:
            raise RuntimeError(f"suffix failed on x={i}")
        return self.data[i]


DATASETS = {
    "plain": _PlainList,
    "cache-per-item": _cache(lambda: [RandAdd()]),
    "cache-batched": _cache(lambda: [RandAdd(batched=True)]),
    "cache-multisample": _cache(lambda: [RandAdd(), rand_noise_list]),
    "cache-monai-suffix": _cache(lambda: [_monai_rand()]),
    "smartcache": _smart,
}


def _epochs(make_ds, num_workers, seed=3, n_epochs=2):
    ds = make_ds()
    loader = ThreadDataLoader(ds, batch_size=3, shuffle=True, num_workers=num_workers, seed=seed)
    out = [
        [{k: v.clone() for k, v in b.items() if isinstance(v, torch.Tensor)} for b in loader]
        for _ in range(n_epochs)
    ]
    if hasattr(ds, "shutdown"):
        ds.shutdown()
    return loader, out


def _same(a, b):
    return len(a) == len(b) and all(
        len(ea) == len(eb) and all(torch.equal(x[k], y[k]) for x, y in zip(ea, eb, strict=True) for k in x)
        for ea, eb in zip(a, b, strict=True)
    )


@pytest.mark.timeout(30)
@pytest.mark.parametrize("kind", list(DATASETS))
def test_same_seed_same_batches_whatever_num_workers(kind):
    _, ref = _epochs(DATASETS[kind], 0)
    _, again = _epochs(DATASETS[kind], 0)
    _, parallel = _epochs(DATASETS[kind], 3)
    assert _same(ref, again) and _same(ref, parallel)
    if kind != "plain":
        _, other = _epochs(DATASETS[kind], 0, seed=4)
        assert not _same(ref, other)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("kind", list(DATASETS))
@pytest.mark.parametrize("num_workers", [0, 2])
def test_two_epochs_and_len(kind, num_workers):
    loader, epochs = _epochs(DATASETS[kind], num_workers)
    n_items = len(loader.dataset)
    assert len(loader) == -(-n_items // 3)
    for batches in epochs:
        assert len(batches) == len(loader)
        xs = torch.cat([b["x"].flatten() for b in batches]).tolist()
        per_item = len(xs) // n_items
        assert len(xs) == per_item * n_items and len(set(xs)) == n_items  # every item once per epoch
    assert [b["x"].tolist() for b in epochs[0]] != [b["x"].tolist() for b in epochs[1]]  # reshuffled


def _other_threads(ds) -> set:
    """Threads a dataset owns itself (SmartCache's replacement workers), stopped by its ``shutdown``."""
    owned = {"fastpipe-replace", "fastpipe-smart"}
    return {t.ident for t in threading.enumerate() if t.name.startswith(tuple(owned))}


@pytest.mark.timeout(30)
@pytest.mark.parametrize("kind", list(DATASETS))
@pytest.mark.parametrize("num_workers", [0, 2])
def test_clean_shutdown_after_break(kind, num_workers):
    ds = DATASETS[kind]()
    before = {t.ident for t in threading.enumerate()}
    loader = ThreadDataLoader(ds, batch_size=2, num_workers=num_workers, buffer_size=1)
    for _ in loader:
        break
    gc.collect()
    left = [t for t in threading.enumerate() if t.name.startswith(("fastpipe-loader", "fastpipe-fetch"))]
    assert left == [] and {t.ident for t in threading.enumerate()} - before <= _other_threads(ds)
    if hasattr(ds, "shutdown"):
        ds.shutdown()


@pytest.mark.timeout(30)
@pytest.mark.parametrize("kind", list(DATASETS))
@pytest.mark.parametrize("num_workers", [0, 2])
def test_exception_propagates_to_consumer(kind, num_workers):
    fail_at = 4 if kind != "smartcache" else 2
    ds = DATASETS[kind](fail_at=fail_at)
    loader = ThreadDataLoader(ds, batch_size=2, num_workers=num_workers)
    with pytest.raises(RuntimeError, match=f"suffix failed on x={fail_at}"):
        for _ in loader:
            pass
    gc.collect()
    assert [
        t for t in threading.enumerate() if t.name.startswith(("fastpipe-loader", "fastpipe-fetch"))
    ] == []
    if hasattr(ds, "shutdown"):
        ds.shutdown()


@pytest.mark.timeout(30)
@pytest.mark.parametrize("kind", ["cache-per-item", "cache-batched", "cache-multisample"])
def test_torch_dataloader_reads_cache_datasets_through_getitems(kind):
    from fastpipe import list_data_collate

    ds = DATASETS[kind]()
    loader = torch.utils.data.DataLoader(ds, batch_size=3, collate_fn=list_data_collate)
    batches = list(loader)
    assert len(batches) == len(loader) == 4
    assert sorted(torch.cat([b["x"].flatten() for b in batches]).unique().tolist()) == list(range(N))
