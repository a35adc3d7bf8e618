"""CacheDataset: chain split, zero-copy reads, batched path, seeding, errors, MONAI interop."""

from __future__ import annotations

import logging
import threading
import time
import warnings

import pytest
import torch
from _cache_helpers import CountingDet, RandAdd, items, rand_noise_list  # noqa: E402

from fastpipe import CacheDataset
from fastpipe.cache._core import chain_device
from fastpipe.cache._fill import run_fill
from fastpipe.cache.errors import CacheFillError
from fastpipe.transforms import EnsureTyped, ToDeviced, mark_deterministic


def test_prefix_runs_once_and_suffix_per_read():
    det = CountingDet()
    ds = CacheDataset(items(5), [det, RandAdd()], progress=False, num_workers=2)
    assert len(ds) == 5 and det.calls == 5
    for _ in range(3):
        for i in range(5):
            out = ds[i]
            assert out["image"].shape == (1, 6, 6, 6)
            assert 0 <= float(out["image"][0, 0, 0, 0]) - i < 1  # x + u, u in [0, 1)
    assert det.calls == 5
    s = ds.stats()
    assert s["items"]["host"] == 5 and s["hits"] == 15 and s["misses"] == 0
    assert s["bytes"]["host"] == 5 * 216 * 4 and s["fill_s"] > 0
    assert "CacheDataset(len=5" in repr(ds) and "RandAdd" in repr(ds)


@pytest.mark.parametrize("suffix", [[RandAdd()], [RandAdd(batched=True)], [rand_noise_list], []], ids=str)
def test_reads_never_copy_or_change_the_cache(suffix):
    ds = CacheDataset(items(3), [CountingDet(), *suffix], progress=False)
    cached = [ds.core.store.get(s)["image"] for s in range(3)]
    ptrs = [t.data_ptr() for t in cached]
    before = [t.clone() for t in cached]
    for _ in range(20):
        ds.__getitems__([0, 1, 2])
        ds[1]
    assert [ds.core.store.get(s)["image"].data_ptr() for s in range(3)] == ptrs
    for t, b in zip(cached, before, strict=True):
        assert torch.equal(t, b)
    if not suffix:  # a read without a random suffix hands out the cached tensor itself
        assert ds[0]["image"].data_ptr() == ptrs[0]


def test_read_gets_fresh_dicts_so_key_assignment_cannot_reach_the_cache():
    ds = CacheDataset(
        [{"x": 1, "image_meta_dict": {"affine": torch.eye(4)}}], [CountingDet()], progress=False
    )
    out = ds[0]
    out["image"] = None
    out["image_meta_dict"]["affine"] = None
    assert isinstance(ds[0]["image"], torch.Tensor) and ds[0]["image_meta_dict"]["affine"] is not None


def test_copy_cache_true_deep_copies():
    ds = CacheDataset(items(2), [CountingDet()], progress=False, copy_cache=True)
    assert ds[0]["image"].data_ptr() != ds.core.store.get(0)["image"].data_ptr()


def test_getitems_batched_path_returns_items_carrying_the_collated_dict_else_list():
    batched = CacheDataset(items(4), [CountingDet(), RandAdd(batched=True)], progress=False)
    assert batched.batched
    out = batched.__getitems__([3, 1])
    assert isinstance(out, list) and [o["x"].item() for o in out] == [3, 1]  # any collate_fn stacks these
    assert out.collated["image"].shape == (2, 1, 6, 6, 6) and out.collated["x"].tolist() == [3, 1]
    assert out[1]["image"].data_ptr() == out.collated["image"][1].data_ptr()  # views, not copies
    per_item = CacheDataset(items(4), [CountingDet(), RandAdd()], progress=False)
    out = per_item.__getitems__([3, 1])
    assert isinstance(out, list) and [o["x"] for o in out] == [3, 1]


