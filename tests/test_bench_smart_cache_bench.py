"""``benchmarks.smart_cache_bench``: every timed epoch is checked for its crop count."""

from __future__ import annotations

import pytest
import torch

from benchmarks import smart_cache_bench
from benchmarks.workload import NUM_SAMPLES


class _Loader:
    """A loader over ``items`` items that yields ``batches`` batches of one volume's crops."""

    def __init__(self, items: int, batches: int) -> None:
        self.dataset, self.batches = list(range(items)), batches

    def __iter__(self):
        for _ in range(self.batches):
            yield {"image": torch.zeros(NUM_SAMPLES, 1, 2, 2, 2)}


def test_an_epoch_that_ended_early_is_an_error_not_a_fast_epoch():
    """MONAI's ThreadDataLoader ends an epoch when an item fails; the bench timed it as a fast one."""
    after = []
    with pytest.raises(RuntimeError, match="epoch yielded 4 crops, expected 8"):
        smart_cache_bench._epoch_runner(_Loader(2, 1), 0.0, lambda: after.append(1))()
    smart_cache_bench._epoch_runner(_Loader(2, 2), 0.0, lambda: after.append(1))()
    assert after == [1]


def test_every_peer_runs_in_a_process_of_its_own(monkeypatch):
    """The three peers ran in one process, MONAI's last: a peer's heap and threads slowed the next."""
    import os

    assert smart_cache_bench.in_own_process(os.getpid) != os.getpid()
    calls = []
    monkeypatch.setattr(smart_cache_bench, "in_own_process", lambda fn, *a: calls.append(fn) or _row())
    smart_cache_bench.compare([], None)
    assert calls == [
        smart_cache_bench.run_fastpipe,
        smart_cache_bench.run_fastpipe,
        smart_cache_bench.run_monai,
    ]


def _row() -> dict:
    return {"per_batch_s": {"median": 1.0}}
