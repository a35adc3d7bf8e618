"""ThreadDataLoader(batch_sampler=): batches of indices given whole, as torch's DataLoader takes them."""

from __future__ import annotations

import threading

import pytest
import torch
from _cache_helpers import CountingDet, RandAdd, items

from fastpipe import CacheDataset, ThreadDataLoader

DATA = [{"x": torch.tensor(i)} for i in range(11)]


def _batch_sampler(seed: int) -> torch.utils.data.BatchSampler:
    gen = torch.Generator().manual_seed(seed)
    return torch.utils.data.BatchSampler(torch.utils.data.RandomSampler(DATA, generator=gen), 4, False)


def _epochs(loader, n: int = 3) -> list[list[list[int]]]:
    return [[b["x"].tolist() for b in loader] for _ in range(n)]


@pytest.mark.timeout(30)
@pytest.mark.parametrize("num_workers", [0, 2])
def test_batch_sampler_gives_torchs_batches_and_length(num_workers):
    """batch_sampler= raised TypeError: code written for torch's DataLoader did not run."""
    theirs = torch.utils.data.DataLoader(DATA, batch_sampler=_batch_sampler(5))
    ours = ThreadDataLoader(DATA, batch_sampler=_batch_sampler(5), num_workers=num_workers)
    assert len(ours) == len(theirs) == 3
    assert _epochs(ours) == _epochs(theirs)
    fixed = [[3, 1], [0], [10, 2, 4]]
    ours = ThreadDataLoader(DATA, batch_sampler=fixed, num_workers=num_workers, persistent_workers=True)
    try:
        assert len(ours) == 3 and _epochs(ours, 2) == [fixed, fixed]
    finally:
        ours.close()


@pytest.mark.parametrize(
    "kwargs", [{"batch_size": 2}, {"shuffle": True}, {"sampler": [0, 1]}, {"drop_last": True}]
)
def test_batch_sampler_excludes_what_torch_excludes(kwargs):
    for loader in (torch.utils.data.DataLoader, ThreadDataLoader):
        with pytest.raises(ValueError, match="batch_sampler option is mutually exclusive with batch_size"):
            loader(DATA, batch_sampler=[[0, 1]], **kwargs)


def test_batch_sampler_refuses_an_iterable_dataset_and_names_a_bad_batch():
    class Stream(torch.utils.data.IterableDataset):
        def __iter__(self):
            return iter(DATA)

    with pytest.raises(ValueError, match="expected unspecified batch_sampler option"):
        ThreadDataLoader(Stream(), batch_sampler=[[0, 1]])
    with pytest.raises(ValueError, match=r"indices \[11\] out of range for a dataset of 11 items \(batch 1"):
        list(ThreadDataLoader(DATA, batch_sampler=[[0], [1, 11]]))


@pytest.mark.timeout(60)
@pytest.mark.parametrize("num_workers", [0, 2])
def test_a_batched_dataset_gets_each_sampled_batch_in_one_fetch(num_workers, monkeypatch):
    ds = CacheDataset(items(6), [CountingDet(), RandAdd(batched=True)], progress=False)
    assert ds.batched
    calls, lock, fetch = [], threading.Lock(), ds.fetch_seeded

    def spy(indices, seed):
        with lock:
            calls.append(list(indices))
        return fetch(indices, seed)

    monkeypatch.setattr(ds, "fetch_seeded", spy)
    batches = [[5, 0, 2], [1], [4, 3]]
    loader = ThreadDataLoader(ds, batch_sampler=batches, num_workers=num_workers, seed=1)
    got = [b["x"].tolist() for b in loader]
    assert got == batches and sorted(calls) == sorted(batches)
    again = [ThreadDataLoader(ds, batch_sampler=batches, num_workers=w, seed=1) for w in (0, num_workers)]
    assert all(torch.equal(a["image"], b["image"]) for a, b in zip(*again, strict=True))  # same seed, same


class _EpochBatches:
    """A batch sampler whose batches change with ``set_epoch`` (a DistributedSampler inside one)."""

    def __init__(self, n: int) -> None:
        self.n, self.epoch = n, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def batches(self) -> list[list[int]]:
        order = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.epoch)).tolist()
        return [order[i : i + 3] for i in range(0, self.n, 3)]

    def __iter__(self):
        return iter(self.batches())

    def __len__(self) -> int:
        return -(-self.n // 3)


@pytest.mark.timeout(30)
def test_persistent_workers_follow_the_batch_samplers_epoch_set_between_loops():
    sampler = _EpochBatches(8)
    loader = ThreadDataLoader(DATA[:8], batch_sampler=sampler, persistent_workers=True)
    try:
        for epoch in range(3):
            sampler.set_epoch(epoch)
            threading.Event().wait(0.05)  # a run made ahead would have read the previous batches by now
            assert [b["x"].tolist() for b in loader] == sampler.batches(), epoch
    finally:
        loader.close()


def test_a_distributed_sampler_inside_a_batch_sampler_over_a_rank_shard_is_refused():
    """As for sampler=: the shard split again over the replicas left each rank half of its shard, silently."""
    ds = CacheDataset(items(8), None, progress=False, rank=1, world_size=2)
    inner = torch.utils.data.DistributedSampler(ds, num_replicas=2, rank=1)
    with pytest.raises(ValueError, match=r"already holds only this rank's shard.*1/2 of the data"):
        ThreadDataLoader(ds, batch_sampler=torch.utils.data.BatchSampler(inner, 2, False))


def test_batch_sampler_sets_batch_size_drop_last_and_sampler_as_torch():
    """Under batch_sampler= the loader read batch_size=1 and sampler=None where torch's DataLoader reads
    None and a SequentialSampler: code that reads loader.batch_size (a learning-rate scale, a log) was wrong."""
    theirs = torch.utils.data.DataLoader(DATA, batch_sampler=_batch_sampler(5))
    ours = ThreadDataLoader(DATA, batch_sampler=_batch_sampler(5))
    for loader in (theirs, ours):
        assert loader.batch_size is None and loader.drop_last is False
        assert type(loader.sampler) is torch.utils.data.SequentialSampler and list(loader.sampler) == list(
            range(11)
        )
    assert len(ours) == len(theirs) and _epochs(ours, 1) == _epochs(theirs, 1)
    plain = ThreadDataLoader(DATA, batch_size=4, drop_last=True)  # without one: as given
    assert (plain.batch_size, plain.drop_last, plain.sampler) == (4, True, None)