def test_same_seed_same_results_and_fetch_seeded_is_replayable():
    def run(seed):
        ds = CacheDataset(items(4), [CountingDet(), RandAdd()], progress=False, seed=seed)
        return torch.stack([ds[i]["image"] for i in range(4)])

    assert torch.equal(run(7), run(7)) and not torch.equal(run(7), run(8))
    ds = CacheDataset(items(4), [CountingDet(), RandAdd(batched=True)], progress=False)
    assert torch.equal(ds.fetch_seeded([0, 2], 5)["image"], ds.fetch_seeded([0, 2], 5)["image"])
    assert not torch.equal(ds.fetch_seeded([0, 2], 5)["image"], ds.fetch_seeded([0, 2], 6)["image"])


def test_cache_rate_and_cache_num_limit_the_cached_items():
    det = CountingDet()
    ds = CacheDataset(items(10), [det], progress=False, cache_rate=0.5)
    assert ds.stats()["items"]["host"] == 5 and det.calls == 5
    assert float(ds[7]["image"][0, 0, 0, 0]) == 7.0 and ds.misses == 1 and det.calls == 6
    ds = CacheDataset(items(10), [CountingDet()], progress=False, cache_num=3)
    assert ds.stats()["items"]["host"] == 3


def test_map_style_dataset_input_is_the_cached_prefix():
    class Source(torch.utils.data.Dataset):
        def __init__(self):
            self.reads = 0

        def __len__(self):
            return 4

        def __getitem__(self, i):
            self.reads += 1
            return {"image": torch.full((1, 3, 3, 3), float(i))}

    src = Source()
    ds = CacheDataset(src, RandAdd(), progress=False)
    assert src.reads == 4 and len(ds) == 4
    for _ in range(3):
        assert 2 <= float(ds[2]["image"].min()) < 3
    assert src.reads == 4


def test_device_point_is_found_in_fastpipe_and_monai_chains():
    from monai.transforms import EnsureTyped as MEnsureTyped
    from monai.transforms import ToDeviced as MToDeviced

    assert chain_device([CountingDet()]) == torch.device("cpu")
    assert chain_device([ToDeviced("image", "cuda:0")]) == torch.device("cuda:0")
    assert chain_device([EnsureTyped("image", device="cuda:1")]) == torch.device("cuda:1")
    assert chain_device([EnsureTyped("image")]) == torch.device("cpu")
    assert chain_device([MToDeviced(["image"], device="cuda:0")]) == torch.device("cuda:0")
    assert chain_device([MEnsureTyped(["image"], device="cuda:0", track_meta=False)]) == torch.device(
        "cuda:0"
    )


def test_to_device_then_cache_on_cpu_keeps_meta_and_indices():
    idx = torch.arange(5)
    data = [{"x": 0, "image_meta_dict": {"affine": torch.eye(4)}, "label_fg_indices": idx}]
    chain = [CountingDet(), ToDeviced(["image", "label_fg_indices"], device="cpu"), RandAdd()]
    ds = CacheDataset(data, chain, progress=False)
    assert ds.core.device == torch.device("cpu")
    assert torch.equal(ds[0]["label_fg_indices"], idx) and "affine" in ds[0]["image_meta_dict"]


@pytest.mark.gpu
def test_to_device_then_cache_on_gpu(cuda_device):
    seen = []

    def after(d):
        seen.append(d["image"].device.type)
        return d

    ds = CacheDataset(
        items(3), [CountingDet(), ToDeviced("image", cuda_device), after, RandAdd()], progress=False
    )
    assert seen == ["cuda"] * 3 and ds.stats()["items"]["cuda"] == 3
    assert ds.core.store.get(0)["image"].is_cuda
    for _ in range(3):  # cached epochs read device memory only: no host-to-device copy of volume data
        for i in range(3):
            assert ds[i]["image"].is_cuda
    assert ds.stats()["h2d_bytes"] == 0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"cache_rate": 1.5}, "cache_rate"),
        ({"cache_rate": -0.1}, "cache_rate"),
        ({"cache_rate": 24}, "got 24 .*pass cache_num=24 by keyword"),  # MONAI's 3rd positional is cache_num
        ({"budget": "lots"}, "invalid budget"),
        ({"budget": {"gpu": "1GiB"}}, "unknown budget tier"),
        ({"on_error": "ignore"}, "on_error"),
    ],
)
def test_bad_arguments_raise_value_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        CacheDataset(items(2), [CountingDet()], progress=False, **kwargs)


