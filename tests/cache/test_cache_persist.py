"""Persistent cache: reuse across runs, invalidation by file and chain, atomic and checksummed entries."""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest
import torch
from _persist_helpers import LoadNpy

from fastpipe import CacheDataset
from fastpipe.cache._fingerprint import chain_fingerprint, fingerprint
from fastpipe.cache._key import EntryOwner, item_key
from fastpipe.cache._persist import PersistentCache


def _files(tmp_path, n=3):
    data = []
    for i in range(n):
        path = tmp_path / f"img{i}.npy"
        np.save(path, np.full((1, 4, 4, 4), i, dtype=np.float32))
        data.append({"image": str(path)})
    return data


def _run(data, load, cache_dir, **kwargs):
    return CacheDataset(data, [load], progress=False, persist_dir=cache_dir, num_workers=2, **kwargs)


def test_second_run_loads_instead_of_recomputing(tmp_path):
    data, cache = _files(tmp_path), tmp_path / "cache"
    first = LoadNpy()
    ds1 = _run(data, first, cache)
    assert first._calls == 3 and ds1.stats()["persist"]["saves"] == 3
    second = LoadNpy()
    ds2 = _run(data, second, cache)
    assert second._calls == 0 and ds2.stats()["persist"]["loads"] == 3
    for i in range(3):
        assert torch.equal(ds1[i]["image"], ds2[i]["image"])
        assert ds2[i]["image_meta_dict"]["filename_or_obj"] == data[i]["image"]


@pytest.mark.parametrize("persist_key", ["content", "stat"])
def test_changed_file_invalidates_only_its_entry(tmp_path, persist_key):
    data, cache = _files(tmp_path), tmp_path / "cache"
    _run(data, LoadNpy(), cache, persist_key=persist_key)
    st = os.stat(data[1]["image"])
    os.utime(
        data[1]["image"], ns=(st.st_atime_ns, st.st_mtime_ns + 10**9)
    )  # same size and bytes, newer mtime
    load = LoadNpy()
    _run(data, load, cache, persist_key=persist_key)
    assert load._calls == (1 if persist_key == "stat" else 0)  # "content" looks at the bytes only
    np.save(data[2]["image"], np.full((1, 4, 4, 5), 7, dtype=np.float32))  # new size and content
    load = LoadNpy()
    ds = _run(data, load, cache, persist_key=persist_key)
    assert load._calls == 1 and float(ds[2]["image"].max()) == 7.0


def test_changed_chain_parameter_invalidates_all_entries(tmp_path):
    data, cache = _files(tmp_path), tmp_path / "cache"
    _run(data, LoadNpy(scale=1.0), cache)
    load = LoadNpy(scale=3.0)
    ds = _run(data, load, cache)
    assert load._calls == 3 and float(ds[2]["image"].max()) == 6.0


def test_changed_version_invalidates(tmp_path):
    item, fp = {"image": "x"}, chain_fingerprint([LoadNpy()])
    assert item_key(item, fp, "0.1.0") != item_key(item, fp, "0.1.1")
    assert item_key(item, fp, "0.1.0") == item_key(dict(item), chain_fingerprint([LoadNpy()]), "0.1.0")


