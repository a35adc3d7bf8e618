"""SmartCacheDataset: window rotation and coverage, determinism, threads under stress, faults, bytes, shutdown."""

from __future__ import annotations

import gc
import math
import os
import random
import sys
import threading
import time
import warnings

import numpy as np
import pytest
import torch

from fastpipe.cache.errors import ReplacementError
from fastpipe.cache.smart_cache import SmartCacheDataset
from fastpipe.transforms import mark_random

VOX = (1, 4, 4, 4)
ITEM_BYTES = math.prod(VOX) * 4  # one float32 tensor per cached item


def make_data(n: int) -> list[dict]:
    return [{"x": i, "path": f"/data/img{i:03d}.nii.gz"} for i in range(n)]


def volume(d: dict) -> dict:
    """Cheap deterministic prefix: a tensor whose every value is the item number."""
    return {"x": d["x"], "path": d["path"], "t": torch.full(VOX, float(d["x"]))}


def smart(
    n: int = 10, cache_num: int = 4, replace_rate: float = 0.5, transform=volume, **kw
) -> SmartCacheDataset:
    kw.setdefault("progress", False)
    kw.setdefault("num_init_workers", 1)
    return SmartCacheDataset(make_data(n), transform, cache_num=cache_num, replace_rate=replace_rate, **kw)


def slow_from(first: int, seconds: float):
    """:func:`volume`, taking ``seconds`` longer for items ``first`` and later (the replacements)."""

    def slow(d: dict) -> dict:
        if d["x"] >= first:
            time.sleep(seconds)
        return volume(d)

    return slow


def window_set(ds: SmartCacheDataset) -> set[int]:
    return {ds[i]["x"] for i in range(len(ds))}


def smart_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("fastpipe-smartcache")]


@pytest.mark.timeout(20)
def test_window_rotation_follows_running_window():
    with smart(shuffle=False) as ds:
        assert len(ds) == 4
        seen = [window_set(ds)]
        for _ in range(5):
            ds.update_cache()
            seen.append(window_set(ds))
        assert seen == [{0, 1, 2, 3}, {2, 3, 4, 5}, {4, 5, 6, 7}, {6, 7, 8, 9}, {8, 9, 0, 1}, {0, 1, 2, 3}]
        assert ds.stats()["rounds"] == 5 and ds.stats()["items_swapped"] == 10
        assert repr(ds).startswith("SmartCacheDataset(len=4 of 10, replace=2/round")
        for i in range(len(ds)):  # entries are the prefix output of that very item
            assert torch.all(ds[i]["t"] == ds[i]["x"])


@pytest.mark.timeout(20)
@pytest.mark.parametrize("n,cache_num,rate", [(10, 4, 0.5), (23, 7, 0.3), (9, 8, 0.1)])
def test_every_item_enters_within_ceil_len_over_r_epochs(n, cache_num, rate):
    with smart(n, cache_num, rate, shuffle=True, seed=5) as ds:
        r = ds.replace_num
        covered = window_set(ds)
        for _ in range(math.ceil(n / r)):
            ds.update_cache()
            window = window_set(ds)
            assert len(window) == cache_num
            covered |= window
        assert covered == set(range(n))


@pytest.mark.timeout(20)
def test_window_sets_match_monai_smartcache():
    from monai.data import SmartCacheDataset as MonaiSmartCache

    data = make_data(11)
    ours = SmartCacheDataset(data, volume, cache_num=5, replace_rate=0.4, seed=7, progress=False)
    theirs = MonaiSmartCache(data, lambda d: dict(d), cache_num=5, replace_rate=0.4, seed=7, progress=False)
    ours.start()
    theirs.start()
    try:
        for _ in range(6):
            assert window_set(ours) == {d["x"] for d in theirs._cache}
            ours.update_cache()
            theirs.update_cache()
    finally:
        ours.shutdown()
        theirs.shutdown()


@pytest.mark.timeout(20)
def test_window_sequence_is_deterministic_per_seed():
    def sequence(seed: int) -> list[list[int]]:
        with smart(20, 6, 0.34, seed=seed, num_replace_workers=3) as ds:
            out = [ds.window_indices()]
            for _ in range(6):
                ds.update_cache()
                out.append(ds.window_indices())
        return out

    assert sequence(1) == sequence(1)
    assert sequence(1) != sequence(2)


