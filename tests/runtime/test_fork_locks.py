"""A child forked while a parent thread holds a transform's or pool's lock can still use them (no hang)."""

from __future__ import annotations

import copy
import os
import pickle
import time

import pytest
import torch

from fastpipe.runtime._host_pool import HostBufferPool
from fastpipe.transforms import RandCropByPosNegLabeld


def _run_in_fork(work) -> int:
    """Fork; the child runs ``work()`` and exits 0 (1 on error); returns its exit code (-1 if it hangs)."""
    pid = os.fork()
    if pid == 0:  # child
        code = 1
        try:
            work()
            code = 0
        finally:
            os._exit(code)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.05)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    return -1


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork (POSIX)")
@pytest.mark.timeout(120)
@pytest.mark.parametrize("copied", [None, "deepcopy", "pickle"])
def test_locks_held_at_fork_are_renewed_in_the_child(copied):
    """Loaders deep-copy (threads) or pickle (workers) the crop: a copy renews its lock after a fork too."""
    pool = HostBufferPool()
    crop = RandCropByPosNegLabeld(["image", "label"], "label", 4, num_samples=2).set_random_state(0)
    if copied:
        crop = copy.deepcopy(crop) if copied == "deepcopy" else pickle.loads(pickle.dumps(crop))
    label = torch.zeros((1, 8, 8, 8), dtype=torch.uint8)
    label[0, 2:6, 2:6, 2:6] = 1
    item = {"image": torch.rand((1, 8, 8, 8)), "label": label}

    def work() -> None:
        pool.empty((2, 3), torch.float32)
        assert crop.batch_call([item])["image"].shape == (2, 1, 4, 4, 4)

    with pool._lock, crop._lock:  # as if a loader thread were mid-batch when the fork happened
        code = _run_in_fork(work)
    assert code == 0, "the forked child hung or failed on a lock held by the parent at fork time"


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork (POSIX)")
@pytest.mark.timeout(120)
@pytest.mark.parametrize("smart", [False, True])
def test_a_dataset_read_in_a_child_forked_mid_read_does_not_hang(smart):
    import fastpipe as fp

    label = torch.zeros((1, 8, 8, 8), dtype=torch.uint8)
    label[0, 2:6, 2:6, 2:6] = 1
    data = [{"image": torch.rand((1, 8, 8, 8)), "label": label} for _ in range(6)]
    chain = [RandCropByPosNegLabeld(["image", "label"], "label", 4, num_samples=2)]
    ds = (
        fp.SmartCacheDataset(data, chain, cache_num=4, replace_rate=0.5, progress=False)
        if smart
        else fp.CacheDataset(data, chain, progress=False)
    )

    def work() -> None:
        torch.set_num_threads(1)  # as torch's DataLoader sets it in its worker processes
        crops = ds[0]  # a list of num_samples crops
        assert len(crops) == 2 and crops[0]["image"].shape == (1, 4, 4, 4)

    locks = [ds._suffix_lock, ds.core._lock, ds.core.store._lock]
    locks += [ds._window_lock] if smart else []
    for lock in locks:  # as if a loader thread were mid-read when the fork happened
        lock.acquire()
    try:
        code = _run_in_fork(work)
    finally:
        for lock in locks:
            lock.release()
        if smart:
            ds.shutdown()
    assert code == 0, "the forked child hung or failed on a dataset lock held by the parent at fork time"
