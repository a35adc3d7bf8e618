"""ThreadDataLoader across epochs: runs made ahead (``persistent_workers``) and the data the loop changes."""

from __future__ import annotations

import gc
import threading
import weakref

import monai.data
import numpy as np
import pytest
import torch

from fastpipe import CacheDataset, SmartCacheDataset, ThreadDataLoader, list_data_collate
from fastpipe.transforms import mark_random


def _values(loader: ThreadDataLoader) -> list[int]:
    return [int(v) for b in loader for v in b["x"].reshape(-1)]


@pytest.mark.timeout(60)
def test_persistent_workers_read_monai_smartcache_window_after_the_loops_update_cache():
    """MONAI's SmartCacheDataset moves its window in the loop's update_cache(): a run made ahead before
    that call read the old window, so epoch 2 mixed items of both windows."""
    data = [{"x": torch.tensor([i])} for i in range(8)]
    ds = monai.data.SmartCacheDataset(
        data, None, cache_num=4, replace_rate=0.5, shuffle=False, progress=False,
        num_init_workers=1, num_replace_workers=1,
    )  # fmt: skip
    loader = ThreadDataLoader(ds, batch_size=1, persistent_workers=True)
    ds.start()
    try:
        for _ in range(3):
            window = [int(ds._cache[i]["x"]) for i in range(len(ds))]
            assert _values(loader) == window
            threading.Event().wait(0.1)  # a run started ahead would have read the old window by now
            ds.update_cache()
    finally:
        ds.shutdown()
        loader.close()


@pytest.mark.timeout(60)
def test_persistent_workers_read_the_new_data_after_set_data():
    """set_data() between epochs: the run made ahead had read the old items (and the old length)."""
    ds = CacheDataset([{"x": torch.tensor([i])} for i in range(4)], None, progress=False, num_workers=1)
    loader = ThreadDataLoader(ds, batch_size=1, persistent_workers=True)
    try:
        assert _values(loader) == [0, 1, 2, 3]
        threading.Event().wait(0.1)
        ds.set_data([{"x": torch.tensor([100 + i])} for i in range(6)])
        assert _values(loader) == [100 + i for i in range(6)]
        assert _values(loader) == [100 + i for i in range(6)]  # and the run ahead after it is fresh
    finally:
        loader.close()


@mark_random
def _slow_on_old_data(d: dict) -> dict:
    if float(d["x"]) < 100:  # the run made ahead is still reading the old data after set_data()
        threading.Event().wait(0.15)
    return {**d, "x": d["x"] * 1}


@pytest.mark.timeout(60)
def test_a_stale_run_ahead_does_not_move_the_new_datas_smartcache_window():
    """set_data() while the run made ahead still read the old items: that run, dropped as stale, still
    swapped the SmartCache window once it was done, so the first epoch on the new data began one
    window later (items 100, 101 and 102 skipped) than without persistent_workers."""
    ds = SmartCacheDataset(
        [{"x": float(i)} for i in range(12)], [_slow_on_old_data], cache_num=6, replace_rate=0.5,
        shuffle=False, progress=False,
    )  # fmt: skip
    loader = ThreadDataLoader(ds, batch_size=2, buffer_size=4, seed=1, persistent_workers=True)
    try:
        assert sorted(_values(loader)) == [0, 1, 2, 3, 4, 5]
        ds.shutdown()
        ds.set_data([{"x": float(100 + i)} for i in range(12)])
        ds.start()
        threading.Event().wait(1.5)  # a validation pass, say: the stale run ends meanwhile
        assert sorted(_values(loader)) == [100, 101, 102, 103, 104, 105]
        assert sorted(_values(loader)) == [103, 104, 105, 106, 107, 108]
    finally:
        loader.close()
        ds.close()


def _steps_per_epoch(loader: ThreadDataLoader, steps: int, step_s: float) -> list[list[int]]:
    out = []
    for _ in range(3):
        seen = []
        for k, b in enumerate(loader):
            seen += [int(v) for v in b["x"].reshape(-1)]
            threading.Event().wait(step_s)  # the training step
            if k + 1 == steps:
                break
        out.append(sorted(seen))
    return out