@pytest.mark.timeout(30)
def test_a_batch_is_read_from_one_window_when_a_swap_comes_between_its_lookups():
    """``__getitems__`` looked each position up on its own: a swap after the first lookup shifted the
    window (position p + R becomes p, as MONAI's), so the batch [3, 0] read the same item twice
    (the stress test below saw it about once in eight runs under load)."""
    ds = smart(40, 12, 0.25, num_replace_workers=1, seed=3)  # replace_num 3
    ds.start()
    ds.wait_replacements(10)  # the next round is ready: the swap below needs nothing but the window
    before = ds.window_indices()
    name, swaps = ds.input_index, []

    def name_then_swap(slot):  # runs after an item's lookup, outside the window's lock
        if not swaps:  # the first item of the batch: a swap runs now, or waits for the batch
            swaps.append(threading.Thread(target=ds.update_cache, daemon=True))
            swaps[0].start()
            swaps[0].join(0.5)
        return name(slot)

    ds.input_index = name_then_swap
    try:
        xs = [d["x"] for d in ds.__getitems__([3, 0])]
    finally:
        del ds.input_index
        swaps[0].join(10)
        ds.shutdown()
    assert xs == [before[3], before[0]], (xs, before)
    assert ds.window_indices() != before  # the swap did happen, after the batch's lookups


def test_stress_readers_during_replacement():
    """Four readers fetch thousands of items while 30 rounds swap: every read is whole and in a window."""
    n, cache_num = 40, 12
    ds = smart(n, cache_num, 0.25, num_replace_workers=2, seed=3)
    history = [frozenset(ds.window_indices())]  # history[k]: window after k swaps
    stop, errors, reads = threading.Event(), [], [[] for _ in range(4)]

    def reader(r: int) -> None:
        rng = random.Random(r)
        try:
            while not stop.is_set():
                k = len(history) - 1  # swaps completed before this read started
                batch = rng.sample(range(cache_num), 4)
                items = ds.__getitems__(batch) if r % 2 else [ds[i] for i in batch]
                xs = [d["x"] for d in items]
                if r % 2:  # one window for the whole batch; item by item, a swap between two reads
                    # shifts the window as MONAI's does (position p + R becomes p), so one item may repeat
                    assert len(set(xs)) == len(xs), f"duplicate item within a batch: {xs}"
                assert all(torch.all(d["t"] == d["x"]) for d in items), "half-built item"
                reads[r].append((k, len(history), xs))
        except Exception as err:  # noqa: BLE001 - re-raised in the test thread below
            errors.append(err)

    threads = [threading.Thread(target=reader, args=(r,), daemon=True) for r in range(4)]
    ds.start()
    for t in threads:
        t.start()
    covered = set(history[0])
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # switch threads often, so that reads interleave with the swaps
    try:
        for k in range(30):
            time.sleep(0.01)
            # at least 70 more items read before each swap (a stalled machine gets up to 2 s for
            # them): the count below then measures interleaving, not this machine's speed
            deadline = time.monotonic() + 2.0
            while 4 * sum(map(len, reads)) < 70 * (k + 1) and time.monotonic() < deadline:
                time.sleep(0.005)
            ds.update_cache()
            window = ds.window_indices()
            assert len(set(window)) == cache_num
            covered |= set(window)
            history.append(frozenset(window))
    finally:
        sys.setswitchinterval(switch)
        stop.set()
        for t in threads:
            t.join(5)
    t0 = time.perf_counter()
    ds.shutdown()
    assert time.perf_counter() - t0 < 1.0
    if errors:
        raise errors[0]
    fetched = [entry for per_reader in reads for entry in per_reader]
    assert sum(len(xs) for _, _, xs in fetched) > 2000
    for first, last, xs in fetched:  # windows from the one current before the read to the one after it
        allowed = frozenset().union(*history[first : last + 1])
        assert set(xs) <= allowed, f"items {xs} outside windows {first}..{last}"
    assert covered == set(range(n))  # 30 rounds of 3 >= ceil(40 / 3)
    assert ds.stats()["misses"] == 0  # every read found its entry cached: none swapped in early or freed late
    assert not smart_threads()


