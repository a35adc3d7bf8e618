"""A fastpipe dataset under the loaders a MONAI user already has, and MONAI's SmartCache tutorial sequence.

torch's ``DataLoader`` with worker processes, MONAI's ``DataLoader`` and ``ThreadDataLoader``, a
``DistributedSampler`` for two ranks simulated in one process, and ``start``/``update_cache``/``shutdown``
around a training loop with a validation pass between epochs, each compared with MONAI's classes.
"""

from __future__ import annotations

import monai
import monai.transforms as M
import pytest
import torch
from torch.utils.data import DataLoader, DistributedSampler

import fastpipe as fp
from fastpipe.datasets import load_decathlon_datalist

KEYS = ["image", "label"]

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> list[dict]:
    root = tmp_path_factory.mktemp("spleen")
    return load_decathlon_datalist(
        fp.datasets.synthesize(root, preset="spleen-tiny", num_volumes=3, progress=False)
    )


def chain(num_samples: int = 2) -> M.Compose:
    return M.Compose(
        [
            M.LoadImaged(KEYS),
            M.EnsureChannelFirstd(KEYS),
            M.ScaleIntensityRanged("image", a_min=-57, a_max=164, b_min=0.0, b_max=1.0, clip=True),
            M.RandCropByPosNegLabeld(KEYS, "label", (16, 16, 8), pos=1, neg=1, num_samples=num_samples),
            M.RandFlipd(KEYS, spatial_axis=[0], prob=0.5),
            M.RandShiftIntensityd("image", offsets=0.5, prob=1.0),
        ]
    )


def _sums(batch) -> tuple:
    """One number per crop: what tells two draws apart."""
    batch = batch[0] if isinstance(batch, list) else batch
    return tuple(round(float(v), 3) for v in batch["image"].flatten(1).sum(1))


LOADERS = {
    "torch-workers": lambda ds: DataLoader(ds, batch_size=2, num_workers=2),
    "torch-persistent": lambda ds: DataLoader(ds, batch_size=2, num_workers=2, persistent_workers=True),
    "monai-DataLoader": lambda ds: monai.data.DataLoader(ds, batch_size=2, num_workers=2),
    "monai-ThreadDataLoader": lambda ds: monai.data.ThreadDataLoader(ds, batch_size=2),
    "fp-ThreadDataLoader": lambda ds: fp.ThreadDataLoader(ds, batch_size=2, num_workers=2),
}


@pytest.mark.parametrize("name", list(LOADERS))
def test_loaders_give_monai_shapes_and_new_draws_every_epoch(files, name) -> None:
    """Same one volume four times: every crop of an epoch is its own draw, and epochs differ."""
    ds = fp.CacheDataset(files[:1] * 4, chain(), seed=0)
    torch.manual_seed(0)
    loader = LOADERS[name](ds)
    epochs = []
    for _ in range(2):
        batches = list(loader)
        assert [tuple(b["image"].shape) for b in batches] == [(4, 1, 16, 16, 8)] * 2
        assert all(b["label"].dtype == torch.float32 and "image_meta_dict" in b for b in batches)
        epochs.append([s for b in batches for s in _sums(b)])
    assert len(set(epochs[0])) == 8 and len(set(epochs[1])) == 8
    assert not set(epochs[0]) & set(epochs[1])


def test_worker_processes_repeat_with_torch_manual_seed(files) -> None:
    ds = fp.CacheDataset(files[:1] * 4, chain(), seed=0)
    runs = []
    for _ in range(2):
        torch.manual_seed(3)
        runs.append([_sums(b) for b in DataLoader(ds, batch_size=2, num_workers=2)])
    assert runs[0] == runs[1]


@pytest.mark.parametrize("loader", ["torch", "fp"])
def test_distributed_sampler_two_ranks_cover_the_data_every_epoch(files, loader) -> None:
    data = [dict(files[0], idx=i) for i in range(7)]
    ds = fp.CacheDataset(data, chain(num_samples=1), seed=0)
    make = DataLoader if loader == "torch" else fp.ThreadDataLoader
    per_epoch: dict[int, list] = {0: [], 1: []}
    for rank in range(2):
        sampler = DistributedSampler(ds, num_replicas=2, rank=rank, shuffle=True, seed=0)
        dl = make(ds, batch_size=2, sampler=sampler)
        for epoch in range(2):
            sampler.set_epoch(epoch)
            got = [i for b in dl for i in b["idx"].tolist()]
            assert got == list(sampler)
            per_epoch[epoch] += got
    for got in per_epoch.values():  # 7 items padded to 8, as torch's sampler pads them
        assert len(got) == 8 and set(got) == set(range(7))
    assert per_epoch[0] != per_epoch[1]


