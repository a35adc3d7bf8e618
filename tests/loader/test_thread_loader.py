"""ThreadDataLoader and list_data_collate: batching, collation, timings, threads, errors, prefetch."""

from __future__ import annotations

import gc
import threading
import traceback

import numpy as np
import pytest
import torch
from _cache_helpers import CountingDet, RandAdd, items, rand_noise_list  # noqa: E402

from fastpipe import CacheDataset, ThreadDataLoader, list_data_collate  # noqa: E402
from fastpipe.profiling.report import summarize  # noqa: E402


def _fastpipe_threads() -> list[threading.Thread]:
    """Threads a loader or dataset started. Not the crop-copy helpers: one idle pool for the whole process,
    like torch's OpenMP threads (``fastpipe.runtime._copy_threads``), which no loader owns or stops."""
    return [
        t
        for t in threading.enumerate()
        if t.name.startswith("fastpipe-") and not t.name.startswith("fastpipe-copy")
    ]


def test_collate_of_nested_dicts_and_sequences_is_monais():
    """MONAI code reads batch["image_meta_dict"]["filename_or_obj"][i]: meta dicts collate key by key,
    equal-length lists and tuples position by position, as MONAI's list_data_collate (torch's collate)."""
    from monai.data import list_data_collate as monai_collate

    items = [
        {
            "image_meta_dict": {"filename_or_obj": f"/d/s{i}.nii.gz", "affine": torch.eye(4) * (i + 1),
                                "spatial_shape": np.array([4, 5, 6]), "original_channel_dim": float("nan")},
            "size": (96, 96, 96),
            "pair": [torch.zeros(2), torch.full((3,), float(i))],
        }
        for i in range(3)
    ]  # fmt: skip
    ours, theirs = list_data_collate(items), monai_collate(items)
    meta, want = ours["image_meta_dict"], theirs["image_meta_dict"]
    assert meta["filename_or_obj"] == list(want["filename_or_obj"]) == [f"/d/s{i}.nii.gz" for i in range(3)]
    for key in ("affine", "spatial_shape"):
        assert torch.equal(meta[key], torch.as_tensor(want[key])), key
    assert meta["original_channel_dim"].shape == (3,) and torch.isnan(meta["original_channel_dim"]).all()
    assert [torch.equal(a, b) for a, b in zip(ours["size"], theirs["size"], strict=True)] == [True] * 3
    assert [torch.equal(a, b) for a, b in zip(ours["pair"], theirs["pair"], strict=True)] == [True] * 2


def test_collate_flattens_samples_stacks_tensors_keeps_meta_and_strings():
    meta = {"affine": torch.eye(4)}
    vol = [
        [
            {"image": torch.full((1, 2, 2, 2), float(b * 4 + s)), "name": f"v{b}", "image_meta_dict": meta}
            for s in range(4)
        ]
        for b in range(2)
    ]
    batch = list_data_collate(vol)
    assert batch["image"].shape == (8, 1, 2, 2, 2)
    assert batch["image"][:, 0, 0, 0, 0].tolist() == list(range(8))
    assert batch["name"] == ["v0"] * 4 + ["v1"] * 4
    assert torch.equal(batch["image_meta_dict"]["affine"], torch.eye(4).expand(8, 4, 4))  # a dict of batches
    ragged = list_data_collate([{"idx": torch.arange(3), "n": 1}, {"idx": torch.arange(5), "n": 2}])
    assert isinstance(ragged["idx"], list) and torch.equal(ragged["n"], torch.tensor([1, 2]))
    already = {"image": torch.zeros(2)}
    assert list_data_collate(already) is already
    images = [{"image": torch.zeros(1, 4, 4, 3)}, {"image": torch.zeros(1, 5, 4, 3)}]
    with pytest.raises(ValueError, match=r"'image' holds tensors of different shapes.*pad_list_data_collate"):
        list_data_collate(images)  # MONAI's collate raises too; a list would reach the model
    assert isinstance(list_data_collate(images, ragged=True)["image"], list)
    with pytest.raises(ValueError, match="item 1 has keys"):
        list_data_collate([{"a": 1}, {"b": 2}])