@pytest.mark.timeout(20)
def test_failing_replacement_is_raised_in_consumer_naming_item():
    def flaky(d: dict) -> dict:
        if d["x"] == 6:
            raise ValueError("corrupt voxel data")
        return volume(d)

    with smart(10, 4, 1.0, transform=flaky, shuffle=False) as ds:  # round 1 brings items 4..7
        with pytest.raises(ReplacementError, match=r"item 6 \(/data/img006.nii.gz\).*corrupt voxel data"):
            ds.update_cache()
        assert window_set(ds) == {0, 1, 2, 3}  # no partial swap
        with pytest.raises(ReplacementError, match="item 6"):  # retried, fails again
            ds.update_cache()


@pytest.mark.timeout(20)
def test_slow_replacement_reports_lag_and_warns_once():
    slow = slow_from(4, 0.25)
    with smart(12, 4, 0.5, transform=slow, shuffle=False, num_replace_workers=1) as ds:
        with pytest.warns(RuntimeWarning, match="num_replace_workers .*replace_rate") as rec:
            ds.update_cache()  # 2 items x 0.25 s on one worker: not ready yet
            ds.update_cache()
        assert len([w for w in rec if "not ready" in str(w.message)]) == 1
        lags = ds.stats()["lag_s"]
        assert lags[0] > 0.2 and lags[1] > 0.2
        assert ds.stats()["late_items"][:2] == [2, 2]
        time.sleep(0.8)  # the next round is ready: the swap waits for nothing
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            ds.update_cache()
        assert ds.stats()["lag_s"][2] < 0.05 and ds.stats()["late_items"][2] == 0
        assert window_set(ds) == {6, 7, 8, 9}


@pytest.mark.timeout(30)
def test_wait_replacements_returns_once_the_next_round_is_computed():
    # bounds leave room for a stalled machine: "at once" is under 0.5 s, a round takes 0.6 s or more
    with smart(12, 4, 0.5, transform=slow_from(4, 0.3), shuffle=False, num_replace_workers=1) as ds:
        assert ds.wait_replacements() > 0.4  # 2 items x 0.3 s on one worker
        assert ds.wait_replacements() < 0.5  # nothing pending: returns at once
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no "not ready" warning: the swap waits for nothing
            ds.update_cache()
        assert ds.stats()["lag_s"][-1] < 0.5 and window_set(ds) == {2, 3, 4, 5}
        assert ds.wait_replacements() > 0.4  # update_cache handed the next round over: it waits again


@pytest.mark.timeout(30)
def test_wait_replacements_honours_its_timeout():
    ds = smart(12, 4, 0.5, transform=slow_from(4, 1.5), shuffle=False, num_replace_workers=1)
    ds.start()  # a round of 2 x 1.5 s
    t0 = time.perf_counter()
    assert ds.wait_replacements(timeout=0.1) < 1.0
    assert time.perf_counter() - t0 < 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "still computing" (the item in flight): not what this tests
        ds.shutdown()
    for t in smart_threads():
        t.join(3.0)  # the worker finishes its item and discards it: no thread left for the next test
    assert not smart_threads()


@pytest.mark.timeout(30)
def test_wait_replacements_from_another_thread_and_after_shutdown():
    ds = smart(12, 4, 0.5, transform=slow_from(4, 0.2), shuffle=False, num_replace_workers=2)
    assert ds.wait_replacements() < 0.5  # not started: nothing to wait for
    ds.start()
    got: list[float] = []
    t = threading.Thread(target=lambda: got.append(ds.wait_replacements()))
    t.start()
    t.join(10)
    assert got and got[0] > 0.1  # two workers, 0.2 s per item
    ds.shutdown()
    assert ds.wait_replacements() < 0.5


@pytest.mark.timeout(20)
def test_cached_bytes_stay_within_window_plus_replacements():
    with smart(30, 8, 0.25, num_replace_workers=2) as ds:  # R = 2
        bound = (8 + 2) * ITEM_BYTES
        for _ in range(12):
            deadline = time.monotonic() + 2
            while ds.stats()["nbytes"] < bound and time.monotonic() < deadline:
                time.sleep(0.005)  # let the pending round land in the cache
            assert ds.stats()["nbytes"] == bound
            ds.update_cache()
            assert ds.stats()["nbytes"] <= bound
        assert ds.stats()["peak_nbytes"] == bound
    assert ds.core.nbytes == 0