def test_empty_data_raises_value_error():
    with pytest.raises(ValueError, match="empty"):
        CacheDataset([], [CountingDet()], progress=False)


@pytest.mark.parametrize("workers", [1, 2])  # 1: the calling thread; 2: a pool
def test_fill_error_names_item_index_and_file(workers):
    data = items(4)
    data[2] = {
        "x": 2,
        "fail": True,
        "name": "broken.nii.gz",
        "image_meta_dict": {"filename_or_obj": "/d/broken.nii.gz"},
    }
    with pytest.raises(CacheFillError, match=r"item 2 \(/d/broken.nii.gz\).*cannot read broken") as info:
        CacheDataset(data, [CountingDet()], progress=False, num_workers=workers)
    assert isinstance(info.value.__cause__, ValueError)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("workers", [1, 2])
def test_first_fill_error_stops_the_jobs_not_yet_started(workers):
    started: list[int] = []

    def job(slot: int) -> None:
        started.append(slot)
        if slot == 0:
            raise ValueError("broken item")
        time.sleep(0.02)

    with pytest.raises(CacheFillError, match="item 0"):
        run_fill(range(40), job, lambda s: {}, workers, progress=False)
    assert len(started) < 40  # not all started: the rest were cancelled
    time.sleep(0.1)
    assert len(started) < 40  # and none started after the error was raised


@pytest.mark.timeout(60)
@pytest.mark.parametrize("on_error", ["raise", "skip"])
@pytest.mark.parametrize("workers", [1, 2])
def test_a_keyboard_interrupt_in_a_fill_job_stops_the_fill_as_itself(workers, on_error):
    """Not an item error: a pool thread's KeyboardInterrupt was skipped (on_error="skip") or wrapped in a
    CacheFillError that ``except KeyboardInterrupt`` missed; the calling thread's propagated as is."""

    def job(d):
        if d["x"] == 2:
            raise KeyboardInterrupt("stop")
        return d

    with pytest.raises(KeyboardInterrupt, match="stop"):
        CacheDataset(items(6), [job], progress=False, num_workers=workers, on_error=on_error)


@pytest.mark.parametrize("workers", [1, 2])
def test_on_error_skip_logs_and_drops(caplog, workers):
    data = items(4)
    data[1] = {"x": 1, "fail": True, "name": "bad1.nii.gz"}
    with caplog.at_level(logging.WARNING, logger="fastpipe.cache._fill"):
        ds = CacheDataset(data, [CountingDet()], progress=False, on_error="skip", num_workers=workers)
    assert len(ds) == 3 and [ds[i]["x"] for i in range(3)] == [0, 2, 3]
    assert "item 1 (bad1.nii.gz)" in caplog.text and 1 in ds.stats()["skipped"]


def test_on_error_skip_on_a_rank_keys_skipped_by_the_data_list_index():
    data = items(8)
    shard = CacheDataset(data, [CountingDet()], progress=False, rank=1, world_size=2).shard["indices"]
    bad = shard[2]  # at position 2 of rank 1's shard
    data[bad] = {"x": bad, "fail": True, "name": f"bad{bad}.nii.gz"}
    ds = CacheDataset(data, [CountingDet()], progress=False, on_error="skip", rank=1, world_size=2)
    assert bad != 2 and list(ds.stats()["skipped"]) == [bad]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("workers,in_caller", [(1, True), (2, False)])
def test_one_fill_worker_is_the_calling_thread(workers, in_caller):
    """One worker fills in the calling thread (no pool thread whose OpenMP team would add to the caller's)."""
    seen: list[threading.Thread] = []

    def record(d):
        seen.append(threading.current_thread())
        return d

    def fill() -> None:
        CacheDataset(items(4), [record], progress=False, num_workers=workers)

    caller = threading.Thread(target=fill, name="caller")
    caller.start()
    caller.join(30)
    assert not caller.is_alive() and len(seen) == 4
    assert all(t is caller for t in seen) == in_caller
    assert any(t is caller for t in seen) == in_caller