@pytest.mark.timeout(30)
def test_big_batches_collate_to_what_torch_stack_gives():
    # past MIN_SPLIT_BYTES, off the main thread, the copies are split over threads: same values, dtype and layout as torch.stack
    from fastpipe.runtime._copy_threads import MIN_SPLIT_BYTES

    g = torch.Generator().manual_seed(0)
    crops = [torch.rand((1, 40, 40, 40), generator=g) for _ in range(8)]
    labels = [(c > 0.5).to(torch.uint8) for c in crops]
    strided = [c.transpose(1, 3) for c in crops]  # non-contiguous inputs
    items = [{"image": c, "label": lab, "t": s} for c, lab, s in zip(crops, labels, strided, strict=True)]
    made: list = []
    t = threading.Thread(target=lambda: made.append(list_data_collate(items)))  # as the loader thread does
    t.start()
    t.join(timeout=20)
    batch = made[0]
    assert batch["image"].nbytes >= MIN_SPLIT_BYTES
    for key, values in (("image", crops), ("label", labels), ("t", strided)):
        want = torch.stack(values)
        assert batch[key].dtype == want.dtype and batch[key].is_contiguous()
        assert torch.equal(batch[key], want)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("workers,expected", [(2, 2), (4, 1)])
def test_fetch_workers_share_the_cores_in_openmp(torch_threads, workers, expected):
    from fastpipe.runtime import _openmp

    if not _openmp.available():
        pytest.skip("no OpenMP runtime in this process: fetch threads keep torch's count")

    class Seen(torch.utils.data.Dataset):
        def __init__(self) -> None:
            self.counts: set[int] = set()

        def __len__(self) -> int:
            return 8

        def __getitem__(self, i: int) -> dict:
            self.counts.add(torch.get_num_threads())
            return {"x": torch.tensor(i)}

    ds = Seen()
    torch_threads(4)
    assert sum(len(b["x"]) for b in ThreadDataLoader(ds, batch_size=2, num_workers=workers)) == 8
    assert ds.counts == {expected}  # 4 threads shared out, not a team of 4 per fetch thread


@pytest.mark.timeout(20)
def test_order_len_drop_last_and_repeats():
    data = [{"x": torch.tensor(i)} for i in range(7)]
    loader = ThreadDataLoader(data, batch_size=3)
    assert len(loader) == 3 and [b["x"].tolist() for b in loader] == [[0, 1, 2], [3, 4, 5], [6]]
    loader = ThreadDataLoader(data, batch_size=3, drop_last=True, repeats=2)
    assert len(loader) == 2 and [b["x"].tolist() for b in loader] == [[0, 1, 2]] * 2 + [[3, 4, 5]] * 2


@pytest.mark.timeout(20)
def test_shuffle_is_seeded_per_epoch_and_generator_is_honoured():
    data = [{"x": torch.tensor(i)} for i in range(16)]
    a, b = (
        ThreadDataLoader(data, batch_size=4, shuffle=True, seed=1),
        ThreadDataLoader(data, 4, shuffle=True, seed=1),
    )
    ea = [[x["x"].tolist() for x in a] for _ in range(2)]
    assert ea == [[x["x"].tolist() for x in b] for _ in range(2)] and ea[0] != ea[1]
    assert sorted(sum(ea[0], [])) == list(range(16))
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    assert [x["x"].tolist() for x in ThreadDataLoader(data, 4, shuffle=True, generator=g1)] == [
        x["x"].tolist() for x in ThreadDataLoader(data, 4, shuffle=True, generator=g2)
    ]


