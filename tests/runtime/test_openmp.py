"""Per-thread OpenMP counts: set in one thread, seen by torch there, nowhere else; cache-fill workers share the cores."""

from __future__ import annotations

import threading

import pytest
import torch

from fastpipe.cache._fill import run_fill
from fastpipe.runtime import _openmp


@pytest.fixture
def four_threads(torch_threads):
    torch_threads(4)


def _in_thread(fn):
    out: list = []
    t = threading.Thread(target=lambda: out.append(fn()))
    t.start()
    t.join(timeout=30)
    return out[0]


def test_the_runtime_torch_loaded_is_found_where_there_is_one():
    # Linux wheels of torch load libgomp; the loader's and the fill's thread sharing rest on finding it
    if any("gomp" in p for p in _openmp._candidates()):
        assert _openmp.available()
    assert _openmp.available() == (_openmp._find() is not None)


@pytest.mark.parametrize("count", [1, 4])
def test_a_runtime_torch_does_not_read_is_passed_over(monkeypatch, torch_threads, count):
    set_threads = torch_threads

    class Inert:  # a runtime whose setting torch never sees (another library's copy, say)
        def omp_set_num_threads(self, n: int) -> None:
            pass

        def omp_get_max_threads(self) -> int:
            return 1

    real = _openmp._candidates()
    monkeypatch.setattr(_openmp, "_candidates", lambda: ["inert", *real])
    monkeypatch.setattr(_openmp, "_load", lambda p, load=_openmp._load: Inert() if p == "inert" else load(p))
    set_threads(count)  # at 1 a runtime that changes nothing must not pass either
    found = _openmp._find()
    assert not isinstance(found, Inert)
    assert (found is not None) == bool(real)


def test_a_thread_count_set_in_one_thread_stays_there(four_threads):
    if not _openmp.available():
        pytest.skip("no OpenMP runtime in this process: set_this_thread is a no-op (tested below)")

    def one_thread():
        before = _openmp.set_this_thread(1)
        return before, torch.get_num_threads()

    assert _in_thread(one_thread) == (4, 1)
    assert torch.get_num_threads() == 4  # not in the main thread
    assert _in_thread(torch.get_num_threads) == 4  # nor in threads started later


def test_without_a_runtime_nothing_changes(monkeypatch, four_threads):
    monkeypatch.setattr(_openmp, "_lib", [None])
    assert not _openmp.available()
    assert _in_thread(lambda: (_openmp.set_this_thread(1), torch.get_num_threads())) == (None, 4)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("workers,expected", [(1, 4), (2, 2), (4, 1), (8, 1)])
def test_fill_workers_share_the_cores(four_threads, workers, expected):
    if not _openmp.available():
        pytest.skip("no OpenMP runtime in this process: fill threads keep torch's count")
    seen: list[int] = []
    report = run_fill(
        range(8), lambda s: seen.append(torch.get_num_threads()), lambda s: {}, workers, progress=False
    )
    assert report.items == 8
    assert set(seen) == {expected}