def test_monai_transforms_inside_fastpipe_cache_dataset():
    from monai.transforms import FgBgToIndicesd, RandCropByPosNegLabeld, RandFlipd, ScaleIntensityRanged

    def make(d):
        g = torch.Generator().manual_seed(d["x"])
        label = torch.zeros(1, 16, 16, 16)
        label[:, 4:9, 5:10, 6:11] = 1
        return {"image": torch.rand(1, 16, 16, 16, generator=g) * 200 - 50, "label": label}

    chain = [
        mark_deterministic(
            make
        ),  # with MONAI transforms a plain callable is random unless marked, as in MONAI
        ScaleIntensityRanged("image", a_min=-57, a_max=164, b_min=0.0, b_max=1.0, clip=True),
        FgBgToIndicesd("label"),
        RandCropByPosNegLabeld(
            ["image", "label"],
            "label",
            (8, 8, 8),
            pos=1,
            neg=1,
            num_samples=4,
            fg_indices_key="label_fg_indices",
            bg_indices_key="label_bg_indices",
        ),
        RandFlipd(["image", "label"], prob=0.5, spatial_axis=0),
    ]
    ds = CacheDataset(
        items(3), chain, progress=False, seed=3, translate=False
    )  # MONAI's objects run as given
    assert len(ds.suffix) == 2 and "label_fg_indices" in ds.core.store.get(0)
    before = ds.core.store.get(0)["image"].clone()
    out = ds[0]
    assert isinstance(out, list) and len(out) == 4 and tuple(out[0]["image"].shape) == (1, 8, 8, 8)
    assert 0.0 <= float(out[0]["image"].min()) and float(out[0]["image"].max()) <= 1.0
    assert torch.equal(ds.core.store.get(0)["image"], before)
    again = CacheDataset(items(3), chain, progress=False, seed=3, translate=False)
    assert torch.equal(
        torch.as_tensor(again[0][0]["image"]),
        torch.as_tensor(
            CacheDataset(items(3), chain, progress=False, seed=3, translate=False)[0][0]["image"]
        ),
    )


# --- nothing a read hands out is the cache's own memory ---------------------------------------------


def _volumes(n=2):
    g = torch.Generator().manual_seed(0)
    out = []
    for _ in range(n):
        label = torch.zeros((1, 16, 16, 16))
        label[0, 4:12, 4:12, 4:12] = 1
        out.append(
            {"image": torch.rand((1, 16, 16, 16), generator=g), "label": label, "weight": torch.ones(3)}
        )
    return out


@pytest.mark.parametrize("copy_cache", [None, False])
def test_a_monai_transform_writing_its_input_leaves_the_cache_alone_by_default(copy_cache):
    import monai.transforms as M

    chain = M.Compose([M.EnsureTyped(["image", "label"], track_meta=False),
                       M.RandCoarseDropoutd("image", holes=4, spatial_size=4, fill_value=-5.0, prob=1.0)])  # fmt: skip
    ds = CacheDataset(_volumes(), chain, progress=False, num_workers=1, copy_cache=copy_cache)
    for _ in range(3):
        for i in range(len(ds)):
            assert int((ds[i]["image"] == -5.0).sum()) > 0  # the dropout ran
    filled = int((ds.cached_entry(0)["image"] == -5.0).sum())
    # auto (MONAI's default copy): the entry is untouched; copy_cache=False: the documented hazard
    assert (filled == 0) if copy_cache is None else (filled > 0)


