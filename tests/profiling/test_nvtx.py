"""NVTX ranges: observed through the NVTX C API's own tool interface, the way Nsight sees them.

``nvtx_recorder.c`` is a tiny NVTX injection library (the mechanism Nsight Systems attaches
with): compiled here with gcc and loaded by the real ``nvtx`` package in a subprocess through
``NVTX_INJECTION64_PATH``, it writes every pushed and popped range to a file.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import monai.transforms as mt
import pytest
import torch

import fastpipe.profiling.nvtx_ranges as nr
from fastpipe.profiling import ProfiledTransform, annotate, enable_nvtx, profiled, unwrap, wrap_chain
from fastpipe.transforms import Compose, is_random, split_chain

HERE = Path(__file__).parent
REPO = HERE.parents[1]
CUDA_INCLUDES = [
    Path(os.environ.get("CUDA_HOME", "/usr/local/cuda")) / "include",
    *Path("/usr/local").glob("cuda*/include"),
]


@pytest.fixture(autouse=True)
def _nvtx_off():
    enable_nvtx(False)
    yield
    enable_nvtx(False)


@pytest.fixture(scope="module")
def recorder(tmp_path_factory) -> Path:
    """The injection library, built with gcc (and checked against the nvtx3 headers when present)."""
    if shutil.which("gcc") is None:
        pytest.skip("needs gcc to build the NVTX injection library")
    src = HERE / "nvtx_recorder.c"
    lib = tmp_path_factory.mktemp("nvtx") / "libnvtx_recorder.so"
    subprocess.run(
        ["gcc", "-shared", "-fPIC", "-O1", "-Wall", "-o", str(lib), str(src), "-lpthread"], check=True
    )
    headers = [inc for inc in CUDA_INCLUDES if (inc / "nvtx3" / "nvToolsExt.h").exists()]
    if headers:  # the copied ABI definitions must match the official ones
        cmd = ["gcc", "-fsyntax-only", "-DCHECK_AGAINST_NVTX_HEADERS", f"-I{headers[0]}", str(src)]
        subprocess.run(cmd, check=True)
    return lib


def run_recorded(recorder: Path, tmp_path: Path, body: str, **extra_env: str) -> list[list[str]]:
    """Run ``body`` in a fresh Python with the recorder injected; the recorded events, split."""
    log = tmp_path / "nvtx.tsv"
    env = {k: v for k, v in os.environ.items() if k not in ("NVTX_DISABLE", "FASTPIPE_NVTX")}
    env.update(NVTX_INJECTION64_PATH=str(recorder), NVTX_RECORD_PATH=str(log), PYTHONPATH=str(REPO))
    env.update(extra_env)
    script = tmp_path / "script.py"
    script.write_text(PRELUDE + textwrap.dedent(body))
    proc = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return [line.split("\t") for line in log.read_text().splitlines()] if log.exists() else []


PRELUDE = """
import torch
from fastpipe.profiling import annotate, enable_nvtx, wrap_chain
from fastpipe.transforms import Compose

class Scale:
    def __call__(self, d):
        return {**d, "x": d["x"] * 2}

def shift(d):
    return {**d, "x": d["x"] + 1}

class RandNoise:
    random = True
    def __init__(self):
        self.g = torch.Generator().manual_seed(0)
    def set_random_state(self, seed):
        self.g.manual_seed(seed)
    def __call__(self, d):
        return {**d, "x": d["x"] + torch.rand(1, generator=self.g)}
    def batch_call(self, items):
        return {"x": torch.stack([self(d)["x"] for d in items])}

