"""ThreadDataLoader(timeout=): a batch that takes longer raises RuntimeError, as torch's DataLoader does."""

from __future__ import annotations

import threading
import time

import pytest
import torch
from _cache_helpers import CountingDet, RandAdd, items

from fastpipe import CacheDataset, ThreadDataLoader


class _HangingAdd(RandAdd):
    """``RandAdd`` that blocks while it makes item 3 until ``gate`` is set (a transform that hangs)."""

    def __init__(self, batched: bool) -> None:
        super().__init__(batched)
        self.gate = threading.Event()

    def __call__(self, d: dict) -> dict:
        if d["x"] == 3:
            self.gate.wait(30)
        return super().__call__(d)

    def _batch_call(self, batch: list[dict]) -> dict:
        if any(it["x"] == 3 for it in batch):
            self.gate.wait(30)
        return super()._batch_call(batch)


class _HangingStream(torch.utils.data.IterableDataset):
    def __init__(self) -> None:
        self.gate = threading.Event()

    def __iter__(self):
        for i in range(6):
            if i == 3:
                self.gate.wait(30)
            yield {"x": torch.tensor(i)}


def _loader_threads_end(within: float = 10) -> bool:
    """Whether the loader's threads (an abandoned run's too, once its read returns) all end in time."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        alive = [t for t in threading.enumerate() if t.name.startswith(("fastpipe-loader", "fastpipe-fetch"))]
        if not alive:
            return True
        time.sleep(0.05)
    return False


@pytest.mark.timeout(60)
@pytest.mark.parametrize("persistent", [False, True])
@pytest.mark.parametrize("num_workers", [0, 2])
@pytest.mark.parametrize("batched", [False, True])
def test_a_hung_transform_times_out_and_the_next_epoch_works(batched, num_workers, persistent):
    """timeout= was only warned about: a transform that hung hung the training loop for ever, where
    torch's DataLoader(timeout=t) raises RuntimeError after waiting t seconds for a batch."""
    hang = _HangingAdd(batched)
    ds = CacheDataset(items(6), [CountingDet(), hang], progress=False)
    loader = ThreadDataLoader(
        ds, batch_size=2, num_workers=num_workers, timeout=1.0, persistent_workers=persistent, seed=0
    )
    got, start = [], time.monotonic()
    try:
        with pytest.raises(
            RuntimeError,
            match=r"timed out after 1\.0 seconds waiting for batch 1 \(dataset indices \[2, 3\]\)",
        ):
            for batch in loader:
                got.append(batch["x"].tolist())
        assert got == [[0, 1]] and time.monotonic() - start < 10
    finally:
        hang.gate.set()  # the hung read returns in the background (so a failure here hangs no other test)
    assert [b["x"].tolist() for b in loader] == [[0, 1], [2, 3], [4, 5]]  # the loader stays usable
    loader.close()
    assert _loader_threads_end()


class _Slow(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 6

    def __getitem__(self, i: int) -> dict:
        time.sleep(0.1)
        return {"x": torch.tensor(i)}


@pytest.mark.timeout(30)
def test_the_clock_runs_per_batch_and_an_iterable_dataset_times_out_too():
    start = time.monotonic()  # each batch comes within the timeout, though the epoch takes longer
    assert len(list(ThreadDataLoader(_Slow(), batch_size=1, buffer_size=1, timeout=0.4))) == 6
    assert time.monotonic() - start > 0.4
    stream = _HangingStream()
    with pytest.raises(RuntimeError, match=r"timed out after 0\.2 seconds waiting for batch 1"):
        list(ThreadDataLoader(stream, batch_size=2, timeout=0.2))
    stream.gate.set()
    assert _loader_threads_end()


class _SlowSwap(torch.utils.data.Dataset):
    """A dataset whose end-of-epoch swap (fastpipe SmartCache's ``loader_update_cache``) is slow."""

    def __len__(self) -> int:
        return 4

    def __getitem__(self, i: int) -> dict:
        return {"x": torch.tensor(i)}

    def loader_update_cache(self, token: object = None) -> None:
        time.sleep(0.6)


@pytest.mark.timeout(30)
def test_a_slow_end_of_epoch_swap_is_no_batch_that_times_out():
    """With persistent_workers the producer swaps the cache after the last batch, before its end marker:
    the clock ran on that wait too, so a slow swap raised 'timed out waiting for batch 2' of 2 batches."""
    loader = ThreadDataLoader(_SlowSwap(), batch_size=2, timeout=0.3, persistent_workers=True)
    try:
        assert [b["x"].tolist() for b in loader] == [[0, 1], [2, 3]]
    finally:
        loader.close()