def test_a_batch_value_the_crop_does_not_cut_is_a_copy():
    from fastpipe.transforms import RandCropByPosNegLabeld

    crop = RandCropByPosNegLabeld(["image", "label"], "label", (8, 8, 8), num_samples=2)
    ds = CacheDataset(_volumes(), [crop], progress=False, num_workers=1)
    assert ds.batched and ds.copy_cache is False  # fresh crops: no copy of the whole entry
    batch = ds.fetch_seeded([0, 1], seed=0)
    batch["weight"][0].div_(4)  # the training code edits what it was given
    batch["image"].zero_()
    assert torch.equal(ds.cached_entry(0)["weight"], torch.ones(3))
    assert ds.cached_entry(0)["image"].abs().sum() > 0
    assert batch["weight"][1] is batch["weight"][0]  # one copy per item, shared by its crops


def test_slices_and_index_lists_give_subsets_as_monai_and_a_bad_index_names_the_length():
    from monai.data import CacheDataset as MonaiCacheDataset

    data = [{"x": i} for i in range(10)]
    ds = CacheDataset(data, [lambda d: {**d, "y": 1}], cache_rate=0.5, progress=False)
    ref = MonaiCacheDataset(data, lambda d: {**d, "y": 1}, cache_rate=0.5, progress=False)
    for index in (slice(2, 5), slice(None, None, -3), [1, -1, 7]):
        ours, theirs = ds[index], ref[index]
        assert isinstance(ours, torch.utils.data.Subset)
        assert [ours[i] for i in range(len(ours))] == [theirs[i] for i in range(len(theirs))]
    assert ds[-1] == ref[-1] == {"x": 9, "y": 1}
    with pytest.raises(IndexError, match="index 10 out of range for a CacheDataset of 10 items"):
        ds[10]


@pytest.mark.parametrize(("cache_num", "cache_rate"), [(2.5, 1.0), (3.0, 0.99), (7, 0.35), (0, 1.0)])
def test_cached_items_are_monai_s_for_the_same_cache_num_and_cache_rate(cache_num, cache_rate):
    from monai.data import CacheDataset as MonaiCacheDataset

    data = [{"x": i} for i in range(10)]
    ref = MonaiCacheDataset(data, None, cache_num=cache_num, cache_rate=cache_rate, progress=False)
    ds = CacheDataset(data, [lambda d: d], cache_num=cache_num, cache_rate=cache_rate, progress=False)
    assert [s for s in range(10) if s in ds.core] == list(range(ref.cache_num))


def test_set_data_recomputes_the_cache_as_monai_s_does():
    from monai.data import CacheDataset as MonaiCache

    ds = CacheDataset(items(4), [CountingDet(), RandAdd()], cache_rate=0.5, progress=False)
    first = ds[0]["image"] - ds.cached_entry(0)["image"]  # the random suffix's first draw
    new = [{"x": 10 + i, "name": f"new{i}.nii.gz"} for i in range(6)]
    ds.set_data(new)
    theirs = MonaiCache(new, lambda d: d, cache_rate=0.5, progress=False)
    assert (
        len(ds) == 6 and ds.stats()["items"]["host"] == len(theirs._cache) == 3
    )  # cache_rate on the new length
    assert [ds.cached_entry(i)["x"] for i in range(6)] == list(range(10, 16))
    assert torch.equal(ds.cached_entry(1)["image"], CountingDet()(new[1])["image"])
    again = ds[0]["image"] - ds.cached_entry(0)["image"]
    assert not torch.equal(again, first)  # the suffix's random stream goes on, as MONAI's set_data leaves it
    with pytest.raises(TypeError, match="list of items"):
        ds.set_data("new.json")


def test_set_data_without_a_transform_and_on_a_map_style_dataset():
    ds = CacheDataset(items(1), None, progress=False)
    ds.set_data(items(3))  # no prefix at all: nothing to check it against
    assert len(ds) == 3 and ds[2]["x"] == 2
    on_dataset = CacheDataset(torch.utils.data.TensorDataset(torch.arange(3.0)), None, progress=False)
    with pytest.raises(TypeError, match="map-style dataset"):
        on_dataset.set_data(items(3))