@pytest.mark.timeout(20)
def test_shutdown_is_idempotent_and_fast_and_close_is_final():
    ds = smart(num_replace_workers=3)
    ds.start()
    assert ds.is_started() and smart_threads()
    t0 = time.perf_counter()
    ds.shutdown()
    ds.shutdown()
    assert time.perf_counter() - t0 < 1.0
    assert not ds.is_started() and not smart_threads()
    assert ds.core.nbytes == 4 * ITEM_BYTES  # the window stays readable (MONAI's shutdown)
    t0 = time.perf_counter()
    ds.close()
    ds.close()
    assert time.perf_counter() - t0 < 1.0 and ds.core.nbytes == 0
    with pytest.raises(RuntimeError, match="closed"):
        ds[0]
    with pytest.raises(RuntimeError, match="closed"):
        ds.start()


@pytest.mark.timeout(20)
def test_shutdown_with_an_item_in_flight_returns_within_a_second():
    slow = slow_from(4, 1.6)
    ds = smart(10, 4, 0.25, transform=slow, shuffle=False, num_replace_workers=1)
    ds.start()
    time.sleep(0.1)
    t0 = time.perf_counter()
    with pytest.warns(RuntimeWarning, match="still computing"):
        ds.shutdown()
    assert time.perf_counter() - t0 < 1.2
    for t in smart_threads():
        t.join(2.5)  # it discards its result instead of writing into the cache
    assert not smart_threads() and ds.core.nbytes == 4 * ITEM_BYTES  # the window only
    ds.close()


@pytest.mark.timeout(20)
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread niceness is Linux-only")
@pytest.mark.parametrize("nice", [5, None])
def test_replacement_threads_run_at_lower_priority(nice):
    base = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    with smart(num_replace_workers=2, replace_nice=nice):
        time.sleep(0.05)  # the workers lower their own priority first thing
        found = {os.getpriority(os.PRIO_PROCESS, t.native_id) for t in smart_threads()}
    assert found == {min(19, base + (nice or 0))}
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == base  # the reader is untouched


@pytest.mark.timeout(20)
def test_replacement_threads_share_the_cores_in_openmp(torch_threads):
    from fastpipe.runtime import _openmp

    if not _openmp.available():
        pytest.skip("no OpenMP runtime in this process: replacement threads keep torch's count")
    seen: set[int] = set()

    def counting(d: dict) -> dict:
        if threading.current_thread().name.startswith("fastpipe-smartcache"):
            seen.add(torch.get_num_threads())
        return volume(d)

    torch_threads(4)
    with smart(transform=counting, num_replace_workers=2) as ds:
        ds.update_cache()
        ds.update_cache()
    assert seen == {2}  # 4 threads shared by 2 workers, not a team of 4 each


@pytest.mark.timeout(20)
def test_dropped_dataset_stops_its_threads():
    ds = smart()
    ds.start()
    del ds
    gc.collect()
    assert not smart_threads()


@pytest.mark.timeout(20)
def test_thread_loader_updates_cache_each_epoch():
    from fastpipe.loader.thread_loader import ThreadDataLoader

    with smart(12, 4, 0.5, shuffle=False) as ds:
        loader = ThreadDataLoader(ds, batch_size=2, shuffle=True, num_workers=2)
        epochs = [sorted(int(x) for b in loader for x in b["x"]) for _ in range(3)]
        assert epochs == [[0, 1, 2, 3], [2, 3, 4, 5], [4, 5, 6, 7]]


@pytest.mark.timeout(20)
def test_batched_random_suffix_runs_once_per_batch():
    calls = []

    @mark_random
    def jitter(d: dict) -> dict:
        return {**d, "t": d["t"] + 0.5}

    def batch_call(items: list[dict]) -> dict:
        calls.append(len(items))
        return {"x": torch.tensor([d["x"] for d in items]), "t": torch.stack([d["t"] for d in items]) + 0.5}

    jitter.batch_call = batch_call
    jitter.set_random_state = lambda seed: jitter
    with smart(transform=[volume, jitter], shuffle=False) as ds:
        batch = ds.__getitems__([0, 3]).collated
        assert calls == [2] and batch["x"].tolist() == [0, 3]
        assert torch.all(batch["t"][1] == 3.5)