def test_an_unseeded_loader_and_dataset_follow_torchs_global_seed():
    # MONAI's loaders seed their transforms from torch's global generator: torch.manual_seed (or
    # set_determinism) replays a run, and two unseeded runs differ. A fixed default seed made every
    # program draw the same shuffles and augmentations whatever the user seeded.
    data = [{"x": torch.tensor(i)} for i in range(16)]

    def run(global_seed: int) -> list[list]:
        torch.manual_seed(global_seed)
        ds = CacheDataset(
            [{"image": torch.zeros(2), "x": i} for i in range(4)], [RandAdd(batched=True)], progress=False
        )
        shuffled = [x["x"].tolist() for x in ThreadDataLoader(data, 4, shuffle=True)]
        drawn = [b["image"].tolist() for b in ThreadDataLoader(ds, batch_size=2)]
        return [shuffled, drawn, [ds[0]["image"].tolist()]]

    assert run(3) == run(3)
    a, b = run(3), run(4)
    assert all(x != y for x, y in zip(a, b, strict=True))
    torch.manual_seed(3)
    fixed = [x["x"].tolist() for x in ThreadDataLoader(data, 4, shuffle=True, seed=7)]
    torch.manual_seed(4)
    assert fixed == [x["x"].tolist() for x in ThreadDataLoader(data, 4, shuffle=True, seed=7)]


@pytest.mark.timeout(20)
@pytest.mark.parametrize("num_workers", [0, 3])
def test_multi_sample_items_flatten_into_batch(num_workers):
    ds = CacheDataset(items(4), [CountingDet(), rand_noise_list], progress=False)
    batches = list(ThreadDataLoader(ds, batch_size=2, num_workers=num_workers))
    assert [b["image"].shape[0] for b in batches] == [4, 4]
    assert ThreadDataLoader(ds).timings == [] and all(isinstance(b["x"], torch.Tensor) for b in batches)


@pytest.mark.timeout(20)
def test_timings_and_stats():
    ds = CacheDataset(items(6), [CountingDet(), RandAdd(batched=True)], progress=False)
    loader = ThreadDataLoader(ds, batch_size=2, device="cpu")
    assert len(list(loader)) == 3 and len(loader.timings) == 3
    t = loader.timings[0]
    assert set(t) >= {"wait_s", "fetch_s", "collate_s", "h2d_s", "batch_size", "num_crops"}
    assert t["batch_size"] == 2 and t["num_crops"] == 2 and t["wait_s"] >= 0 and t["fetch_s"] > 0
    assert all(t["iter_s"] >= t["wait_s"] for t in loader.timings)
    stats = loader.stats()
    assert stats["batches"] == 3 and 0.0 <= stats["data_wait_fraction"] <= 1.0
    loader.timings.clear()
    for _ in loader:
        break
    assert len(loader.timings) == 1 and "iter_s" in loader.timings[0]  # closed when the loop is left


@pytest.mark.timeout(30)
def test_timings_keep_a_window_over_a_long_training():
    """One timing dict per batch was kept for ever: a long training's loader grew without bound."""
    data = [{"x": torch.tensor(i)} for i in range(6)]
    loader = ThreadDataLoader(data, batch_size=2, seed=0)
    loader.timings_kept = 7
    sizes, first = [], None
    for _ in range(12):  # 36 batches
        for _ in loader:
            pass
        sizes.append(len(loader.timings))
        first = first or loader.timings[0]
    assert sizes == [3, 6] + [7] * 10 and all("iter_s" in t for t in loader.timings)
    assert loader.timings[0] is first  # the start-up wait stats() reports as first_wait_s
    assert loader.stats()["batches"] == 7 and ThreadDataLoader.timings_kept == 10_000


@pytest.mark.timeout(20)
def test_stats_of_a_short_run_cover_every_batch():
    loader = ThreadDataLoader([{"x": torch.tensor(i)} for i in range(10)], batch_size=2)
    for _ in range(3):
        assert len(list(loader)) == 5
    assert len(loader.timings) == 15 and loader.stats() == summarize(list(loader.timings))
    assert loader.stats()["batches"] == 15 and loader.stats()["items"] == 30


