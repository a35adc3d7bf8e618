"""Errors a new user meets in the first minutes: each fails at once and says what is wrong.

A CUDA device point on a CPU-only torch, ``on_error="skip"`` that skips everything, a list of paths
instead of dicts, SmartCacheDataset's default window, and MONAI code that still calls
``update_cache()`` beside ThreadDataLoader's own call.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from _cache_helpers import CountingDet, RandAdd

import fastpipe as fp
from fastpipe import transforms as T

NO_CUDA = not torch.cuda.is_available()


def items(n: int) -> list[dict]:
    return [{"x": i, "name": f"vol{i}.nii.gz"} for i in range(n)]


@pytest.mark.skipif(not NO_CUDA, reason="checks the error of a machine without CUDA")
@pytest.mark.parametrize("dataset", ["cache", "smart"])
def test_cuda_device_point_without_cuda_fails_when_built(dataset):
    chain = [CountingDet(), T.ToDeviced("image", device="cuda:0"), RandAdd()]
    with pytest.raises(ValueError) as err:
        if dataset == "cache":
            fp.CacheDataset(items(3), chain, progress=False)
        else:
            fp.SmartCacheDataset(items(6), chain, cache_num=3, progress=False)
    msg = str(err.value)
    assert msg.startswith("ToDeviced('cuda:0') but CUDA is not available (torch ")
    assert torch.__version__ in msg and "use 'cpu' or drop the step" in msg
    assert "vol" not in msg  # never blames a data file


@pytest.mark.skipif(not NO_CUDA, reason="checks the error of a machine without CUDA")
def test_monai_todevice_without_cuda_fails_when_built():
    from monai.transforms import EnsureTyped

    with pytest.raises(ValueError, match=r"EnsureTyped\('cuda'\) but CUDA is not available"):
        fp.CacheDataset(items(2), [CountingDet(), EnsureTyped("image", device="cuda")], progress=False)


def test_cpu_device_point_is_fine():
    ds = fp.CacheDataset(items(2), [CountingDet(), T.ToDeviced("image", device="cpu")], progress=False)
    assert len(ds) == 2


@pytest.mark.timeout(30)
def test_skip_every_item_raises_with_count_and_reasons(tmp_path):
    data = [{"image": str(tmp_path / f"missing{i}.nii.gz")} for i in range(4)]
    with pytest.raises(ValueError) as err:
        fp.CacheDataset(data, [T.LoadImaged("image")], on_error="skip", progress=False, num_workers=1)
    msg = str(err.value)
    assert "skipped all 4 of 4 items" in msg and "missing0.nii.gz" in msg
    assert "FileNotFoundError" in msg and "and 1 more" in msg


def test_skip_some_items_keeps_the_rest():
    data = items(3)
    data[1]["fail"] = True
    ds = fp.CacheDataset(data, [CountingDet()], on_error="skip", progress=False, num_workers=1)
    assert len(ds) == 2 and list(ds.stats()["skipped"]) == [1]


@pytest.mark.parametrize("bad", [["a.nii.gz", "b.nii.gz"], [("a.nii.gz", "b.nii.gz")]])
def test_list_of_paths_names_the_item_shape(bad):
    with pytest.raises(TypeError) as err:
        fp.CacheDataset(bad, [T.LoadImaged(["image", "label"])], progress=False)
    msg = str(err.value)
    assert "data item 0" in msg and "not a dict" in msg and "{'image': " in msg
    assert "load_decathlon_datalist" in msg


def test_non_dict_items_still_work_with_plain_callables():
    ds = fp.CacheDataset([1, 2, 3], [lambda x: x * 10], progress=False)
    assert [ds[i] for i in range(3)] == [10, 20, 30]


@pytest.mark.timeout(30)
def test_smartcache_default_cache_num_works_like_monai():
    with pytest.warns(UserWarning, match="cache_rate=1.0 gives a window of all 6 items"):
        full = fp.SmartCacheDataset(items(6), [CountingDet()], progress=False)
    with full:
        assert len(full) == 6
    with fp.SmartCacheDataset(items(8), [CountingDet()], cache_rate=0.5, progress=False) as half:
        assert len(half) == 4 and half.replace_num == 1


@pytest.mark.timeout(30)
def test_user_update_cache_after_loader_swap_is_skipped_with_a_warning():
    ds = fp.SmartCacheDataset(
        items(8), [CountingDet(), RandAdd()], cache_num=4, replace_rate=0.5, shuffle=False, progress=False
    )
    loader = fp.ThreadDataLoader(ds, batch_size=2)
    windows = []
    with ds, warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        for _ in range(3):
            for _batch in loader:
                pass
            ds.update_cache()  # kept from MONAI code: the loader has already swapped
            windows.append(sorted(ds.window_indices()))
    assert ds.stats()["rounds"] == 3  # one swap per epoch, not two
    assert windows == [[2, 3, 4, 5], [4, 5, 6, 7], [0, 1, 6, 7]]
    double = [w for w in rec if "right after ThreadDataLoader swapped" in str(w.message)]
    assert len(double) == 1 and "remove ds.update_cache()" in str(double[0].message)
    assert not [w for w in rec if "num_replace_workers" in str(w.message)]


@pytest.mark.timeout(30)
def test_update_cache_without_loader_still_swaps_every_call():
    with fp.SmartCacheDataset(
        items(8), [CountingDet()], cache_num=4, replace_rate=0.5, shuffle=False, progress=False
    ) as ds:
        ds.update_cache()
        ds.update_cache()
        assert ds.stats()["rounds"] == 2 and sorted(ds.window_indices()) == [4, 5, 6, 7]


def test_swap_guard_tells_the_loader_thread_from_the_user():
    import threading

    from fastpipe.cache._swap_guard import SwapGuard

    guard, seen = SwapGuard(), []
    entered, release = threading.Event(), threading.Event()

    def loader_call():
        with guard.by_loader():
            seen.append(("loader", guard.skip_user_call()))
            entered.set()
            release.wait(5)

    t = threading.Thread(target=loader_call)
    t.start()
    entered.wait(5)
    with pytest.warns(UserWarning, match="right after ThreadDataLoader swapped"):
        seen.append(("user during the loader's swap", guard.skip_user_call()))
    release.set()
    t.join(5)
    seen.append(("user again", guard.skip_user_call()))
    assert seen == [("loader", False), ("user during the loader's swap", True), ("user again", False)]


@pytest.mark.timeout(60)
def test_user_update_cache_with_persistent_workers_never_swaps_twice():
    ds = fp.SmartCacheDataset(
        items(8), [CountingDet(), RandAdd()], cache_num=4, replace_rate=0.5, shuffle=False, progress=False
    )
    loader = fp.ThreadDataLoader(ds, batch_size=2, persistent_workers=True)
    with ds, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(3):
            for _batch in loader:
                pass
            ds.update_cache()
        loader.close()
        # the loader swaps once per epoch made (it may have made the 4th epoch ahead); the loop's calls never
        assert ds._swap_guard.skipped == 3 and ds.stats()["rounds"] in (3, 4)


def test_swap_guard_keeps_no_credit_from_epochs_long_gone_and_none_for_a_failed_swap():
    from fastpipe.cache._swap_guard import MAX_UNANSWERED, SwapGuard

    guard = SwapGuard()
    for _ in range(5):  # five loader epochs, the loop never calls update_cache() itself
        with guard.by_loader():
            pass
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        calls = [guard.skip_user_call() for _ in range(4)]  # then a loop that calls it every epoch
    assert calls == [True] * MAX_UNANSWERED + [False] * (4 - MAX_UNANSWERED)
    with pytest.raises(RuntimeError), guard.by_loader():
        raise RuntimeError("the replacement failed")
    assert guard.skip_user_call() is False  # the user's retry runs


@pytest.mark.timeout(60)
def test_a_loop_moving_from_the_thread_loader_to_torch_swaps_every_epoch():
    ds = fp.SmartCacheDataset(
        items(12), [CountingDet()], cache_num=4, replace_rate=0.5, shuffle=False, progress=False
    )
    with ds, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(3):
            list(fp.ThreadDataLoader(ds, batch_size=2))
        rounds = ds.stats()["rounds"]
        for _ in range(4):
            list(torch.utils.data.DataLoader(ds, batch_size=2))
            ds.update_cache()
        assert ds.stats()["rounds"] - rounds >= 4 - 2  # at most the guard's two credits are spent


@pytest.mark.parametrize("seed", [-1, 2**32 + 7, 12345678901])
def test_smartcache_takes_any_int_seed_as_monai(seed):
    from monai.data import SmartCacheDataset as MonaiSmartCache

    data = items(10)
    ours = fp.SmartCacheDataset(data, None, cache_num=4, replace_rate=0.5, seed=seed, progress=False)
    theirs = MonaiSmartCache(
        data, lambda d: dict(d), cache_num=4, replace_rate=0.5, seed=seed, progress=False
    )
    with ours:
        assert sorted(ours.window_indices()) == sorted(int(d["x"]) for d in theirs._cache)


def test_one_item_dict_instead_of_a_list_names_the_item_shape():
    """A dict was taken for a map-style dataset: the fill failed on 'item 0 (0): KeyError: 0'."""
    with pytest.raises(
        TypeError, match=r"data is a dict with keys \['image', 'label'\], not a list of items"
    ):
        fp.CacheDataset({"image": "/d/a.nii.gz", "label": "/d/b.nii.gz"}, None, progress=False)