chain = [Scale(), shift, RandNoise()]
"""


def pushes(events: list[list[str]]) -> list[tuple[str, str]]:
    """``(message, argb hex)`` of every push in the fastpipe domain, in order."""
    return [(e[2], e[3]) for e in events if e[0] == "push" and e[1] == nr.DOMAIN]


def assert_balanced(events: list[list[str]]) -> None:
    """Every thread pops exactly what it pushed."""
    depth: dict[str, int] = {}
    for e in events:
        if e[0] == "push":
            depth[e[5]] = depth.get(e[5], 0) + 1
        elif e[0] == "pop":
            depth[e[2]] = depth.get(e[2], 0) - 1
            assert depth[e[2]] >= 0, f"pop without push on thread {e[2]}"
    assert all(v == 0 for v in depth.values()), depth


def hexcolor(kind: str) -> str:
    return format(nr.COLORS[kind], "08x")


@pytest.mark.timeout(120)
def test_every_transform_of_a_chain_is_a_named_coloured_range(recorder, tmp_path):
    events = run_recorded(
        recorder,
        tmp_path,
        """
        enable_nvtx()
        wrapped = Compose(wrap_chain(chain))
        for _ in range(2):
            wrapped({"x": torch.ones(3)})
        wrapped.transforms[-1].batch_call([{"x": torch.ones(3)}] * 2)
        with annotate("fetch", "loader"):
            pass
        """,
    )
    t, r = hexcolor("transform"), hexcolor("random")
    one_pass = [("Scale", t), ("shift", t), ("RandNoise", r)]
    assert pushes(events) == one_pass * 2 + [("RandNoise.batch_call", r), ("fetch", hexcolor("loader"))]
    assert_balanced(events)
    categories = {e[3] for e in events if e[0] == "category"}
    assert {"transform", "random", "loader"} <= categories


@pytest.mark.timeout(120)
def test_disabled_emits_nothing_and_does_not_wrap(recorder, tmp_path):
    events = run_recorded(
        recorder,
        tmp_path,
        """
        flat = wrap_chain(chain)
        assert all(a is b for a, b in zip(flat, chain)), "disabled wrap_chain must not wrap"
        forced = Compose(wrap_chain(chain, force=True))
        forced({"x": torch.ones(3)})
        with annotate("fetch", "loader"):
            pass
        """,
    )
    assert pushes(events) == []


def test_wrapping_does_not_change_the_chain_split():
    class RandCrop:
        random = True

        def __call__(self, d):
            return d

        def set_random_state(self, seed):
            self.seed = seed
            return self

        def batch_call(self, items):
            return {"n": len(items)}

    def load(d):
        return d

    monai_rand = mt.RandFlipd(keys="x", prob=1.0, spatial_axis=0)
    chain = [load, mt.ScaleIntensityd(keys="x"), RandCrop(), monai_rand, load]
    enable_nvtx()
    wrapped = wrap_chain(chain)
    assert all(isinstance(w, ProfiledTransform) for w in wrapped)
    (c0, r0), (c1, r1) = split_chain(chain), split_chain(wrapped)
    assert [unwrap(t) for t in c1] == c0 and [unwrap(t) for t in r1] == r0
    assert [is_random(t) for t in wrapped] == [False, False, True, True, False]
    # the batched path and seeding see through the wrapper
    assert wrapped[2].batch_call([{}, {}]) == {"n": 2}
    assert not hasattr(wrapped[0], "batch_call") and not hasattr(wrapped[1], "batch_call")
    Compose(wrapped).set_random_state(7)
    assert chain[2].seed == 9
    assert wrapped[2].set_random_state(1) is wrapped[2] and chain[2].seed == 1  # MONAI-style chaining
    out = wrapped[3]({"x": torch.arange(4.0).reshape(1, 4, 1, 1)})
    assert out["x"].flatten().tolist() == [3.0, 2.0, 1.0, 0.0]
    assert profiled(wrapped[0]).inner is load  # no double wrapping


def test_disabled_wrapper_and_annotate_never_touch_nvtx(monkeypatch):
    def boom(*_args, **_kwargs):
        raise AssertionError("nvtx called while disabled")

    monkeypatch.setattr(nr, "_range", boom)
    wrapped = profiled(lambda d: d + 1)
    assert wrapped(1) == 2
    assert annotate("fetch", "loader") is annotate("collate", "loader")  # one shared null context
    with annotate("fetch", "loader"):
        pass


@pytest.mark.timeout(120)
def test_loader_phases_and_cache_fill_are_ranges(recorder, tmp_path):
    events = run_recorded(
        recorder,
        tmp_path,
        """
        from fastpipe import CacheDataset, ThreadDataLoader
        enable_nvtx()
        data = [{"x": torch.full((3,), float(i))} for i in range(4)]
        ds = CacheDataset(data, wrap_chain(chain), progress=False, num_workers=1)
        loader = ThreadDataLoader(ds, batch_size=2, device="cpu")
        assert sum(1 for _ in loader) == 2
        """,
    )
    names = [m for m, _ in pushes(events)]
    colours = dict(pushes(events))
    for phase, kind in [("wait", "wait"), ("fetch", "loader"), ("collate", "loader"), ("h2d", "h2d")]:
        assert names.count(phase) >= 2, (phase, names)  # once per batch at least
        assert colours[phase] == hexcolor(kind)
    assert names.count("cache_fill") == 1 and colours["cache_fill"] == hexcolor("cache")
    # the prefix ran once per item in the fill, the random suffix once per item read
    assert names.count("Scale") == 4 and names.count("shift") == 4
    assert names.count("RandNoise") + names.count("RandNoise.batch_call") >= 2
    assert_balanced(events)
    threads = {e[5] for e in events if e[0] == "push" and e[2] in ("wait", "fetch")}
    assert len(threads) >= 2  # consumer waits on one thread, the producer fetches on another


@pytest.mark.timeout(120)
def test_environment_switch_enables_ranges(recorder, tmp_path):
    body = """
        with annotate("fetch", "loader"):
            pass
        """
    assert pushes(run_recorded(recorder, tmp_path, body, FASTPIPE_NVTX="1")) == [
        ("fetch", hexcolor("loader"))
    ]


def test_cache_dataset_sees_the_same_split_and_batches_when_wrapped():
    from fastpipe import CacheDataset
    from fastpipe.transforms import RandCropByPosNegLabeld

    label = torch.zeros(1, 12, 12, 12, dtype=torch.uint8)
    label[:, 4:8, 4:8, 4:8] = 1
    data = [{"image": torch.rand(1, 12, 12, 12), "label": label} for _ in range(3)]

    def chain():
        crop = RandCropByPosNegLabeld(["image", "label"], label_key="label", spatial_size=4, num_samples=2)
        return [lambda d: {**d, "image": d["image"] * 2}, crop]

    plain = CacheDataset(data, chain(), progress=False, num_workers=1, seed=3)
    enable_nvtx()
    wrapped = CacheDataset(data, wrap_chain(chain()), progress=False, num_workers=1, seed=3)
    assert len(wrapped.suffix) == len(plain.suffix) == 1 and wrapped.batched == plain.batched
    a, b = plain.fetch_seeded([0, 2], 11), wrapped.fetch_seeded([0, 2], 11)
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["label"], b["label"])


def test_device_point_looks_through_the_wrapper():
    from fastpipe.transforms import ToDeviced
    from fastpipe.transforms.utility import device_point

    to_dev = ToDeviced(["image"], device="cpu")
    assert device_point(profiled(to_dev)) == device_point(to_dev) == torch.device("cpu")


def test_cache_dataset_wraps_its_chain_when_nvtx_is_on_and_not_when_off():
    import torch

    from fastpipe import CacheDataset
    from fastpipe.profiling import ProfiledTransform, disable_nvtx, enable_nvtx
    from fastpipe.transforms import mark_random

    def det(d):
        return {**d, "y": d["x"] * 2}

    rnd = mark_random(lambda d: {**d, "z": torch.rand(())})
    data = [{"x": torch.tensor(i)} for i in range(3)]
    disable_nvtx()
    off = CacheDataset(data, [det, rnd], progress=False)
    assert off.suffix == [rnd]
    enable_nvtx()
    try:
        on = CacheDataset(data, [det, profiled(rnd)], progress=False)
    finally:
        disable_nvtx()
    assert isinstance(on.suffix[0], ProfiledTransform) and on.suffix[0].inner is rnd  # not wrapped twice
    assert isinstance(on.core.prefix[0], ProfiledTransform) and on.core.prefix[0].inner is det
    assert torch.equal(on[1]["y"], off[1]["y"])


class _LockedNoise:
    """A random transform that cannot be deep-copied (it holds a lock): a cache copies it shallow per thread."""

    random = True

    def __init__(self):
        import threading

        import numpy as np

        self.lock = threading.Lock()
        self.R = np.random.RandomState(0)

    def set_random_state(self, seed=None, state=None):
        import numpy as np

        self.R = np.random.RandomState(seed)
        return self

    def __call__(self, d):
        import time

        time.sleep(0.002)  # real work releases the GIL: the other loader thread runs meanwhile
        return {"x": d["x"] + float(self.R.rand())}


@pytest.mark.timeout(60)
def test_wrapping_keeps_per_thread_random_states_apart():
    import copy

    from fastpipe import CacheDataset, ThreadDataLoader

    inner = _LockedNoise()
    assert copy.copy(profiled(inner)).inner is not inner  # a copy of the wrapper copies the transform

    def batches():
        data = [{"x": torch.zeros(1)} for _ in range(16)]
        ds = CacheDataset(data, [_LockedNoise()], cache_rate=1.0, progress=False, seed=3)
        loader = ThreadDataLoader(ds, batch_size=4, num_workers=2, seed=3)
        try:
            return torch.cat([b["x"] for b in loader]).flatten()
        finally:
            loader.close()

    off = batches()
    enable_nvtx()  # the cache wraps its chain: its threads' copies must not share one random state
    for _ in range(3):
        assert torch.equal(batches(), off)


def test_a_wrapped_monai_chain_gets_the_plan_and_values_of_the_unwrapped_one():
    """README's recipe (``chain = wrap_chain(chain)`` then ``CacheDataset(data, chain)``): the wrappers hid
    the MONAI transforms from the planner, so a random plain callable was cached and no step was swapped."""
    from fastpipe import CacheDataset

    keys = ["image", "label"]
    label = torch.zeros(1, 20, 20, 20)
    label[:, 5:12, 5:12, 5:12] = 1
    data = [{"image": torch.rand(1, 20, 20, 20), "label": label.clone()} for _ in range(3)]

    def chain():
        return [
            mt.ScaleIntensityRanged("image", a_min=0, a_max=1, b_min=0, b_max=2),
            lambda d: {**d, "noise": torch.rand(())},  # MONAI's rule: a plain callable runs on every read
            mt.RandCropByPosNegLabeld(keys, label_key="label", spatial_size=8, num_samples=2),
        ]

    plain = CacheDataset(data, chain(), progress=False, seed=1)
    enable_nvtx()
    wrapped = CacheDataset(data, wrap_chain(chain()), progress=False, seed=1)
    assert [type(unwrap(t)) for t in wrapped.suffix] == [type(t) for t in plain.suffix]
    assert len(wrapped.plan.prefix) == len(plain.plan.prefix) and wrapped.batched == plain.batched
    assert all(isinstance(t, ProfiledTransform) for t in wrapped.suffix)  # still ranged
    assert not torch.equal(wrapped[0][0]["noise"], wrapped[0][0]["noise"])  # run on every read, not cached

    def crops(ds):
        return [crop for item in ds.fetch_seeded([0, 2], 11) for crop in item]

    for a, b in zip(crops(plain), crops(wrapped), strict=True):
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["label"], b["label"])