@pytest.mark.timeout(20)
def test_producer_error_reraised_with_original_traceback():
    def exploding_transform(d):
        if d["x"] == 5:
            raise KeyError("boom at item 5")
        return d

    data = [{"x": i} for i in range(8)]
    ds = CacheDataset(data, [mark(exploding_transform)], progress=False)
    with pytest.raises(KeyError, match="boom at item 5") as info:
        for _ in ThreadDataLoader(ds, batch_size=2, num_workers=2):
            pass
    cause = info.value.__cause__  # the error names the item; the transform's own error is chained
    assert isinstance(cause, KeyError) and "exploding_transform" in str(info.value)
    frames = [f.name for f in traceback.extract_tb(cause.__traceback__)]
    assert "exploding_transform" in frames
    gc.collect()
    assert _fastpipe_threads() == []


def mark(fn):
    from fastpipe.transforms import mark_random

    return mark_random(fn)


@pytest.mark.timeout(20)
@pytest.mark.parametrize("num_workers", [0, 2])
def test_break_leaves_no_thread_alive(num_workers):
    data = [{"x": torch.tensor(i)} for i in range(100)]
    loader = ThreadDataLoader(data, batch_size=2, num_workers=num_workers, buffer_size=1)
    for k, _ in enumerate(loader):
        if k == 2:
            break
    gc.collect()
    assert _fastpipe_threads() == []
    it = iter(loader)
    next(it)
    assert _fastpipe_threads() != []
    loader.close()
    loader.close()
    assert _fastpipe_threads() == []


@pytest.mark.timeout(20)
def test_update_cache_called_at_each_epoch_end_and_prefetch_hook_used():
    class Smart(torch.utils.data.Dataset):
        def __init__(self):
            self.updates, self.prefetched = 0, []

        def __len__(self):
            return 4

        def __getitem__(self, i):
            return {"x": torch.tensor(i)}

        def prefetch(self, indices):
            self.prefetched.append(list(indices))

        def loader_update_cache(self, token=None):  # what fastpipe's SmartCacheDataset offers its loader
            self.updates += 1

    ds = Smart()
    loader = ThreadDataLoader(ds, batch_size=2)
    list(loader)
    list(loader)
    assert ds.updates == 2 and ds.prefetched == [[2, 3], [2, 3]]
    for _ in loader:
        break
    assert ds.updates == 2  # an epoch left early is not an epoch end


