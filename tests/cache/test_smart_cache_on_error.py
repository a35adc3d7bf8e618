"""SmartCacheDataset(on_error=...): "skip" drops a bad item from the rotation with a warning, and the window goes on."""

from __future__ import annotations

import threading
import warnings

import pytest
import torch

from fastpipe import SmartCacheDataset, ThreadDataLoader
from fastpipe.cache.errors import CacheFillError, ReplacementError


def make_data(n: int) -> list[dict]:
    return [{"x": i, "path": f"/data/img{i:03d}.nii.gz"} for i in range(n)]


def chain_failing_on(*bad: int):
    def volume(d: dict) -> dict:
        if d["x"] in bad:
            raise ValueError(f"{d['path']}: corrupt voxel data")
        return {"x": d["x"], "path": d["path"], "t": torch.full((1, 2, 2, 2), float(d["x"]))}

    return volume


def smart(n: int, bad: tuple[int, ...], cache_num: int = 4, **kw) -> SmartCacheDataset:
    kw = {"replace_rate": 0.5, "shuffle": False, "progress": False, "num_init_workers": 1, **kw}
    return SmartCacheDataset(make_data(n), chain_failing_on(*bad), cache_num=cache_num, **kw)


def window(ds: SmartCacheDataset) -> list[int]:
    xs = [ds[i]["x"] for i in range(len(ds))]
    assert xs == ds.window_indices()  # what a read gets is the item of that position
    return sorted(xs)


def no_smart_threads() -> bool:
    return not [t for t in threading.enumerate() if t.name.startswith("fastpipe-smartcache")]


@pytest.mark.timeout(30)
def test_skip_drops_a_bad_incoming_item_and_the_window_keeps_rotating():
    with smart(10, bad=(5,), on_error="skip") as ds:
        seen = [window(ds)]
        with pytest.warns(RuntimeWarning, match=r"item 5 \(/data/img005.nii.gz\).*corrupt voxel data") as rec:
            ds.update_cache()
        assert any("dropped from the rotation" in str(w.message) for w in rec)
        seen.append(window(ds))
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # warned once: the item is gone, not retried
            for _ in range(5):
                ds.update_cache()
                seen.append(window(ds))
        # the running window over [0, 1, 2, 3, 4, 6, 7, 8, 9]: item 6 took item 5's place
        assert seen == [
            [0, 1, 2, 3],
            [2, 3, 4, 6],
            [4, 6, 7, 8],
            [0, 7, 8, 9],
            [0, 1, 2, 9],
            [1, 2, 3, 4],
            [3, 4, 6, 7],
        ]
        assert list(ds.stats()["skipped"]) == [5] and ds.stats()["rounds"] == 6
        for i in range(len(ds)):  # entries are the prefix output of that very item
            assert torch.all(ds[i]["t"] == ds[i]["x"])
    assert no_smart_threads()


@pytest.mark.timeout(30)
def test_raise_keeps_failing_on_the_bad_item():
    with smart(10, bad=(5,)) as ds:  # on_error="raise" (default): the current behaviour
        for _ in range(2):
            with pytest.raises(ReplacementError, match="item 5"):
                ds.update_cache()
            assert window(ds) == [0, 1, 2, 3]


@pytest.mark.timeout(30)
def test_skip_at_the_first_fill_takes_the_next_item_into_the_window():
    with pytest.warns(RuntimeWarning, match=r"item 1 \(/data/img001.nii.gz\)"):
        ds = smart(10, bad=(1,), on_error="skip")
    with ds:
        assert window(ds) == [0, 2, 3, 4] and len(ds) == 4
        ds.update_cache()
        assert window(ds) == [3, 4, 5, 6]
        assert list(ds.stats()["skipped"]) == [1]