@pytest.mark.timeout(60)
def test_persistent_workers_over_smartcache_with_epochs_left_early_do_not_depend_on_the_step_time():
    """A loop that leaves each epoch early (steps per epoch) over a SmartCacheDataset: with
    persistent_workers the window moved once the producer had made the epoch's last batch, so a slow
    training step (the producer done before the break) moved it every epoch and a fast one never:
    the data trained on depended on the GPU's speed. Now it moves only when the loop received the
    epoch's last batch, as without persistent_workers."""

    def loader(persistent: bool) -> tuple[ThreadDataLoader, SmartCacheDataset]:
        ds = SmartCacheDataset(
            [{"x": float(i)} for i in range(24)], None, cache_num=12, replace_rate=0.5, shuffle=False,
            progress=False,
        )  # fmt: skip
        return ThreadDataLoader(ds, batch_size=2, seed=1, buffer_size=2, persistent_workers=persistent), ds

    want, got = [], []
    for persistent, step_s, out in ((False, 0.0, want), (True, 0.05, got), (True, 0.0, got)):
        ld, ds = loader(persistent)
        try:
            out.append(_steps_per_epoch(ld, 4, step_s))  # 4 of 6 batches
        finally:
            ld.close()
            ds.close()
    assert got == [want[0], want[0]] and want[0] == [list(range(8))] * 3


class _Slow(torch.utils.data.Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, i):
        threading.Event().wait(0.2)
        return {"x": torch.tensor([i])}

    def __getitems__(self, indices):
        return [self[i] for i in indices]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("num_workers", [0, 2])
@pytest.mark.parametrize("slow", [False, True])
@pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")  # __del__ failing
def test_a_dropped_persistent_workers_loader_is_collected_and_its_threads_end(num_workers, slow):
    """The run made ahead held the loader through its producer thread: neither was ever freed (a thread
    per dropped loader, polling forever). Dropped while that producer reads an item (slow), the
    loader's __del__ runs on the producer thread itself, which must not try to join itself."""
    data = _Slow() if slow else [{"x": torch.tensor([i])} for i in range(4)]
    loader = ThreadDataLoader(data, batch_size=2, persistent_workers=True, num_workers=num_workers)
    assert _values(loader) == [0, 1, 2, 3]
    threading.Event().wait(0.1)
    ref = weakref.ref(loader)
    del loader
    for _ in range(100):
        gc.collect()
        if ref() is None and not _loader_threads():
            break
        threading.Event().wait(0.05)
    assert ref() is None and _loader_threads() == []


def _loader_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith(("fastpipe-loader", "fastpipe-fetch"))]


@pytest.mark.timeout(60)
def test_nested_loops_with_persistent_workers_leave_no_thread_after_close():
    """Two iterators of one loader at once: the outer epoch's end started a run for an epoch the inner
    loop had already iterated, over the run made ahead, which nothing referenced any more: its thread
    blocked forever on a queue nobody read, out of close()'s reach."""
    loader = ThreadDataLoader(
        [{"x": torch.tensor([i])} for i in range(4)], batch_size=2, persistent_workers=True
    )
    pairs = []
    for a in loader:
        for b in loader:
            pairs.append((int(a["x"][0]), int(b["x"][0])))
            threading.Event().wait(0.05)
        threading.Event().wait(0.1)
    assert pairs == [(0, 0), (0, 2), (2, 0), (2, 2)]
    threading.Event().wait(0.3)  # every epoch's end has run
    assert _values(loader) == [0, 1, 2, 3]
    loader.close()
    assert _loader_threads() == []


class _Stream(torch.utils.data.IterableDataset):
    def __iter__(self):
        yield from ({"x": torch.tensor([i])} for i in range(5))


@pytest.mark.timeout(60)
@pytest.mark.parametrize("num_workers", [0, 2])
def test_an_iterable_dataset_is_batched_as_monais_thread_data_loader_does(num_workers):
    """MONAI's ThreadDataLoader takes IterableDatasets (GridPatchDataset, PatchDataset); ours failed with
    "object of type ... has no len()"."""
    theirs = [b["x"].tolist() for b in monai.data.ThreadDataLoader(_Stream(), batch_size=2)]
    ours = ThreadDataLoader(_Stream(), batch_size=2, num_workers=num_workers, persistent_workers=True)
    assert [b["x"].tolist() for b in ours] == theirs == [[[0], [1]], [[2], [3]], [[4]]]
    assert [b["x"].tolist() for b in ThreadDataLoader(_Stream(), batch_size=2, drop_last=True)] == theirs[:2]
    ours.close()
    with pytest.raises(ValueError, match="IterableDataset"):
        ThreadDataLoader(_Stream(), shuffle=True)


@pytest.mark.timeout(60)
def test_tuple_items_collate_per_position_as_monais_loader_does():
    """(image, label) items, and GridPatchDataset's (patch, coords): the default collate gave the list
    of tuples itself, uncollated, where MONAI's and torch's give one stacked batch per position."""
    pairs = [(torch.full((2,), float(i)), i) for i in range(5)]
    grid = monai.data.GridPatchDataset(
        data=[np.arange(64, dtype=np.float32).reshape(1, 8, 8)],
        patch_iter=monai.data.PatchIter(patch_size=(4, 4)),
    )
    for data in (pairs, grid):
        theirs = list(monai.data.ThreadDataLoader(data, batch_size=3))
        ours = list(ThreadDataLoader(data, batch_size=3))
        assert len(ours) == len(theirs) == 2
        for a, b in zip(ours, theirs, strict=True):
            assert isinstance(a, list) and len(a) == len(b) == 2
            assert all(torch.equal(torch.as_tensor(x), torch.as_tensor(y)) for x, y in zip(a, b, strict=True))