@pytest.mark.parametrize("smart", [False, True])
def test_set_data_does_not_restart_the_random_stream_of_the_users_transforms(smart):
    """set_data() rebuilt the plan on the user's own MONAI transform objects and reseeded them, so the
    epoch after set_data() replayed epoch 0's random draws exactly; the stream now goes on, as it
    does without set_data() (and as MONAI's set_data leaves it)."""
    from monai import transforms as M

    from fastpipe import SmartCacheDataset

    data = [{"image": torch.arange(8.0).reshape(1, 2, 2, 2) + i} for i in range(4)]

    def make():
        chain = M.Compose([M.EnsureTyped("image"), M.RandGaussianNoised("image", prob=1.0, std=1.0)])
        if smart:
            return SmartCacheDataset(
                data, chain, cache_num=3, shuffle=False, seed=5, progress=False, translate=False
            )
        return CacheDataset(data, chain, seed=5, progress=False, translate=False)

    def epoch(ds):
        return [ds[i]["image"].clone() for i in range(len(ds))]

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours, plain = make(), make()
        first, _ = epoch(ours), epoch(plain)
        ours.set_data(data)
    after, expected = epoch(ours), epoch(plain)
    assert not all(torch.equal(a, b) for a, b in zip(after, first, strict=True))  # not epoch 0 again
    assert all(torch.equal(a, b) for a, b in zip(after, expected, strict=True))  # the stream went on


@pytest.mark.parametrize("budget", [None, {"host": 700, "disk": None}])  # host only; host and disk tiers
def test_a_dataset_pickles_for_worker_processes_as_monai_s_does(budget):
    """A DataLoader whose workers start by spawn/forkserver (macOS, Windows, Linux from Python 3.14) pickles
    the dataset: a CacheDataset raised ``cannot pickle '_thread.lock' object``; MONAI's pickles."""
    import pickle

    from fastpipe.transforms import ScaleIntensityRanged

    data = [{"a": torch.full((1, 4, 4, 4), float(i))} for i in range(4)]
    ds = CacheDataset(data, [ScaleIntensityRanged(["a"], 0, 10, 0, 1)], progress=False, budget=budget)
    copy = pickle.loads(pickle.dumps(ds))
    assert copy.stats()["items"]["host"] == ds.stats()["items"]["host"] and len(copy) == 4
    assert copy.stats()["items"]["disk"] == ds.stats()["items"]["disk"]  # it maps the owner's files
    assert all(torch.equal(copy[i]["a"], ds[i]["a"]) for i in range(4))
    assert copy.misses == 0  # the disk tier's items too: read, not computed per read
    items = ds.stats()["items"]
    copy.close()  # the copy's close frees its own entries, never the owner's (nor its disk tier's files)
    assert all(torch.equal(ds[i]["a"], torch.full((1, 4, 4, 4), i / 10)) for i in range(4))
    assert ds.stats()["items"] == items and ds.misses == 0
    disk = ds.core.store._disk
    assert (disk is None) == (budget is None) and (disk is None or any(disk.root.glob("*.npy")))
    from multiprocessing.reduction import ForkingPickler  # as a worker process gets it

    ForkingPickler.dumps(ds)
    on_disk = [e for t, e, _ in ds.core.store._slots.values() if t == "disk"]
    assert not any(e["a"].is_shared() for e in on_disk)  # the mapped files stay files, not shared memory


@pytest.mark.timeout(180)
@pytest.mark.parametrize("library", ["monai", "fastpipe"])
def test_a_spawned_torch_dataloader_worker_reads_the_cache(library):
    """fastpipe's random transforms pickled their generator's state as a tensor, which reached a spawned
    worker as shared memory already gone: 'unable to resize file ... Invalid argument', worker died."""
    if library == "monai":
        from monai.transforms import RandScaleIntensityd
    else:
        from fastpipe.transforms import RandScaleIntensityd

    from fastpipe.transforms import ScaleIntensityRanged

    data = [{"a": torch.full((1, 4, 4, 4), float(i))} for i in range(4)]
    chain = [ScaleIntensityRanged(["a"], 0, 10, 0, 1), RandScaleIntensityd(["a"], 0.1, prob=1.0)]
    ds = CacheDataset(data, chain, progress=False, translate=False)
    loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=1, multiprocessing_context="spawn")
    batches = [b["a"] for b in loader]
    assert [tuple(b.shape) for b in batches] == [(2, 1, 4, 4, 4)] * 2
    assert torch.allclose(batches[1][1], torch.full((1, 4, 4, 4), 0.3), atol=0.031)
    assert not torch.equal(batches[1][1], torch.full((1, 4, 4, 4), 0.3))  # the random suffix ran