@pytest.mark.timeout(20)
def test_cache_num_at_least_len_falls_back_to_full_cache():
    with pytest.warns(UserWarning, match="falls back to a full CacheDataset") as rec:
        ds = smart(6, 6)
    assert len(rec) == 1
    with ds:
        assert len(ds) == 6 and ds.replace_num == 0
        ds.update_cache()
        assert window_set(ds) == set(range(6))
        assert not ds.is_started()
    with pytest.warns(UserWarning, match="falls back"):
        assert len(smart(6, 100)) == 6


@pytest.mark.timeout(20)
def test_a_numpy_int_cache_num_is_taken_as_monai_takes_it():
    """MONAI takes int(cache_num); fastpipe refused np.int64(4) (a count computed with numpy) with a TypeError."""
    with smart(cache_num=np.int64(4), shuffle=False) as ds:
        assert len(ds) == 4 and type(ds.cache_num) is int and ds.replace_num == 2


@pytest.mark.timeout(20)
def test_monai_s_positional_replace_rate_is_refused_with_the_order_explained():
    """MONAI's SmartCacheDataset(data, transform, 0.2, 10) passes replace_rate third; fastpipe's third
    parameter is cache_num, and the TypeError said only 'cache_num must be an int, got float 0.2'."""
    with pytest.raises(TypeError, match="takes replace_rate third and cache_num fourth"):
        SmartCacheDataset(make_data(10), volume, 0.2, 4, progress=False)


@pytest.mark.timeout(20)
@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        ({"cache_num": 0}, ValueError, "cache_num must be > 0, got 0"),
        ({"cache_num": -3}, ValueError, "cache_num must be > 0"),
        ({"cache_num": 2.5}, TypeError, "cache_num must be an int"),
        ({"replace_rate": 0.0}, ValueError, r"replace_rate must be in \(0, 1\], got 0.0"),
        ({"replace_rate": 1.5}, ValueError, "replace_rate must be in"),
        ({"replace_rate": -0.1}, ValueError, "replace_rate must be in"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        smart(**kwargs)


@pytest.mark.gpu
@pytest.mark.timeout(30)
def test_gpu_window_is_freed_on_shutdown(cuda_device):
    from fastpipe.transforms import ToDeviced

    before = torch.cuda.memory_allocated(cuda_device)
    with smart(20, 6, 0.5, transform=[volume, ToDeviced("t", device=cuda_device)]) as ds:
        assert ds[0]["t"].device.type == "cuda"
        ds.update_cache()
        assert torch.cuda.memory_allocated(cuda_device) > before
    assert torch.cuda.memory_allocated(cuda_device) == before


@pytest.mark.timeout(20)
def test_a_failing_read_names_the_item_its_one_lookup_found(monkeypatch):
    """The entry and the name in an error come from one lookup of the window, so a swap in between
    cannot make an error name another item than the one read."""
    from fastpipe.cache.errors import TransformError

    def boom(d):
        raise RuntimeError(f"value {int(d['t'].flatten()[0])}")

    with smart(transform=[volume, mark_random(boom)], shuffle=False) as ds:
        looked_up = []
        real = ds._lookup
        monkeypatch.setattr(ds, "_lookup", lambda i: looked_up.append(i) or real(i))
        monkeypatch.setattr(ds, "_slots", lambda idx: pytest.fail("a second read of the window"))
        ds.update_cache()
        expected = ds.window_indices()[1]
        with pytest.raises(TransformError, match=rf"item {expected} .*value {expected}"):
            ds[1]
        assert looked_up == [1]


def test_slices_and_index_lists_of_the_window_give_subsets():
    ds = SmartCacheDataset([{"x": i} for i in range(10)], None, cache_num=4, shuffle=False, progress=False)
    with ds:
        assert [s["x"] for s in ds[1:3]] == [1, 2] and [s["x"] for s in ds[[3, -4]]] == [3, 0]


def _drive_like_smartcache_handler(ours, theirs, epochs_per_run):
    """ignite's ``SmartCacheHandler`` over ``trainer.run()`` called once per entry of ``epochs_per_run``:
    ``start`` on STARTED, ``update_cache`` on EPOCH_COMPLETED, ``shutdown`` on COMPLETED."""
    for epochs in epochs_per_run:
        for ds in (ours, theirs):
            ds.start()
        for _ in range(epochs):
            yield
            for ds in (ours, theirs):
                ds.update_cache()
        for ds in (ours, theirs):
            ds.shutdown()
        assert not smart_threads()
        yield  # reads after shutdown


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "n,cache_num,rate,shuffle", [(10, 4, 0.5, False), (11, 5, 0.4, True), (9, 3, 1.0, True)]
)
def test_restart_after_shutdown_gives_monai_s_windows(n, cache_num, rate, shuffle):
    from monai.data import SmartCacheDataset as MonaiSmartCache

    # MONAI's SmartCacheHandler itself refuses any dataset but MONAI's (isinstance check), and ignite is
    # not installed here: the handler's call sequence is driven by hand, over three trainer.run() calls
    data = make_data(n)
    kw = {"cache_num": cache_num, "replace_rate": rate, "shuffle": shuffle, "seed": 5, "progress": False}
    ours = SmartCacheDataset(data, volume, num_replace_workers=2, **kw)
    theirs = MonaiSmartCache(data, lambda d: dict(d), **kw)
    torn: list[str] = []
    stop = threading.Event()

    def reader():  # reads during every start, round, shutdown and restart
        while not stop.is_set():
            d = ours[random.randrange(cache_num)]
            if not torch.all(d["t"] == d["x"]):
                torn.append(f"item {d['x']} read with the values of another")

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    try:
        for _ in _drive_like_smartcache_handler(ours, theirs, [1, 3, 2]):
            assert sorted(ours[i]["x"] for i in range(cache_num)) == sorted(d["x"] for d in theirs._cache)
            assert ours.core.nbytes <= (cache_num + ours.replace_num) * ITEM_BYTES
    finally:
        stop.set()
        t.join(5)
        ours.close()
        theirs.shutdown()
    assert not torn and not t.is_alive() and not smart_threads() and ours.core.nbytes == 0