@pytest.mark.parametrize("damage", ["truncate", "flip", "empty", "garbage"])
def test_partial_or_corrupt_entry_is_recomputed_never_loaded(tmp_path, damage):
    data, cache = _files(tmp_path, n=2), tmp_path / "cache"
    _run(data, LoadNpy(), cache)
    entries = sorted(cache.glob("*.fpc"))
    assert len(entries) == 2
    victim = entries[0]
    blob = victim.read_bytes()
    broken = {
        "truncate": blob[: len(blob) // 2],
        "flip": blob[:-40] + bytes([blob[-40] ^ 0xFF]) + blob[-39:],
        "empty": b"",
        "garbage": os.urandom(len(blob)),
    }[damage]
    victim.write_bytes(broken)
    load = LoadNpy()
    with pytest.warns(RuntimeWarning, match=f"{victim.name} rejected .corrupt"):
        ds = _run(data, load, cache)
    assert load._calls == 1 and ds.stats()["persist"]["rejected"] == 1
    assert victim.read_bytes() == blob or len(victim.read_bytes()) == len(blob)  # rewritten whole
    for i in range(2):
        assert float(ds[i]["image"].max()) == float(i)


def test_crash_mid_write_leaves_no_entry_and_no_temporary_file(tmp_path, monkeypatch):
    store = PersistentCache(tmp_path / "c")
    owner = EntryOwner("ab" * 32, 0, ())

    def boom(*args, **kwargs):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.warns(RuntimeWarning, match="cannot be replaced .disk full"):
        assert store.save(owner, {"image": torch.zeros(4)}) is False
    assert list((tmp_path / "c").iterdir()) == []
    assert store.load(owner) is None


def test_fingerprint_is_stable_and_tracks_public_attributes():
    class T:
        def __init__(self, a):
            self.a = a
            self.fn = print
            self.obj = object()
            self._private = threading.Lock()  # state, not a parameter: not hashed

    r = fingerprint(T(1))
    assert fingerprint(T(1)) == r and fingerprint(T(2)) != r
    assert fingerprint(torch.ones(3)) == fingerprint(torch.ones(3)) != fingerprint(torch.zeros(3))


def _load_in_place(d):
    d["image"] = torch.from_numpy(np.load(d["image"]))  # assigns into the item it was given
    return d


def test_a_transform_assigning_into_the_item_still_saves_and_reuses_its_entry(tmp_path, recwarn):
    data, cache = _files(tmp_path, 2), tmp_path / "cache"
    first = CacheDataset([dict(d) for d in data], [_load_in_place], progress=False, persist_dir=cache)
    assert first.stats()["persist"]["saves"] == 2
    assert not [w for w in recwarn if "changed while it was read" in str(w.message)]
    again = CacheDataset([dict(d) for d in data], [_load_in_place], progress=False, persist_dir=cache)
    assert again.stats()["persist"]["loads"] == 2 and float(again[1]["image"].mean()) == 1.0


def test_an_edit_of_fastpipe_s_code_without_a_version_bump_invalidates_entries(tmp_path, monkeypatch):
    import fastpipe.cache._key as key

    src = tmp_path / "src" / "transforms"
    src.mkdir(parents=True)
    (src / "spatial.py").write_text("SCALE = 1\n")
    monkeypatch.setattr(key, "_PACKAGE_ROOT", tmp_path / "src")  # stands for fastpipe's folder
    data, cache = _files(tmp_path, 2), tmp_path / "cache"
    key.code_version.cache_clear()
    try:
        assert _run(data, LoadNpy(), cache).stats()["persist"]["saves"] == 2
        (src / "spatial.py").write_text("SCALE = 2\n")  # a git pull fixing a transform, same __version__
        key.code_version.cache_clear()
        load = LoadNpy()
        assert _run(data, load, cache).stats()["persist"]["loads"] == 0 and load._calls == 2
    finally:
        key.code_version.cache_clear()  # the real sources again for the next test


@pytest.mark.parametrize("container", ["UserList", "mapping item"])
def test_a_list_like_data_list_or_mapping_item_is_keyed_by_its_files_content(tmp_path, container):
    import collections
    import types

    path, cache = tmp_path / "v.npy", tmp_path / "cache"
    for value in (1.0, 2.0):  # the same path, new content
        np.save(path, np.full((1, 2, 2, 2), value, np.float32))
        if container == "UserList":
            data = collections.UserList([{"image": str(path)}])
        else:
            data = [types.MappingProxyType({"image": str(path)})]
        ds = CacheDataset(data, [LoadNpy()], progress=False, persist_dir=cache, num_workers=1)
        assert float(ds[0]["image"].mean()) == value and ds.stats()["persist"]["loads"] == 0


def test_a_mapping_item_assigned_into_still_saves_its_entry(tmp_path, recwarn):
    import collections

    data = [collections.UserDict(d) for d in _files(tmp_path, 2)]
    chain = [lambda d: dict(_load_in_place(d))]  # assigns into the UserDict, hands a dict on
    ds = CacheDataset(data, chain, progress=False, persist_dir=tmp_path / "cache")
    assert ds.stats()["persist"]["saves"] == 2
    assert not [w for w in recwarn if "changed while it was read" in str(w.message)]


def test_a_home_relative_cache_folder_is_in_the_home_folder(tmp_path, monkeypatch):
    home, cwd = tmp_path / "home", tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(cwd)
    ds = _run(_files(tmp_path, 1), LoadNpy(), "~/fp-cache", budget={"host": 0}, disk_dir="~/fp-tier")
    assert len(list((home / "fp-cache").glob("*.fpc"))) == 1
    assert list((home / "fp-tier").glob("fastpipe-tier-*/*.npy"))  # the entry spilled there
    assert not (cwd / "~").exists()
    ds.close()


@pytest.mark.timeout(30)
def test_relative_cache_folders_stay_the_folders_given_after_a_chdir(tmp_path, monkeypatch):
    """A relative ``disk_dir``/``persist_dir`` was resolved again at each use: after a ``chdir`` (Hydra's,
    a script's) the close left the tier's files behind in the first folder, a new disk-tier entry could
    not be written (the disk tier closed, its items recomputed per read), and saves went nowhere."""
    first, later = tmp_path / "first", tmp_path / "later"
    first.mkdir(), later.mkdir()
    monkeypatch.chdir(first)
    data = _files(tmp_path, 2)
    ds = _run(data, LoadNpy(), "fp-cache", budget={"host": 0}, disk_dir="fp-tier")
    monkeypatch.chdir(later)
    entry = {"image": torch.full((1, 4, 4, 4), 5.0)}
    assert ds.core.store.put(0, entry) == "disk" and torch.equal(ds.cached_entry(0)["image"], entry["image"])
    owner = EntryOwner("f" * 64, 0, (data[0]["image"],))
    assert ds.core.persist.save(owner, entry) and ds.core.persist.load(owner) is not None
    ds.close()
    assert list((first / "fp-tier").iterdir()) == [] and list(later.iterdir()) == []
    assert len(list((first / "fp-cache").glob("*.fpc"))) == 3


def test_an_uncached_item_loaded_from_the_persistent_cache_is_read_on_the_chain_s_device(tmp_path):
    """A GPU chain's item without a cache entry (cache_rate < 1, or no tier had room) is computed on each
    read; once its persistent entry existed (from its first read on) it was loaded on the CPU and given to
    the random suffix there, while cached items come on the GPU: one batch mixed devices. Here ``meta``
    stands for the GPU (a CPU-only test machine); the entry is loaded from disk, then moved."""
    from _persist_helpers import write_files

    from fastpipe.cache._core import CacheCore
    from fastpipe.cache._item_errors import compute_uncached

    item = write_files(tmp_path, n=1)[0]
    core = CacheCore([LoadNpy()], persist_dir=tmp_path / "c")
    assert compute_uncached(core, item, 0)["image"].device.type == "cpu"  # computed, and saved
    core.device = torch.device("meta")
    entry = compute_uncached(core, item, 0)
    assert core.persist.loads == 1 and entry["image"].device.type == "meta"
    assert entry["image_meta_dict"]["affine"].device.type == "meta"  # as a cached entry's get() moves it