def test_numbers_collate_with_torchs_dtypes():
    """Python floats gave float32 (MONAI's collate: float64), numpy scalars (np.int64 labels) a list of
    them, and a mix of ints and floats a list, where MONAI's collate gives tensors."""
    for values in (
        [0.1, 1.5],
        [1, 2],
        [True, False],
        [1, 2.5],
        [np.int64(3), np.int64(4)],
        [np.float32(0.5)] * 2,
    ):
        items = [{"v": v} for v in values]
        ours, theirs = list_data_collate(items)["v"], monai.data.list_data_collate(items)["v"]
        assert isinstance(ours, torch.Tensor) and ours.dtype == theirs.dtype and torch.equal(ours, theirs), (
            values
        )


class _Failing(torch.utils.data.Dataset):
    fail = True

    def __len__(self):
        return 6

    def __getitem__(self, i):
        if i == 3 and self.fail:
            raise ValueError("bad voxel")
        return {"x": torch.tensor([i])}


@pytest.mark.timeout(30)
@pytest.mark.parametrize("num_workers", [0, 2])
def test_a_datasets_error_names_the_batchs_items_and_the_next_epoch_works(num_workers):
    """A plain dataset's error reached the loop with nothing saying which item raised it."""
    ds = _Failing()
    loader = ThreadDataLoader(ds, batch_size=2, num_workers=num_workers)
    with pytest.raises(ValueError, match="bad voxel") as info:
        list(loader)
    assert "items [2, 3] of _Failing" in "\n".join(getattr(info.value, "__notes__", []))
    ds.fail = False
    assert _values(loader) == list(range(6))
    assert _loader_threads() == []


@pytest.mark.timeout(30)
@pytest.mark.parametrize("num_workers", [0, 2])
def test_a_datasets_error_names_the_item_that_raised_it(num_workers):
    """The note named the whole batch ('items [2, 3]'; 32 indices at batch_size=32), not the item."""
    loader = ThreadDataLoader(_Failing(), batch_size=2, num_workers=num_workers)
    with pytest.raises(ValueError, match="bad voxel") as info:
        list(loader)
    notes = getattr(info.value, "__notes__", [])
    assert notes == ["ThreadDataLoader: raised reading item 3, of items [2, 3] of _Failing"]


def _ignite_like(ds, loader, epochs: int = 5, handler: bool = True) -> list[list[int]]:
    """ignite's Engine: ``len(loader)`` batches an epoch without asking the iterator for its end, then
    the EPOCH_COMPLETED handlers (MONAI's SmartCacheHandler: ``update_cache()``); the next epoch's first
    ``next()`` meets the old iterator's end and makes a new one."""
    out, it = [], iter(loader)
    ds.start()
    for _ in range(epochs):
        seen: list[int] = []
        batches = 0
        while batches < len(loader):
            try:
                seen += [int(i) for i in next(it)["id"]]
                batches += 1
            except StopIteration:
                it = iter(loader)
        out.append(sorted(seen))
        if handler:
            ds.update_cache()
    ds.shutdown()
    return out


@pytest.mark.timeout(120)
@pytest.mark.parametrize("persistent", [False, True])
def test_an_ignite_epoch_completed_update_cache_moves_the_window_as_monai_s_does(persistent):
    """The handler's update_cache() came before the loader's own epoch-end swap (made when the next
    epoch met the old iterator's end): the window moved twice in the first epoch, a round ahead of
    MONAI's from then on."""
    data = [{"id": i} for i in range(12)]
    kw = dict(cache_num=4, replace_rate=0.5, shuffle=False, progress=False)
    ds_m = monai.data.SmartCacheDataset(data, None, **kw)
    expected = _ignite_like(ds_m, monai.data.ThreadDataLoader(ds_m, batch_size=2))
    assert expected[1] == [2, 3, 4, 5]  # one round per epoch
    ds = SmartCacheDataset(data, None, **kw)
    loader = ThreadDataLoader(ds, batch_size=2, persistent_workers=persistent)
    try:
        assert _ignite_like(ds, loader) == expected
        ds2 = SmartCacheDataset(data, None, **kw)  # no handler: the loader's swaps alone, one per epoch
        assert _ignite_like(ds2, ThreadDataLoader(ds2, batch_size=2), handler=False) == expected
    finally:
        loader.close()