@pytest.mark.parametrize(
    "kwargs", [{"batch_size": 0}, {"num_workers": -1}, {"buffer_size": 0}, {"repeats": 0}]
)
def test_bad_loader_arguments(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        ThreadDataLoader([{"x": 1}], **kwargs)


@pytest.mark.gpu
@pytest.mark.timeout(60)
def test_cuda_batches(cuda_device):
    from fastpipe.transforms import ToDeviced

    ds = CacheDataset(
        items(4), [CountingDet(), ToDeviced("image", cuda_device), RandAdd(batched=True)], progress=False
    )
    batches = list(ThreadDataLoader(ds, batch_size=2, num_workers=2))
    assert all(b["image"].is_cuda for b in batches) and len(batches) == 2


@pytest.mark.timeout(30)
@pytest.mark.parametrize("num_workers", [0, 2])
def test_persistent_workers_prefetch_next_epoch_with_the_same_batches(num_workers):
    class Slow(RandAdd):
        def __call__(self, d):
            threading.Event().wait(0.05)  # 50 ms per item: a first batch costs >= 50 ms unless made ahead
            return super().__call__(d)

    data = [{**d, "image": torch.zeros(2)} for d in items(6)]
    ds = CacheDataset(data, [Slow()], progress=False, seed=3)
    plain = ThreadDataLoader(ds, batch_size=2, shuffle=True, seed=5, num_workers=num_workers)
    ahead = ThreadDataLoader(
        ds, batch_size=2, shuffle=True, seed=5, num_workers=num_workers, persistent_workers=True
    )
    try:
        want = [[b["image"] for b in plain] for _ in range(3)]
        got = []
        for _ in range(3):
            epoch = []
            for b in ahead:
                epoch.append(b["image"])
                threading.Event().wait(0.15)  # the consumer's step
            got.append(epoch)
        assert _fastpipe_threads() != []  # the next epoch's producer waits on its queue
    finally:
        ahead.close()
        ahead.close()
        plain.close()
    assert _fastpipe_threads() == []
    assert all(
        torch.equal(a, b) for ea, eb in zip(want, got, strict=True) for a, b in zip(ea, eb, strict=True)
    )
    first_waits = [t["wait_s"] for t in ahead.timings[3::3]]  # first batch of epochs 2 and 3
    assert len(first_waits) == 2 and max(first_waits) < 0.025, first_waits
    assert min(t["wait_s"] for t in plain.timings[3::3]) >= 0.045  # without it the consumer waits


@pytest.mark.timeout(20)
def test_persistent_workers_break_starts_nothing_ahead():
    loader = ThreadDataLoader(
        [{"x": torch.tensor(i)} for i in range(10)], batch_size=2, persistent_workers=True
    )
    for _ in loader:
        break
    gc.collect()
    assert _fastpipe_threads() == []


@pytest.mark.timeout(30)
def test_persistent_workers_run_one_epoch_ahead_at_most():
    class Smart(torch.utils.data.Dataset):
        updates = 0

        def __len__(self):
            return 4

        def __getitem__(self, i):
            return {"x": torch.tensor(i)}

        def loader_update_cache(self, token=None):  # what fastpipe's SmartCacheDataset offers its loader
            self.updates += 1

    ds = Smart()
    loader = ThreadDataLoader(ds, batch_size=2, buffer_size=2, persistent_workers=True)
    for epochs in range(1, 4):
        assert [b["x"].tolist() for b in loader] == [[0, 1], [2, 3]]
        threading.Event().wait(0.2)  # let any run ahead finish its epoch
        assert epochs <= ds.updates <= epochs + 1  # swaps happen once an epoch's reads are made
        assert len([r for r in loader._runs if not r.stopped]) <= 2
    loader.close()
    assert _fastpipe_threads() == []


class _EpochSampler:
    """A sampler whose order changes with ``set_epoch``, like ``DistributedSampler(shuffle=True)``."""

    def __init__(self, n):
        self.n, self.epoch = n, 0

    def set_epoch(self, epoch):
        self.epoch = epoch

    def order(self):
        return torch.randperm(self.n, generator=torch.Generator().manual_seed(self.epoch)).tolist()

    def __iter__(self):
        return iter(self.order())

    def __len__(self):
        return self.n


@pytest.mark.timeout(30)
def test_persistent_workers_follow_the_sampler_epoch_set_between_loops():
    sampler = _EpochSampler(8)
    loader = ThreadDataLoader(
        [{"x": torch.tensor(i)} for i in range(8)], batch_size=2, sampler=sampler, persistent_workers=True
    )
    try:
        for epoch in range(3):
            sampler.set_epoch(epoch)
            threading.Event().wait(0.05)  # a run made ahead would have read the previous order by now
            assert [i for b in loader for i in b["x"].tolist()] == sampler.order(), epoch
    finally:
        loader.close()


@pytest.mark.timeout(30)
def test_persistent_workers_over_a_rank_shard_count_batches_on_the_loop_thread(monkeypatch):
    from fastpipe import distributed

    threads = []
    real = distributed.loader_batches

    def recording(*args, **kwargs):
        threads.append(threading.current_thread().name)
        return real(*args, **kwargs)

    monkeypatch.setattr(distributed, "loader_batches", recording)
    ds = CacheDataset(items(8), None, progress=False, rank=0, world_size=2)
    loader = ThreadDataLoader(ds, batch_size=2, shuffle=True, persistent_workers=True)
    try:
        for _ in range(3):
            assert len(list(loader)) == 2
            threading.Event().wait(0.05)
    finally:
        loader.close()
    assert threads == [threading.current_thread().name] * 3  # the all-reduce never runs beside the step


def test_a_distributed_sampler_over_a_rank_shard_is_refused():
    ds = CacheDataset(items(8), None, progress=False, rank=1, world_size=2)
    sampler = torch.utils.data.DistributedSampler(ds, num_replicas=2, rank=1)
    with pytest.raises(ValueError, match=r"already holds only this rank's shard.*1/2 of the data"):
        ThreadDataLoader(ds, batch_size=2, sampler=sampler)
    whole = CacheDataset(items(8), None, progress=False, world_size=1)
    assert (
        len(ThreadDataLoader(whole, batch_size=2, sampler=torch.utils.data.DistributedSampler(whole, 2, 1)))
        == 2
    )


def test_a_dataset_with_only_update_cache_is_left_to_the_loop_as_monai_loaders_do():
    class MonaiSmart(torch.utils.data.Dataset):  # MONAI's SmartCacheDataset: the loop calls update_cache()
        updates = 0

        def __len__(self):
            return 4

        def __getitem__(self, i):
            return {"x": torch.tensor(i)}

        def update_cache(self):
            self.updates += 1

    ds = MonaiSmart()
    loader = ThreadDataLoader(ds, batch_size=2)
    for _ in range(3):
        list(loader)
        ds.update_cache()
    assert ds.updates == 3  # once per epoch, not twice


def test_device_cpu_moves_batches_with_a_blocking_copy(monkeypatch):
    """``device="cpu"`` over a GPU-cached dataset: a non-blocking device-to-host copy would hand the loop
    a batch whose bytes had not landed yet."""
    flags = []
    to = torch.Tensor.to

    def recording(self, *args, **kwargs):
        flags.append(kwargs.get("non_blocking", False))
        return to(self, *args, **kwargs)

    loader = ThreadDataLoader([{"x": torch.zeros(2)}], batch_size=1, device="cpu")
    monkeypatch.setattr(torch.Tensor, "to", recording)
    batch, ready = loader._to_device({"x": torch.zeros(2)})
    assert flags == [False] and ready is None and batch["x"].device.type == "cpu"


@pytest.mark.timeout(60)
@pytest.mark.parametrize("persistent", [False, True])
def test_the_wait_for_a_smartcache_swap_at_the_epoch_end_is_in_the_report(persistent):
    # the loop waits for the window swap after its last batch: that wait was in no wait_s or iter_s,
    # so stats() reported a fraction of the loop's wall time and no data wait
    import time

    from fastpipe import SmartCacheDataset
    from fastpipe.transforms import mark_deterministic

    @mark_deterministic
    def slow(d: dict) -> dict:
        time.sleep(0.05)
        return d

    data = [{"x": torch.tensor(float(i))} for i in range(8)]
    ds = SmartCacheDataset(
        data, [slow], replace_rate=0.5, cache_num=4, num_init_workers=1, num_replace_workers=1, progress=False
    )
    loader = ThreadDataLoader(ds, batch_size=4, persistent_workers=persistent)
    try:
        t0 = time.perf_counter()
        for _ in range(3):
            for _batch in loader:
                pass
        wall = time.perf_counter() - t0
        s = loader.stats()
        assert s["wall_s"] >= 0.8 * wall and s["data_wait_s"] >= 0.5 * wall, (s, wall)
        assert "epoch_end" in s["stages"]
    finally:
        loader.close()
        ds.close()
