"""Transforms, files and a killable child-process fill for the persistent-cache tests."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import numpy as np
import torch

from fastpipe import CacheDataset


class LoadNpy:
    """Deterministic: reads ``image`` from an ``.npy`` path with a light meta dict; counts its calls."""

    def __init__(self, scale: float = 1.0) -> None:
        self.scale = scale
        self._lock = threading.Lock()
        self._calls = 0

    def __call__(self, d: dict) -> dict:
        with self._lock:
            self._calls += 1
        img = torch.from_numpy(np.load(d["image"])) * self.scale
        meta = {
            "filename_or_obj": d["image"],
            "affine": torch.eye(4, dtype=torch.float64),
            "pixdim": (1.0, 2.0),
        }
        return {**d, "image": img, "image_meta_dict": meta}


class Select:
    """Deterministic: ``image -> select_fn(image)`` as float32 (like ``CropForegroundd``'s ``select_fn``)."""

    def __init__(self, select_fn) -> None:
        self.select_fn = select_fn

    def __call__(self, d: dict) -> dict:
        return {**d, "image": self.select_fn(d["image"]).to(torch.float32)}


def write_files(root: Path, n: int = 3, shape: tuple[int, ...] = (1, 4, 4, 4)) -> list[dict]:
    """``n`` ``.npy`` volumes ``img{i}.npy`` filled with ``i / n``; the items naming them."""
    data = []
    for i in range(n):
        path = root / f"img{i}.npy"
        np.save(path, np.full(shape, i / n, dtype=np.float32))
        data.append({"image": str(path)})
    return data


def assert_same_items(a: CacheDataset, b: CacheDataset) -> None:
    """Every item of ``a`` equals that of ``b``: tensors bit for bit, other values exactly."""
    assert len(a) == len(b)
    for i in range(len(a)):
        x, y = a[i], b[i]
        assert x.keys() == y.keys()
        assert torch.equal(x["image"], y["image"]) and x["image"].dtype == y["image"].dtype
        if "image_meta_dict" in x:
            assert x["image_meta_dict"].keys() == y["image_meta_dict"].keys()
            assert torch.equal(x["image_meta_dict"]["affine"], y["image_meta_dict"]["affine"])


def fill_and_hang(data_json: str, cache_dir: str, ready: str, hang_at: int) -> None:
    """Fill a persistent cache in this process; at the ``hang_at``-th entry write, after its bytes are in
    the temporary file but before the rename, create ``ready`` and sleep (the parent then SIGKILLs us)."""
    calls = {"n": 0}
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        real_fsync(fd)
        calls["n"] += 1
        if calls["n"] == hang_at:
            Path(ready).write_text(str(os.getpid()))
            time.sleep(600)

    os.fsync = fsync
    CacheDataset(json.loads(data_json), [LoadNpy()], progress=False, persist_dir=cache_dir, num_workers=1)


class LoggedDet:
    """Deterministic: an ``image`` MetaTensor and a ``half`` bfloat16 tensor from ``x``; appends a line
    ``{pid} {x}`` to ``log`` per call, so calls in worker processes can be counted."""

    random = False

    def __init__(self, log: str, shape: tuple[int, ...] = (1, 6, 6, 6)) -> None:
        self.log, self.shape = log, shape

    def __call__(self, d: dict) -> dict:
        from monai.data import MetaTensor

        with open(self.log, "a") as f:
            f.write(f"{os.getpid()} {d['x']}\n")
        image = torch.arange(int(np.prod(self.shape)), dtype=torch.float32).reshape(self.shape) + d["x"]
        meta = {"filename_or_obj": f"img{d['x']}.nii.gz", "tag": d["x"]}
        half = torch.full((3,), float(d["x"]), dtype=torch.bfloat16)
        return {**d, "image": MetaTensor(image, meta=meta), "half": half}


def logged_calls(log: Path) -> list[str]:
    """The lines :class:`LoggedDet` wrote to ``log`` (``[]`` when none)."""
    return log.read_text().splitlines() if log.exists() else []


def write_and_hang(root: str, ready: str) -> None:
    """Start writing a temporary file in ``root`` (an entry being saved), create ``ready``, then sleep
    mid-write (the test kills us)."""
    from fastpipe.cache._files import write_temp

    def chunks():
        yield b"partial"
        Path(ready).write_text(str(os.getpid()))
        time.sleep(600)

    write_temp(Path(root), "ab" * 32, chunks())