@pytest.mark.timeout(60)
def test_set_data_gives_monai_s_windows_and_shuts_a_running_dataset_down_first():
    from monai.data import SmartCacheDataset as MonaiSmartCache

    kw = {"cache_num": 4, "replace_rate": 0.5, "shuffle": True, "seed": 2, "progress": False}
    ours = SmartCacheDataset(make_data(10), volume, **kw)
    theirs = MonaiSmartCache(make_data(10), lambda d: dict(d), **kw)
    new = [{**d, "x": d["x"] + 100} for d in make_data(10)]
    try:
        for ds in (ours, theirs):
            ds.start()
            ds.update_cache()
        with pytest.raises(TypeError, match="list of items"):
            ours.set_data(torch.utils.data.TensorDataset(torch.zeros(10)))
        assert ours.is_started() and ours[0]["x"] in range(10)  # nothing stopped or freed
        with pytest.warns(UserWarning, match="shutting them down first"):
            ours.set_data(new)
        assert not ours.is_started() and not smart_threads()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # MONAI's own "not shutdown yet" warning
            theirs.set_data(new)
        for _ in range(4):
            assert sorted(ours[i]["x"] for i in range(4)) == sorted(d["x"] for d in theirs._cache)
            assert all(torch.all(ours[i]["t"] == ours[i]["x"]) for i in range(4))
            for ds in (ours, theirs):
                ds.update_cache()
        assert ours.core.nbytes <= (4 + ours.replace_num) * ITEM_BYTES
    finally:
        ours.close()
        theirs.shutdown()
    assert not smart_threads() and ours.core.nbytes == 0


def test_window_indices_name_data_list_indices_on_a_shard():
    """On a rank's shard window_indices() returned shard positions ([0, 1, 2]) where the window held
    data items [0, 9, 4]: a check of the window against MONAI's (or a log of it) named other items."""
    data = [{"x": i} for i in range(12)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = SmartCacheDataset(
            data, None, cache_num=3, replace_rate=0.5, shuffle=False, progress=False, rank=1, world_size=2
        )
    try:
        read = [ds[i]["x"] for i in range(len(ds))]
        assert ds.window_indices() == read == [ds.data_index(i) for i in range(len(ds))]
        ds.update_cache()
        assert ds.window_indices() == [ds[i]["x"] for i in range(len(ds))]
    finally:
        ds.close()
