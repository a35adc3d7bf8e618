"""fastpipe's worker threads run on their creator's CUDA device (a stand-in torch.cuda, no GPU needed).

CUDA's current device is per thread and a new thread starts on cuda:0: a rank that chose cuda:1 with
torch.cuda.set_device had its fill, replacement and loader threads run a chain's "cuda" steps on cuda:0.
"""

from __future__ import annotations

import threading

import pytest
import torch

import fastpipe as fp


@pytest.fixture
def per_thread_cuda(monkeypatch):
    """torch.cuda's current device as CUDA keeps it: per thread, 0 in a new thread."""
    local = threading.local()
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: getattr(local, "device", 0))
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: setattr(local, "device", int(d)))
    torch.cuda.set_device(1)  # this rank's GPU
    return local


class _Record:
    """A deterministic step that records the current CUDA device of the thread running it."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, int]] = []

    def __call__(self, d: dict) -> dict:
        self.seen.append((threading.current_thread().name, torch.cuda.current_device()))
        return d


@pytest.mark.timeout(60)
def test_fill_and_replacement_threads_run_on_the_ranks_device(per_thread_cuda):
    rec = _Record()
    data = [{"x": torch.tensor([i])} for i in range(8)]
    fp.CacheDataset(data, [rec], num_workers=2, progress=False)
    ds = fp.SmartCacheDataset(data, [rec], cache_num=4, replace_rate=0.5, num_init_workers=2, progress=False)
    ds.start()
    ds.update_cache()
    ds.shutdown()
    threads = {name for name, _ in rec.seen}
    assert any(n.startswith("fastpipe-fill") for n in threads), threads
    assert any(n.startswith("fastpipe-smartcache") for n in threads), threads
    assert {dev for _, dev in rec.seen} == {1}, rec.seen


@pytest.mark.timeout(60)
@pytest.mark.parametrize("num_workers", [0, 2])
def test_loader_threads_run_on_the_loops_device(per_thread_cuda, num_workers):
    rec = _Record()

    class DS(torch.utils.data.Dataset):
        def __len__(self):
            return 6

        def __getitem__(self, i):
            return rec({"x": torch.tensor([i])})

    assert len(list(fp.ThreadDataLoader(DS(), batch_size=2, num_workers=num_workers))) == 3
    assert {n for n, _ in rec.seen} <= {"fastpipe-loader"} | {f"fastpipe-fetch_{i}" for i in range(8)}
    assert {dev for _, dev in rec.seen} == {1}, rec.seen