def _smart_windows(ds, val_ds, loader) -> list[list[int]]:
    """MONAI's SmartCache tutorial: start, train, validate, update_cache every epoch, shutdown."""
    ds.start()
    windows = []
    for _ in range(4):
        windows.append(sorted({int(i) for b in loader for i in b["idx"]}))
        for v in monai.data.DataLoader(val_ds, batch_size=1):
            assert v["image"].shape[:2] == (1, 1)
        ds.update_cache()
    ds.shutdown()
    return windows


@pytest.mark.parametrize("loader", ["monai-ThreadDataLoader", "torch-workers"])
def test_smart_cache_tutorial_windows_match_monai(files, loader) -> None:
    data = [dict(f, idx=i) for i, f in enumerate(files * 2)]
    kw = dict(replace_rate=0.5, cache_num=2, num_init_workers=1, num_replace_workers=1, shuffle=True, seed=0)
    make = {
        "monai-ThreadDataLoader": lambda d: monai.data.ThreadDataLoader(d, batch_size=1),
        "torch-workers": lambda d: DataLoader(
            d, batch_size=1, num_workers=2, collate_fn=monai.data.list_data_collate
        ),
    }[loader]
    val = [files[0]]
    theirs_ds = monai.data.SmartCacheDataset(data, chain(), progress=False, **kw)
    theirs = _smart_windows(
        theirs_ds, monai.data.CacheDataset(val, chain().transforms[:2], progress=False), make(theirs_ds)
    )
    ours_ds = fp.SmartCacheDataset(data, chain(), **kw)
    ours = _smart_windows(ours_ds, fp.CacheDataset(val, chain().transforms[:2]), make(ours_ds))
    ours_ds.close()
    assert ours == theirs
    assert len({tuple(w) for w in ours}) > 1  # the window moved


def test_worker_streams_of_different_transforms_are_not_shared(files) -> None:
    shifts = M.Compose(
        [
            M.LoadImaged(KEYS),
            M.EnsureChannelFirstd(KEYS),
            M.RandShiftIntensityd("image", offsets=100, prob=1.0),
            M.RandShiftIntensityd("label", offsets=100, prob=1.0),
        ]
    )
    ds, ref = fp.CacheDataset(files[:1] * 4, shifts), fp.CacheDataset(files[:1], shifts.transforms[:2])[0]
    torch.manual_seed(0)
    got = []  # (image offset, label offset) of items 0..3; workers 0 and 1 take turns
    for b in DataLoader(ds, batch_size=1, num_workers=2):
        got.append(tuple(round(float((b[k][0] - ref[k]).flatten()[0]), 3) for k in KEYS))
    assert got[1][0] != got[0][1] and got[3][0] != got[2][1]


@pytest.mark.parametrize("restart", [False, True])
def test_smart_cache_item_i_is_monais_item_i_every_round(restart) -> None:
    """MONAI drops the window's first R items and appends the new ones; fastpipe put the new ones in
    the places of the old, so ds[i] (and a shuffle=False loader, a capped epoch) read other items."""
    data = [{"idx": i} for i in range(8)]
    kw = dict(
        replace_rate=0.5, cache_num=4, num_init_workers=1, num_replace_workers=1, seed=0, progress=False
    )
    runs = []
    for ds in (monai.data.SmartCacheDataset(data, None, **kw), fp.SmartCacheDataset(data, None, **kw)):
        ds.start()
        rounds = []
        for r in range(4):
            rounds.append([int(ds[i]["idx"]) for i in range(len(ds))])
            if restart and r == 1:
                ds.shutdown()
                ds.start()
            ds.update_cache()
        ds.shutdown()
        runs.append(rounds)
    assert runs[1] == runs[0]


def test_cache_dataset_pickles_for_spawned_workers(files) -> None:
    import pickle

    pickle.dumps(monai.data.CacheDataset(files[:1], chain(), progress=False))  # MONAI's: workers can spawn
    pickle.dumps(fp.CacheDataset(files[:1], chain()))