@pytest.mark.parametrize("bad", [["img1.nii.gz"], []], ids=["paths", "empty"])
def test_a_refused_set_data_keeps_the_cache(bad):
    """The old entries were freed before the new list was refused: every later read recomputed its item."""
    from fastpipe.transforms import ScaleIntensityRanged

    data = [{"a": torch.full((1, 4, 4, 4), float(i))} for i in range(4)]
    ds = CacheDataset(data, [ScaleIntensityRanged(["a"], 0, 10, 0, 1)], progress=False)
    with pytest.raises((TypeError, ValueError)):
        ds.set_data(bad)
    assert ds.stats()["items"]["host"] == 4 and len(ds) == 4
    assert torch.equal(ds[3]["a"], torch.full((1, 4, 4, 4), 0.3)) and ds.misses == 0


def test_monai_only_arguments_are_taken_and_warn_only_where_monai_would_share_or_defer():
    """A MONAI script passing as_contiguous/hash_as_key/hash_func/runtime_cache failed with TypeError."""
    from monai.data.utils import pickle_hashing

    data = [{"x": i % 2} for i in range(4)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds = CacheDataset(
            data,
            [CountingDet()],
            progress=False,
            as_contiguous=False,
            hash_func=pickle_hashing,
            runtime_cache=False,
        )
    assert [ds[i]["x"] for i in range(4)] == [0, 1, 0, 1]
    with pytest.warns(UserWarning, match=r"hash_as_key=True.*runtime_cache='threads'") as record:
        ds = CacheDataset(data, [CountingDet()], progress=False, hash_as_key=True, runtime_cache="threads")
    assert record[0].filename == __file__ and ds.stats()["items"]["host"] == 4
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds.set_data(data[:2])  # warned once, when made


def test_a_shallow_copy_going_away_leaves_the_owner_s_cache():
    import copy
    import gc

    from fastpipe.transforms import ScaleIntensityRanged

    data = [{"a": torch.full((1, 4, 4, 4), float(i))} for i in range(3)]
    ds = CacheDataset(data, [ScaleIntensityRanged(["a"], 0, 10, 0, 1)], progress=False)
    shallow, deep = copy.copy(ds), copy.deepcopy(ds)  # a shallow copy shares the core (its finalizer did not)
    assert shallow.core is ds.core and deep.core is not ds.core
    del shallow, deep
    gc.collect()
    assert ds.stats()["items"]["host"] == 3 and ds.misses == 0
    assert torch.equal(ds[2]["a"], torch.full((1, 4, 4, 4), 0.2)) and ds.misses == 0


def test_consecutive_seeds_give_the_suffix_transforms_unrelated_streams():
    """Transform j was seeded with seed + j, and torch seeds DataLoader worker w with base + w: worker
    1's first random transform replayed worker 0's second (the same offsets on another key)."""
    from fastpipe.cache._copies import seed_suffix
    from fastpipe.transforms import RandShiftIntensityd

    def draws(seed: int) -> list[float]:
        suffix = [
            RandShiftIntensityd("image", offsets=100, prob=1.0),
            RandShiftIntensityd("label", 100, prob=1.0),
        ]
        seed_suffix(suffix, seed)
        return [float(t.draw(1)["value"].flatten()[0]) for t in suffix]

    worker0, worker1 = draws(1000), draws(1001)
    assert worker1[0] != worker0[1] and len({*worker0, *worker1}) == 4
    assert draws(1000) == worker0  # still reproducible
