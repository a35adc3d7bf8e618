"""CopyCounter / transfers_in_trace: GPU copies summed from the profiler's trace, and a cached GPU epoch with none of volume data."""

from __future__ import annotations

import gzip
import json

import pytest
import torch
from conftest import GPU_SKIP_REASON, HAS_CUDA

from fastpipe.profiling import CopyCounter, transfers_in_trace

TRACE = {
    "traceEvents": [
        {"ph": "X", "cat": "cpu_op", "name": "aten::copy_", "dur": 5},
        {"ph": "X", "cat": "cuda_runtime", "name": "cudaMemcpyAsync", "dur": 2},
        {"ph": "X", "cat": "gpu_memcpy", "name": "Memcpy HtoD (Pageable -> Device)", "args": {"bytes": 4096}},
        {
            "ph": "X",
            "cat": "gpu_memcpy",
            "name": "Memcpy HtoD (Pinned -> Device)",
            "args": {"bytes": 1 << 20},
        },
        {"ph": "X", "cat": "gpu_memcpy", "name": "Memcpy HtoD", "args": {}},  # no size: counted, not zero
        {"ph": "X", "cat": "gpu_memcpy", "name": "Memcpy DtoH (Device -> Pinned)", "args": {"bytes": 64}},
        {"ph": "X", "cat": "gpu_memcpy", "name": "Memcpy DtoD (Device -> Device)", "args": {"bytes": 512}},
        {"ph": "X", "cat": "gpu_memset", "name": "Memset (Device)", "args": {"bytes": 999}},
        {"ph": "X", "cat": "kernel", "name": "crop_pos_neg", "dur": 9},
    ]
}


def test_copies_are_summed_by_direction_with_the_largest_and_the_unsized():
    got = transfers_in_trace(TRACE)
    assert got["HtoD"] == {"count": 3, "bytes": 4096 + (1 << 20), "largest": 1 << 20, "unsized": 1}
    assert got["DtoH"] == {"count": 1, "bytes": 64, "largest": 64, "unsized": 0}
    assert got["DtoD"]["bytes"] == 512 and got["PtoP"]["count"] == 0  # memsets and kernels are not copies
    assert transfers_in_trace(TRACE["traceEvents"]) == got  # the bare event list too


@pytest.mark.parametrize("gz", [False, True])
def test_a_trace_file_is_read_plain_or_gzipped(tmp_path, gz):
    path = tmp_path / ("t.json.gz" if gz else "t.json")
    payload = json.dumps(TRACE).encode()
    path.write_bytes(gzip.compress(payload) if gz else payload)
    assert transfers_in_trace(path)["HtoD"]["bytes"] == 4096 + (1 << 20)


def test_a_bad_trace_names_the_file_or_what_is_missing(tmp_path):
    bad = tmp_path / "cut.json"
    bad.write_text('{"traceEvents": [')
    with pytest.raises(ValueError, match="cut.json is not a readable Chrome trace"):
        transfers_in_trace(bad)
    with pytest.raises(ValueError, match="traceEvents"):
        transfers_in_trace({"events": []})


@pytest.mark.skipif(HAS_CUDA, reason="checks the error where there is no GPU")
def test_without_a_gpu_the_counter_says_what_is_missing():
    with pytest.raises(RuntimeError, match="needs a CUDA device"):
        with CopyCounter():
            pass


def test_the_counter_waits_for_every_gpu_not_only_the_current_one(monkeypatch):
    """Copies a loader queued on cuda:1 were still in flight when the profiler stopped (only the
    current device was synchronised), so they went uncounted and "no large HtoD copy" held falsely."""
    synced = []

    class Profile:
        def __init__(self, **kwargs):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            synced.append("stop")

        def export_chrome_trace(self, path):
            with open(path, "w") as f:
                json.dump(
                    {"traceEvents": [{"cat": "gpu_memcpy", "name": "Memcpy HtoD", "args": {"bytes": 8}}]}, f
                )

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: synced.append(device))
    monkeypatch.setattr(torch.profiler, "profile", Profile)
    with CopyCounter() as copies:
        synced.append("block")
    assert synced == [0, 1, "block", 0, 1, "stop"] and copies.h2d_bytes == 8


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason=GPU_SKIP_REASON)
def test_counter_sees_a_known_copy_and_nothing_for_device_work(tmp_path):
    host = torch.ones(1 << 20, dtype=torch.uint8).pin_memory()
    with CopyCounter(keep_trace=tmp_path / "copy.json") as copies:
        dev = host.to("cuda", non_blocking=True)
    assert copies.h2d_bytes == 1 << 20 and copies.largest("HtoD") == 1 << 20 and copies.h2d_count == 1
    assert copies.trace_path.is_file()
    with CopyCounter() as quiet:
        (dev * 2).sum()
    assert quiet.h2d_bytes == 0


@pytest.mark.gpu
@pytest.mark.timeout(300)
@pytest.mark.skipif(not HAS_CUDA, reason=GPU_SKIP_REASON)
def test_a_cached_gpu_epoch_copies_no_volume_data_to_the_device():
    """ToDevice-then-cache: the driver records no host-to-device copy as big as one crop in a cached epoch."""
    import fastpipe as fp
    from fastpipe.transforms import FgBgToIndicesd, RandCropByPosNegLabeld, ToDeviced

    g = torch.Generator().manual_seed(0)
    data = []
    for _ in range(4):
        label = torch.zeros(1, 48, 40, 44)
        label[:, 10:30, 12:28, 8:30] = 1
        data.append({"image": torch.rand(1, 48, 40, 44, generator=g), "label": label})
    patch = (16, 16, 16)
    chain = [
        FgBgToIndicesd("label"),
        ToDeviced(["image", "label", "label_fg_indices", "label_bg_indices"], device="cuda"),
        RandCropByPosNegLabeld(["image", "label"], "label", patch, pos=1, neg=1, num_samples=4),
    ]
    ds = fp.CacheDataset(data, chain, progress=False)
    loader = fp.ThreadDataLoader(ds, batch_size=2, shuffle=True)
    for batch in loader:  # warm-up: kernels compiled, buffers made
        assert batch["image"].is_cuda
    with CopyCounter() as copies:
        batches = sum(1 for _ in loader)
    assert batches == 2
    one_crop = 16 * 16 * 16 * 4
    assert copies.largest("HtoD") < one_crop, copies.summary()  # crop parameters only, never volume data
    assert copies.h2d_bytes < 2 * 4 * one_crop  # all of them together: less than one batch of crops
    assert ds.stats()["h2d_bytes"] == 0  # and the cache's own counter agrees
