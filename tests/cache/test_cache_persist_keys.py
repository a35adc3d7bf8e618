"""Persistent-cache keys cover what determines the output: transform code and data, and file content."""

from __future__ import annotations

import functools
import os
import threading
import time
import zlib

import numpy as np
import pytest
import torch
from _persist_helpers import LoadNpy, Select

from fastpipe import CacheDataset
from fastpipe.cache._fingerprint import UnfingerprintableError, chain_fingerprint, fingerprint


def _ramp(tmp_path) -> list[dict]:
    path = tmp_path / "ramp.npy"
    np.save(path, np.linspace(0.0, 1.0, 64, dtype=np.float32).reshape(1, 4, 4, 4))
    return [{"image": str(path)}]


def _select_run(data, cache, select_fn):
    return CacheDataset(
        data, [LoadNpy(), Select(select_fn)], progress=False, persist_dir=cache, num_workers=1
    )


def _above(x, t=0.0):
    return x > t


def _exceeds(t, x):
    return x > t


def _closure(t):
    return lambda x: x > t


def _default(t):
    def select(x, t=t):
        return x > t

    return select


def _kwdefault(t):
    def select(x, *, t=t):
        return x > t

    return select


PAIRS = {
    "lambda constant": (lambda x: x > 0, lambda x: x > 0.9),
    "closure cell": (_closure(0.0), _closure(0.9)),
    "default": (_default(0.0), _default(0.9)),
    "keyword default": (_kwdefault(0.0), _kwdefault(0.9)),
    "partial keyword": (functools.partial(_above, t=0.0), functools.partial(_above, t=0.9)),
    "partial argument": (functools.partial(_exceeds, 0.0), functools.partial(_exceeds, 0.9)),
}


@pytest.mark.parametrize("change", list(PAIRS))
def test_changed_select_fn_gives_a_new_key(tmp_path, change):
    first, second = PAIRS[change]
    data, cache = _ramp(tmp_path), tmp_path / "cache"
    old = _select_run(data, cache, first)
    new = _select_run(data, cache, second)
    assert torch.equal(new[0]["image"], _fresh(data, second)), "the old select_fn's output was served"
    assert not torch.equal(new[0]["image"], old[0]["image"])
    assert new.stats()["persist"]["loads"] == 0
    assert chain_fingerprint([Select(first)]) != chain_fingerprint([Select(second)])


def _fresh(data, select_fn):
    return CacheDataset(data, [LoadNpy(), Select(select_fn)], progress=False)[0]["image"]


def test_same_transforms_give_the_same_key_so_entries_are_reused(tmp_path):
    data, cache = _ramp(tmp_path), tmp_path / "cache"
    _select_run(data, cache, _closure(0.5))
    again = _select_run(data, cache, _closure(0.5))
    assert again.stats()["persist"]["loads"] == 1 and again.stats()["computed"] == 0


THRESHOLD = 0.25


def _reads_a_global(x):
    return x > THRESHOLD


def test_a_global_the_code_reads_is_part_of_the_key(monkeypatch):
    before = fingerprint(_reads_a_global)
    monkeypatch.setattr(f"{__name__}.THRESHOLD", 0.75)
    assert fingerprint(_reads_a_global) != before


def test_method_code_of_a_user_transform_is_part_of_the_key():
    class A:
        def __call__(self, d):
            return d

    class B:
        def __call__(self, d):
            return {**d, "x": 1}

    B.__qualname__ = A.__qualname__
    assert fingerprint(A()) != fingerprint(B())


def test_transform_that_cannot_be_fingerprinted_is_refused_naming_it(tmp_path):
    class Locked:
        def __init__(self):
            self.codec = zlib.compressobj()  # public, opaque: cannot tell whether it changes the output
            self.guard = threading.Lock()  # a lock is state, not a parameter: hashed by type

        def __call__(self, d):
            return d

    data = [{"image": "a"}]
    with pytest.raises(ValueError, match=r"transform 1 \(.*Locked\)\.codec is a zlib\.Compress"):
        CacheDataset(data, [lambda d: d, Locked()], progress=False, persist_dir=tmp_path / "c")
    with pytest.raises(UnfingerprintableError, match="closure codec"):
        codec = zlib.compressobj()
        fingerprint(lambda x: (codec, x))
    assert len(CacheDataset(data, [Locked()], progress=False)) == 1  # fine without a persistent cache


@pytest.mark.parametrize("persist_key", ["content", "stat"])
def test_same_size_edit_with_restored_mtime_is_seen(tmp_path, persist_key):
    data, cache = _ramp(tmp_path), tmp_path / "cache"
    path = data[0]["image"]
    kwargs = {"persist_key": "stat"} if persist_key == "stat" else {}  # "content" is the default
    old = CacheDataset(data, [LoadNpy()], progress=False, persist_dir=cache, **kwargs)
    st = os.stat(path)
    time.sleep(0.05)  # past the filesystem's timestamp granularity, as any real edit is
    np.save(path, np.full((1, 4, 4, 4), 0.5, dtype=np.float32))  # same size, other voxels
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # as cp -p / rsync -a / tar x leave it
    assert os.stat(path).st_size == st.st_size and os.stat(path).st_mtime_ns == st.st_mtime_ns
    new = CacheDataset(data, [LoadNpy()], progress=False, persist_dir=cache, **kwargs)
    assert float(new[0]["image"].min()) == 0.5, "the old file's data was served"
    assert not torch.equal(new[0]["image"], old[0]["image"]) and new.stats()["persist"]["loads"] == 0


def test_persist_key_is_checked(tmp_path):
    with pytest.raises(ValueError, match="persist_key must be one of"):
        CacheDataset([{"x": 1}], [lambda d: d], progress=False, persist_dir=tmp_path, persist_key="mtime")