@pytest.mark.timeout(30)
def test_skip_two_bad_items_in_one_round():
    with smart(10, bad=(4, 5), on_error="skip") as ds, pytest.warns(RuntimeWarning) as rec:
        ds.update_cache()
        assert window(ds) == [2, 3, 6, 7]
        ds.update_cache()
        assert window(ds) == [6, 7, 8, 9]
    assert sorted(ds.stats()["skipped"]) == [4, 5]
    assert len([w for w in rec if "dropped from the rotation" in str(w.message)]) == 2


@pytest.mark.timeout(30)
def test_skip_stops_rotating_when_only_the_window_is_left():
    with smart(6, bad=(4, 5), on_error="skip") as ds:
        with pytest.warns(RuntimeWarning):
            ds.update_cache()  # both incoming items fail: nothing is left outside the window
        assert window(ds) == [0, 1, 2, 3] and ds.replace_num == 0
        ds.update_cache()  # no-op, no hang
        assert window(ds) == [0, 1, 2, 3]


def test_skip_raises_when_every_item_fails():
    with pytest.warns(RuntimeWarning), pytest.raises(ValueError, match="failed on all 5 items"):
        smart(5, bad=tuple(range(5)), cache_num=3, on_error="skip")


def test_raise_at_the_first_fill_and_bad_on_error():
    with pytest.raises(CacheFillError, match="item 2"):
        smart(10, bad=(2,))
    with pytest.raises(ValueError, match="on_error must be 'raise' or 'skip', got 'ignore'"):
        smart(10, bad=(), on_error="ignore")


@pytest.mark.timeout(60)
def test_loader_epochs_go_on_past_a_bad_item():
    ds = smart(12, bad=(7,), on_error="skip", num_replace_workers=2)
    loader = ThreadDataLoader(ds, batch_size=2, num_workers=0)
    epochs = []
    with ds, warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        for _ in range(6):
            epochs.append(sorted(int(x) for batch in loader for x in batch["x"]))
    assert all(len(e) == 4 for e in epochs)
    assert len({tuple(e) for e in epochs}) == 6  # the window moved every epoch
    assert 7 not in {x for e in epochs for x in e}
    assert {x for e in epochs for x in e} == set(range(12)) - {7}


@pytest.mark.timeout(30)
@pytest.mark.parametrize("on_error", ["raise", "skip"])
def test_a_rank_s_failed_replacement_names_its_index_in_the_data_list(on_error):
    # rank 1 of 2 holds data items [10, 6, 8, 5, 14, 0, 3, 1]: item 1 is at position 7 of its shard
    kw = {"replace_rate": 1.0, "shuffle": False, "progress": False, "num_replace_workers": 1}
    ds = SmartCacheDataset(
        make_data(16), chain_failing_on(1), cache_num=3, rank=1, world_size=2, on_error=on_error, **kw
    )
    assert ds.shard["indices"][7] == 1
    with ds:
        ds.update_cache()
        if on_error == "raise":
            with pytest.raises(ReplacementError, match=r"failed on item 1 \(/data/img001") as info:
                ds.update_cache()
            assert info.value.index == 1
        else:
            with pytest.warns(RuntimeWarning, match=r"item 1 \(/data/img001.*; item 1 is dropped"):
                ds.update_cache()
            assert 1 not in [ds.input_index(s) for s in ds._rotation.order]
            assert list(ds.stats()["skipped"]) == [1]  # by index in the data list, as docs/errors.md says


@pytest.mark.timeout(30)
def test_a_rank_s_items_skipped_at_the_first_fill_are_keyed_by_their_data_list_index():
    # rank 1 of 2 holds data items [10, 6, 8, 5, 14, 0, 3, 1]: item 8 is at position 2 of its shard
    kw = {"replace_rate": 0.5, "shuffle": False, "progress": False, "rank": 1, "world_size": 2}
    with pytest.warns(RuntimeWarning, match="item 8 is dropped"):
        ds = SmartCacheDataset(make_data(16), chain_failing_on(8), cache_num=4, on_error="skip", **kw)
    with ds:
        assert list(ds.stats()["skipped"]) == [8]
