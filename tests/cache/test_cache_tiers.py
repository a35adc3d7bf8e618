"""Tiers: byte parsing, budgets, spill host -> disk, GPU out-of-memory fallback (simulated)."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from _cache_helpers import CountingDet, RandAdd, items  # noqa: E402

from fastpipe import CacheDataset  # noqa: E402
from fastpipe.cache._core import CacheCore  # noqa: E402
from fastpipe.cache._tiers import TierStore, parse_budget, parse_bytes  # noqa: E402
from fastpipe.transforms import ToDeviced  # noqa: E402
from fastpipe.transforms.utility import device_point  # noqa: E402

ITEM_BYTES = 216 * 4  # CountingDet's (1, 6, 6, 6) float32 image


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("20GiB", 20 * 2**30),
        ("512MB", 512 * 10**6),
        ("1.5k", 1500),
        ("2 KiB", 2048),
        ("64gib", 64 * 2**30),
        ("4096", 4096),
        (4096, 4096),
        ("3B", 3),
        (None, None),
    ],
)
def test_parse_bytes(text, expected):
    assert parse_bytes(text) == expected


@pytest.mark.parametrize(
    "bad", ["", "GiB", "20 GB extra", "-1GiB", "1e9", "twenty", -5, [1], True, float("nan"), float("inf")]
)
def test_parse_bytes_rejects_bad_sizes(bad):
    with pytest.raises(ValueError, match="budget size"):
        parse_bytes(bad)


def test_parse_budget_bare_size_goes_to_primary_tier():
    assert parse_budget("1KiB", "cuda") == {"cuda": 1024}
    assert parse_budget({"host": "1k", "disk": None}, "host") == {"host": 1000, "disk": None}
    with pytest.raises(ValueError, match=r"unknown budget tier.*'ram'"):
        parse_budget({"ram": "1GiB"}, "host")


def test_host_budget_spills_to_memory_mapped_disk_tier(tmp_path):
    ds = CacheDataset(
        items(5),
        [CountingDet(), RandAdd()],
        progress=False,
        budget={"host": 2 * ITEM_BYTES},
        disk_dir=tmp_path,
    )
    s = ds.stats()
    assert s["items"] == {"host": 2, "disk": 3} and s["bytes"] == {
        "host": 2 * ITEM_BYTES,
        "disk": 3 * ITEM_BYTES,
    }
    assert len(list(tmp_path.glob("fastpipe-tier-*/*.npy"))) == 3  # in a folder of the tier's own
    disk_slots = [slot for slot in range(5) if ds.core.store.tier_of(slot) == "disk"]
    entry = ds.core.store.get(disk_slots[0])
    assert _mapped_file(entry["image"].data_ptr()).startswith(str(tmp_path))  # memory-mapped, not read in
    for i in range(5):  # values survive the round trip and reads leave the files unchanged
        assert torch.equal(ds.cached_entry(i)["image"], CountingDet()({"x": i})["image"])
        out = ds[i]
        assert 0 <= float(out["image"][0, 0, 0, 0]) - i < 1
    assert torch.equal(
        ds.core.store.get(disk_slots[0])["image"], CountingDet()({"x": disk_slots[0]})["image"]
    )


def test_datasets_sharing_a_disk_dir_keep_their_own_entries(tmp_path):
    budget = {"host": 0, "disk": None}  # every entry on the disk tier

    def dataset(value):
        return CacheDataset(
            [{"x": torch.full((4,), value)}], None, progress=False, budget=budget, disk_dir=tmp_path
        )

    a, b = dataset(1.0), dataset(2.0)  # both fill slot 0
    assert a.stats()["items"]["disk"] == 1 and b.stats()["items"]["disk"] == 1
    assert a[0]["x"].tolist() == [1.0] * 4 and b[0]["x"].tolist() == [2.0] * 4
    assert len(list(tmp_path.glob("fastpipe-tier-*"))) == 2
    b.close()
    assert a[0]["x"].tolist() == [1.0] * 4 and len(list(tmp_path.glob("fastpipe-tier-*/*.npy"))) == 1
    a.close()
    assert list(tmp_path.iterdir()) == []


def _mapped_file(address: int) -> str:
    """The file mapped at ``address`` in this process (Linux ``/proc/self/maps``), or ``""``."""
    for line in Path("/proc/self/maps").read_text().splitlines():
        parts = line.split(maxsplit=5)
        lo, hi = (int(x, 16) for x in parts[0].split("-"))
        if lo <= address < hi:
            return parts[5] if len(parts) == 6 else ""
    return ""


def test_drop_gives_bytes_back_and_close_removes_temporary_disk_tier():
    store = TierStore(torch.device("cpu"), {"host": 0, "disk": None})
    store.put(0, {"image": torch.zeros(10)})
    assert store.tier_of(0) == "disk" and store.stats()["bytes"]["disk"] == 40
    root = store._disk.root
    assert root.exists() and any(root.iterdir())
    store.drop(0)
    assert store.stats()["bytes"]["disk"] == 0 and not any(root.iterdir()) and 0 not in store
    store.put(1, {"image": torch.zeros(10)})
    store.close()
    store.close()
    assert not root.exists()


def test_no_tier_with_room_leaves_item_uncached_with_one_warning():
    det = CountingDet()
    with pytest.warns(RuntimeWarning, match="fit no cache tier") as rec:
        ds = CacheDataset(items(4), [det], progress=False, budget={"host": ITEM_BYTES, "disk": 0})
    assert len(rec) == 1 and ds.stats()["items"]["host"] == 1
    assert float(ds[3]["image"][0, 0, 0, 0]) == 3.0 and ds.misses == 1


def test_unlimited_host_never_spills():
    store = TierStore(torch.device("cpu"), {})
    for s in range(3):
        assert store.put(s, {"image": torch.zeros(1000)}) == "host"
    assert store.budgets == {"host": None, "disk": 0}


def _oom(*args, **kwargs):
    raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")


def test_gpu_oom_in_put_falls_back_to_host_with_one_warning(monkeypatch):
    store = TierStore(torch.device("cuda"), {})
    real_place = store._place
    monkeypatch.setattr(
        store, "_place", lambda tier, slot, e: _oom() if tier == "cuda" else real_place(tier, slot, e)
    )
    with pytest.warns(RuntimeWarning, match="GPU out of memory") as rec:
        tiers = [store.put(s, {"image": torch.zeros(8)}) for s in range(4)]
    assert tiers == ["host"] * 4 and len(rec) == 1
    s = store.stats()
    assert s["bytes"] == {"cuda": 0, "host": 128, "disk": 0} and s["oom_fallbacks"] == 1


def test_gpu_oom_during_fill_runs_the_tail_on_host(monkeypatch):
    monkeypatch.setattr(ToDeviced, "__call__", _oom)
    core = CacheCore([CountingDet(), ToDeviced("image", "cuda:0"), CountingDet(2.0)])
    assert core.device == torch.device("cuda:0")
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        entries = [core.compute({"x": i}) for i in range(3)]
        tiers = [core.put(i, e) for i, e in enumerate(entries)]
    assert [w.category for w in rec] == [RuntimeWarning] and "GPU out of memory" in str(rec[0].message)
    assert tiers == ["host"] * 3 and all(e["image"].device.type == "cpu" for e in entries)
    assert core.store.cuda_full and core.stats()["items"] == {"cuda": 0, "host": 3, "disk": 0}


@pytest.mark.parametrize("library", ["fastpipe", "monai"])
def test_a_full_gpu_s_host_tail_keeps_the_chain_s_dtype(monkeypatch, library):
    """After a CUDA OOM the tail runs on the host: the device points lose their device, not their dtype.
    A float16 chain whose fallback entries came out float32 mixed dtypes in a batch (and differed from
    every entry made before the OOM), silently."""
    if library == "monai":
        from monai.transforms import EnsureTyped as Ensure
    else:
        from fastpipe.transforms import EnsureTyped as Ensure
    ensure = Ensure("image", dtype=torch.float16, device="cuda:0")
    core = CacheCore([CountingDet(), ToDeviced("image", "cuda:0"), ensure])
    core.store.cuda_full = True  # as after the first OOM
    entry = core.compute({"x": 1})
    assert entry["image"].dtype == torch.float16 and entry["image"].device.type == "cpu"
    assert device_point(ensure) == torch.device("cuda:0")  # the chain's own transform is untouched


def test_cuda_budget_sends_overflow_to_host(monkeypatch):
    store = TierStore(torch.device("cuda"), {"cuda": 100})
    real_place = store._place
    monkeypatch.setattr(
        store, "_place", lambda tier, slot, e: e if tier == "cuda" else real_place(tier, slot, e)
    )
    tiers = [store.put(s, {"image": torch.zeros(16)}) for s in range(3)]  # 64 bytes each
    assert tiers == ["cuda", "host", "host"] and store.stats()["bytes"]["cuda"] == 64


@pytest.mark.gpu
def test_host_tier_prefetch_delivers_on_device(cuda_device):
    ds = CacheDataset(
        items(4),
        [CountingDet(), ToDeviced("image", cuda_device), RandAdd()],
        progress=False,
        budget={"cuda": 2 * ITEM_BYTES},
    )
    assert ds.stats()["items"]["host"] == 2
    host_slots = [s for s in range(4) if ds.core.store.tier_of(s) == "host"]
    assert ds.core.store.get(host_slots[0])["image"].is_cuda
    ds.prefetch(host_slots)
    out = ds.cached_entry(host_slots[1])
    assert out["image"].is_cuda and torch.equal(
        out["image"].cpu(), CountingDet()({"x": host_slots[1]})["image"]
    )


def test_gpu_oom_during_threaded_fill_warns_once_and_caches_on_host(monkeypatch):
    monkeypatch.setattr(ToDeviced, "__call__", _oom)
    # a CPU-only machine plays a full GPU here: skip the build-time "CUDA is not available" check
    monkeypatch.setattr("fastpipe.cache._reads.check_device_points", lambda chain: None)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        ds = CacheDataset(
            items(8), [CountingDet(), ToDeviced("image", "cuda:0"), RandAdd()], progress=False, num_workers=4
        )
    oom = [w for w in rec if "GPU out of memory" in str(w.message)]
    assert len(oom) == 1 and ds.stats()["items"] == {"cuda": 0, "host": 8, "disk": 0}
    assert ds.stats()["oom_fallbacks"] >= 1 and len(ds) == 8  # threads racing into OOM each count


def test_put_on_a_used_slot_replaces_it_and_old_disk_views_stay_valid():
    store = TierStore(torch.device("cpu"), {"host": 0, "disk": None})
    store.put(0, {"image": torch.full((1000,), 1.0)})
    old = store.get(0)["image"]
    store.put(0, {"image": torch.full((10,), 2.0)})
    assert store.stats()["bytes"]["disk"] == 40 and store.stats()["items"]["disk"] == 1
    assert float(old.sum()) == 1000.0 and float(store.get(0)["image"].sum()) == 20.0
    store.close()


def test_a_full_disk_closes_the_disk_tier_with_one_warning_instead_of_failing_the_fill(tmp_path, monkeypatch):
    import errno

    import numpy as np

    import fastpipe.cache._disk_tier as tiers

    real, saves = np.save, []

    def save(path, arr):  # the disk fills up at the second file: a partial file, then ENOSPC
        saves.append(path)
        if len(saves) >= 2:
            Path(path).write_bytes(b"\x93NUMPY partial")
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real(path, arr)

    monkeypatch.setattr(tiers.np, "save", save)
    with pytest.warns(RuntimeWarning) as record:
        ds = CacheDataset(
            items(5),
            [CountingDet()],
            progress=False,
            num_workers=1,
            budget={"host": 2 * ITEM_BYTES},
            disk_dir=tmp_path,
        )
    messages = [str(w.message) for w in record]
    assert len([m for m in messages if "disk cache tier" in m and "No space left" in m]) == 1
    assert any("2 item(s) fit no cache tier" in m for m in messages)
    s = ds.stats()
    assert s["items"] == {"host": 2, "disk": 1} and s["bytes"]["disk"] == ITEM_BYTES and len(saves) == 2
    assert len(list(tmp_path.glob("fastpipe-tier-*/*.npy"))) == 1  # the partial file is gone
    for i in range(5):  # the two items with no room are recomputed per read
        assert torch.equal(ds[i]["image"], CountingDet()({"x": i})["image"])


@pytest.mark.parametrize("same_paths", [False, True])
def test_set_data_with_a_disk_tier_persist_and_a_shard_serves_the_new_items(tmp_path, same_paths):
    import numpy as np
    from _persist_helpers import LoadNpy

    def write(tag: str, base: float) -> list[dict]:
        out = []
        for i in range(6):
            path = tmp_path / f"{tag}{i}.npy"
            np.save(path, np.full((1, 4, 4, 4), base + i, np.float32))
            out.append({"image": str(path)})
        return out

    kw = {"budget": {"host": 1, "disk": "1MB"}, "persist_dir": tmp_path / "p", "rank": 1, "world_size": 2}
    ds = CacheDataset(write("a", 0.0), [LoadNpy()], progress=False, disk_dir=tmp_path, **kw)
    assert ds.stats()["items"]["disk"] == len(ds) == 3
    old = [float(ds[i]["image"].max()) for i in range(len(ds))]
    ds.set_data(write("a" if same_paths else "b", 100.0))  # the same paths rewritten, or new files
    got = [float(ds[i]["image"].max()) for i in range(len(ds))]
    assert got == [100.0 + ds.data_index(i) for i in range(len(ds))] and got == [v + 100 for v in old]
    assert ds.stats()["items"]["disk"] == 3 and len(list(tmp_path.glob("fastpipe-tier-*"))) == 1
    ds.close()


def test_disk_and_pinned_host_copies_keep_metatensor_metadata_and_bfloat16(tmp_path):
    """A MONAI MetaTensor spilled to the disk tier (or copied into a pinned host block) came back a
    plain tensor without its affine; a bfloat16 entry failed the fill (numpy has no bfloat16)."""
    from monai.data import MetaTensor

    from fastpipe.cache._pinned_host import host_copy

    affine = torch.diag(torch.tensor([2.0, 3.0, 4.0, 1.0], dtype=torch.float64))
    image = MetaTensor(
        torch.arange(8.0).reshape(1, 2, 2, 2), affine=affine, meta={"filename_or_obj": "a.nii"}
    )
    half = torch.arange(6, dtype=torch.bfloat16).reshape(2, 3) / 3
    store = TierStore(torch.device("cpu"), {"host": 0}, tmp_path)
    assert store.put(0, {"image": image, "half": half, "n": 1}) == "disk"
    out = store.get(0)
    assert type(out["image"]) is MetaTensor and torch.equal(out["image"].affine, affine)
    assert out["image"].meta["filename_or_obj"] == "a.nii" and torch.equal(
        out["image"].as_tensor(), image.as_tensor()
    )
    assert out["half"].dtype == torch.bfloat16 and torch.equal(out["half"], half) and out["n"] == 1
    strided = host_copy(image.transpose(1, 3), pin=False)  # not contiguous: a new block
    assert type(strided) is MetaTensor and torch.equal(strided.affine, affine) and strided.is_contiguous()
    store.close()


def test_a_cached_crop_view_does_not_keep_its_whole_volume_alive_past_the_budget():
    """A prefix ending in a crop (MONAI's CenterSpatialCropd slices a view) cached views of the loaded
    volumes: the host budget counted the crops' bytes while every whole volume stayed in memory."""
    from monai import transforms as M
    from monai.data import MetaTensor

    def load(d):
        return {"image": MetaTensor(torch.rand(1, 32, 32, 32), affine=torch.eye(4) * 2)}

    chain = [M.Lambda(load), M.CenterSpatialCropd(keys="image", roi_size=(4, 4, 4))]
    ds = CacheDataset(
        items(6), chain, progress=False, num_workers=1, budget={"host": "1KiB"}, translate=False
    )
    s = ds.stats()
    assert s["items"]["host"] == 4 and s["bytes"]["host"] == 4 * 256
    held = [ds.cached_entry(i)["image"] for i in range(4)]
    assert sum(t.untyped_storage().nbytes() for t in held) == 4 * 256  # not 4 volumes of 128 KiB
    assert all(type(t) is MetaTensor and t.shape == (1, 4, 4, 4) and t.affine[0, 0] == 2 for t in held)
    ds.close()


def test_a_host_tail_entry_after_gpu_oom_is_not_saved_under_the_whole_chains_key(tmp_path, monkeypatch):
    """After a GPU OOM the prefix reruns without its device points, skipping EnsureTyped's dtype: that
    float32 entry was saved under the chain's key, and a later run with GPU memory to spare loaded it
    where the chain asks float16."""
    from fastpipe.transforms import EnsureTyped

    chain = [
        CountingDet(),
        ToDeviced("image", "cuda:0"),
        EnsureTyped("image", device="cuda:0", dtype=torch.float16),
    ]
    monkeypatch.setattr(ToDeviced, "__call__", _oom)
    core = CacheCore(chain, persist_dir=tmp_path, budget={"cuda": None})
    with pytest.warns(RuntimeWarning, match="GPU out of memory"):
        entry = core.compute({"x": 1})
    assert entry["image"].device.type == "cpu"  # the host tail's entry, kept in memory only
    assert core.persist.stats()["saves"] == 0 and not list(tmp_path.glob("*.fpc"))


def test_a_cuda_budget_for_a_host_cache_warns_that_it_is_ignored():
    """The 'cuda' key was dropped without a word, leaving a cache the user meant to bound unlimited."""
    data = [{"x": i} for i in range(3)]
    with pytest.warns(RuntimeWarning, match="'cuda' budget is ignored") as record:
        ds = CacheDataset(data, [CountingDet()], progress=False, budget={"cuda": "1KiB"})
    assert record[0].filename == __file__  # points at the caller's line
    assert ds.stats()["budgets"] == {"host": None, "disk": 0}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        CacheDataset(data, [CountingDet()], progress=False, budget={"host": "1MiB"})


def test_a_host_budget_counts_numpy_arrays():
    """A chain ending in numpy (MONAI's EnsureTyped(data_type="numpy")) cached 1 MiB under a 256 KiB
    budget, stats() reporting 0 bytes: only torch tensors were counted."""
    import numpy as np

    def make(d):
        return {"image": np.full((1, 32, 32, 32), d["x"], np.float32), "affine": np.eye(4)}  # 128 KiB + 128 B

    with pytest.warns(RuntimeWarning, match="fit no cache tier"):
        ds = CacheDataset(items(8), [make], progress=False, budget={"host": "300KiB", "disk": 0})
    s = ds.stats()
    assert s["items"]["host"] == 2 and s["bytes"]["host"] == 2 * (2**17 + 128)
    assert [float(ds[i]["image"][0, 0, 0, 0]) for i in range(8)] == list(range(8))


def _logged_disk_dataset(tmp_path, n=6, in_memory=2):
    """A dataset of ``n`` LoggedDet items, ``in_memory`` of them on the host tier, the rest on disk."""
    from _persist_helpers import LoggedDet

    per_item = 216 * 4 + 3 * 2  # the image and the bfloat16 tensor
    return CacheDataset(
        [{"x": i} for i in range(n)],
        [LoggedDet(str(tmp_path / "calls.log"))],
        progress=False,
        budget={"host": in_memory * per_item, "disk": None},
        disk_dir=tmp_path / "tier",
    )


def _check_logged_item(item, x):
    assert torch.equal(item["image"].as_tensor(), torch.arange(216.0).reshape(1, 6, 6, 6) + x)
    assert item["image"].meta["tag"] == x and item["image"].meta["filename_or_obj"] == f"img{x}.nii.gz"
    assert item["half"].dtype == torch.bfloat16 and item["half"].tolist() == [float(x)] * 3


@pytest.mark.timeout(60)
@pytest.mark.parametrize("context", ["spawn", "forkserver", "fork"])
def test_worker_processes_read_the_disk_tier_entries_the_parent_wrote(tmp_path, context):
    """A worker started by spawn/forkserver got the dataset without its disk tier and recomputed every
    disk-tier item on every read (the whole prefix: loading, resampling...); workers now map the files
    the parent wrote, read-only, as MONAI's PersistentDataset shares its cache_dir."""
    from _persist_helpers import logged_calls

    ds = _logged_disk_dataset(tmp_path)
    assert ds.stats()["items"] == {"host": 2, "disk": 4} and len(logged_calls(tmp_path / "calls.log")) == 6
    loader = torch.utils.data.DataLoader(
        ds, batch_size=None, num_workers=1, multiprocessing_context=context, persistent_workers=True
    )
    for _ in range(2):  # two epochs of the same workers
        items = list(loader)
        for x, item in enumerate(items):
            _check_logged_item(item, x)
    assert len(logged_calls(tmp_path / "calls.log")) == 6  # the fill's calls only: no worker computed
    del loader
    ds.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["calls.log", "tier"]
    assert list((tmp_path / "tier").iterdir()) == []  # the tier's folder went with the parent's close


@pytest.mark.timeout(30)
def test_a_pickled_copy_maps_the_disk_files_copy_on_write_and_checks_them(tmp_path):
    """The copy of a worker reads the parent's files without writing them, never removes them, and a file
    that is not the one written (replaced, or gone with the parent's cleanup) is recomputed, not read."""
    import pickle

    import numpy as np
    from _persist_helpers import logged_calls

    ds = _logged_disk_dataset(tmp_path, n=4, in_memory=0)
    blob = pickle.dumps(ds)
    copy = pickle.loads(blob)
    assert copy.stats()["items"]["disk"] == 4 and copy.misses == 0
    entry = copy.core.store.get(0)
    entry["image"].add_(100)  # an in-place edit in the worker reaches neither the file nor the parent
    _check_logged_item(ds.cached_entry(0), 0)
    copy.close()  # the copy's close removes no file of the parent's
    _check_logged_item(ds.cached_entry(1), 1)
    path = max(ds.core.store._disk.root.glob("1-*.npy"), key=lambda p: p.stat().st_size)  # the image
    np.save(path, np.full((1, 6, 6, 6), 7.0, dtype=np.float32))  # same name, dtype and shape, new bytes
    with pytest.warns(RuntimeWarning, match="not the file the disk tier wrote"):
        copy = pickle.loads(blob)
    assert copy.stats()["items"]["disk"] == 3 and copy.stats()["bytes"]["disk"] == 3 * (216 * 4 + 6)
    _check_logged_item(copy[1], 1)  # computed again, not the replaced file's values
    assert copy.misses == 1 and len(logged_calls(tmp_path / "calls.log")) == 5
    ds.close()
    with pytest.warns(RuntimeWarning, match="cannot be read"):  # a worker started after the cleanup
        copy = pickle.loads(blob)
    for x in range(4):
        _check_logged_item(copy[x], x)
    assert list((tmp_path / "tier").iterdir()) == []


def _forked_child_replaces_and_closes(ds):
    """In a forked child: replace slot 0's entry (on a disk tier), then close the dataset."""
    ds.core.store.put(0, {"x": torch.full((100,), -1.0)})
    assert ds.core.store.get(0)["x"][0] == -1.0
    ds.close()  # as its finalizer does when a forked child exits through sys.exit (atexit)


@pytest.mark.timeout(60)
def test_a_forked_child_s_close_removes_none_of_the_parent_s_disk_tier_files(tmp_path):
    """A forked child shares the parent's DiskTier object: its close (an os.fork child exiting normally
    runs the dataset's finalizer) removed the parent's tier folder, and replacing an entry unlinked the
    parent's files and wrote the child's into the parent's folder."""
    import multiprocessing

    data = [{"x": torch.full((100,), float(i))} for i in range(4)]
    ds = CacheDataset(data, None, progress=False, budget={"host": 0, "disk": None}, disk_dir=tmp_path)
    child = multiprocessing.get_context("fork").Process(target=_forked_child_replaces_and_closes, args=(ds,))
    child.start()
    child.join(30)
    assert child.exitcode == 0
    assert len(list(tmp_path.glob("fastpipe-tier-*/*.npy"))) == 4  # the child's own folder went with it
    assert len(list(tmp_path.glob("fastpipe-tier-*"))) == 1
    ds.core.store.put(3, {"x": torch.full((100,), 30.0)})  # the parent's tier still takes entries
    assert [float(ds[i]["x"][0]) for i in range(4)] == [0.0, 1.0, 2.0, 30.0]
    ds.close()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.timeout(30)
def test_an_emptied_disk_tier_file_is_computed_again_in_a_copy_not_a_crash(tmp_path):
    """numpy raises EOFError on an empty .npy file: a worker's copy failed to unpickle (the worker died)
    instead of computing that item again."""
    import os
    import pickle

    ds = _logged_disk_dataset(tmp_path, n=2, in_memory=0)
    blob = pickle.dumps(ds)
    for path in ds.core.store._disk.root.glob("0-*.npy"):
        os.truncate(path, 0)  # what a full disk or a cleaner can leave of a file
    with pytest.warns(RuntimeWarning, match="not the file the disk tier wrote"):
        copy = pickle.loads(blob)
    _check_logged_item(copy[0], 0)
    assert copy.misses == 1 and copy.stats()["items"]["disk"] == 1
    ds.close()


@pytest.mark.timeout(30)
def test_a_lazily_conjugated_complex_tensor_spills_to_the_disk_tier():
    """``x.conj()`` of a complex tensor (k-space data) is a view with the conjugate bit set: the disk tier's
    ``numpy()`` raised RuntimeError, which failed the whole fill, where the host tier kept it."""
    x = torch.randn(4, 4, dtype=torch.complex64)
    ds = CacheDataset([{"k": x}], [lambda d: {"k": d["k"].conj()}], progress=False, budget={"host": 0})
    assert ds.stats()["items"] == {"host": 0, "disk": 1}
    assert torch.equal(ds[0]["k"], x.conj()) and not ds[0]["k"].is_conj()
    ds.close()


@pytest.mark.timeout(30)
def test_dropping_a_disk_tier_entry_deletes_its_files_without_listing_the_folder(tmp_path, monkeypatch):
    """Each drop listed the whole tier folder (a glob for the slot's files): a SmartCache swap of R entries
    on a disk tier of N files read N names R times on the training thread (3 s per epoch at N=3000,
    R=600); the tier now deletes the files it recorded for the entry."""
    import os

    store = TierStore(torch.device("cpu"), {"host": 0, "disk": None}, tmp_path)
    for slot in range(3):
        store.put(slot, {"x": torch.full((10,), float(slot)), "y": [torch.ones(2)]})
    folder = store._disk.root
    listed = []
    monkeypatch.setattr(Path, "glob", lambda self, pattern: listed.append(pattern) or iter(()))
    store.drop(1)
    assert listed == [] and sorted(os.listdir(folder)) == ["0-0.npy", "0-1.npy", "2-4.npy", "2-5.npy"]
    assert float(store.get(2)["x"][0]) == 2.0
    monkeypatch.undo()
    store.close()
    assert not folder.exists()
