"""``fastpipe.distributed``: partition unit tests, and real 2-process gloo runs (``tests/_dist_worker.py``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from fastpipe import distributed
from fastpipe.cache.cache_dataset import CacheDataset
from fastpipe.loader.thread_loader import ThreadDataLoader

REPO = Path(__file__).resolve().parent.parent
WORKER = Path(__file__).resolve().parent / "_dist_worker.py"


# ---------------------------------------------------------------- partition without processes


@pytest.mark.parametrize("n, world", [(9, 2), (10, 3), (4, 4), (100, 7)])
@pytest.mark.parametrize("even", [True, False])
def test_partition_disjoint_and_complete(n, world, even):
    shards = [distributed.partition_indices(n, r, world, seed=5, even_divisible=even) for r in range(world)]
    flat = [i for s in shards for i in s]
    assert set(flat) == set(range(n))
    if even:  # every rank as many; the padding repeats only world-1 items at most
        assert {len(s) for s in shards} == {-(-n // world)}
        assert len(flat) - n == (-n) % world
    else:
        assert len(flat) == n and sorted(flat) == list(range(n))
        assert max(map(len, shards)) - min(map(len, shards)) <= 1


def test_partition_matches_monai_when_unshuffled():
    from monai.data import partition_dataset

    data = list(range(11))
    for even in (True, False):
        ours = [distributed.partition(data, r, 3, shuffle=False, even_divisible=even) for r in range(3)]
        assert ours == partition_dataset(data, num_partitions=3, shuffle=False, even_divisible=even)
    ours = [distributed.partition(data, r, 3, shuffle=False, drop_last=True) for r in range(3)]
    assert ours == partition_dataset(
        data, num_partitions=3, shuffle=False, drop_last=True, even_divisible=True
    )


def test_partition_seed_is_shared_and_matters():
    a = distributed.partition_indices(20, 0, 2, seed=1)
    assert a == distributed.partition_indices(20, 0, 2, seed=1)
    assert a != distributed.partition_indices(20, 0, 2, seed=2)


def test_partition_errors_name_the_rank():
    for rank in range(3):  # every rank raises, not only the one left empty: none waits at the barrier
        with pytest.raises(ValueError, match="1 of 3 ranks would get no items from 2"):
            distributed.partition_indices(2, rank, 3, even_divisible=False)
    for rank in range(4):  # was: 3 items padded to 4 ranks, rank 3 holding rank 0's item at position 0
        with pytest.raises(ValueError, match="1 of 4 ranks would get no items from 3 of their own"):
            distributed.partition_indices(3, rank, 4)
    with pytest.raises(ValueError, match="rank=2, world_size=2"):
        distributed.dist_info(2, 2)
    with pytest.raises(ValueError, match="world_size=2 without rank="):  # all would take rank 0's shard
        distributed.dist_info(None, 2)


def test_dist_info_defaults_and_explicit():
    assert distributed.dist_info() == (0, 1)
    assert distributed.dist_info(3, 4) == (3, 4)
    assert distributed.local_device() == (
        torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    )


def test_local_device_without_local_rank_is_the_chosen_device(monkeypatch):
    # mp.spawn sets no LOCAL_RANK: each rank calls torch.cuda.set_device(rank), and its collectives
    # must use that device, not cuda:0 (NCCL refuses two ranks on one GPU)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 3)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert distributed.local_device() == torch.device("cuda", 3)
    monkeypatch.setenv("LOCAL_RANK", "1")  # the launcher's word comes first
    assert distributed.local_device() == torch.device("cuda", 1)


def test_reshard_mixes_every_item_to_every_rank():
    data = list(range(12))
    seen = {r: set() for r in range(3)}
    for epoch in range(12):
        shards = [distributed.reshard(data, epoch, r, 3) for r in range(3)]
        assert sorted(i for s in shards for i in s) == data  # still a partition every epoch
        for r, s in enumerate(shards):
            seen[r] |= set(s)
    assert all(s == set(data) for s in seen.values())


def test_single_process_helpers_are_plain():
    assert distributed.equal_batches(7) == 7
    assert distributed.guarded_fill(lambda: 3) == 3
    distributed.fill_barrier(ValueError("x"))  # one process: nothing to tell


@pytest.mark.timeout(60)
def test_cache_dataset_explicit_rank_and_persisted_reshard(tmp_path):
    data = [{"id": i, "x": torch.full((256,), float(i))} for i in range(8)]
    chain = [lambda d: {**d, "y": d["x"] * 2}]
    full = CacheDataset(data, chain, progress=False, num_workers=1)
    shards = [CacheDataset(data, chain, progress=False, num_workers=1, rank=r, world_size=2) for r in (0, 1)]
    assert sorted(i for s in shards for i in s.shard["indices"]) == list(range(8))
    assert [s.stats()["nbytes"] for s in shards] == [full.stats()["nbytes"] // 2] * 2
    # re-deal through a shared persistent cache: epoch 1's shards load what epoch 0 computed
    kwargs = {"progress": False, "num_workers": 1, "persist_dir": tmp_path / "persist", "world_size": 1}
    epoch0 = [CacheDataset(distributed.reshard(data, 0, r, 2), chain, **kwargs) for r in (0, 1)]
    epoch1 = CacheDataset(distributed.reshard(data, 1, 0, 2), chain, **kwargs)
    assert sum(d.core.computed for d in epoch0) == 8
    assert epoch1.core.computed == 0 and epoch1.core.stats()["persist"]["loads"] == len(epoch1)
    loader = ThreadDataLoader(shards[0], batch_size=3)
    assert sum(1 for _ in loader) == len(loader) == 2  # one process: no all-reduce, own count


# ---------------------------------------------------------------- real processes (gloo, CPU)


def launch(scenarios: str, tmp: Path, world: int = 2, timeout_s: float = 100.0) -> list[tuple[int, dict]]:
    """Start ``world`` worker processes; ``(returncode, {scenario: result})`` per rank; kill any straggler."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1"}
    outs = [tmp / f"rank{r}.json" for r in range(world)]
    procs = [
        subprocess.Popen(
            [sys.executable, str(WORKER), scenarios, str(r), str(world), str(tmp / "pg.init"), str(outs[r])],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for r in range(world)
    ]
    deadline = time.monotonic() + timeout_s
    try:
        for p in procs:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        pytest.fail(f"{scenarios}: ranks still running after {timeout_s} s (a hang)")
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    logs = [p.stdout.read().decode(errors="replace")[-3000:] for p in procs]
    return [
        (p.returncode, json.loads(o.read_text()) if o.exists() else {"log": log})
        for p, o, log in zip(procs, outs, logs, strict=True)
    ]


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory) -> list[tuple[int, dict]]:
    """One launch of 2 gloo ranks running every scenario in turn (processes start once: torch imports are slow)."""
    return launch("train,fail,early,slow,lists,split,race,die", tmp_path_factory.mktemp("dist"))


@pytest.mark.timeout(120)
def test_two_ranks_shard_cache_and_train(two_ranks):
    r0, r1 = (res["train"] for _, res in two_ranks)
    assert r0["ok"] and r1["ok"], (r0, r1)
    # disjoint and complete (uneven: 9 items -> 5 + 4), and the padded variant too
    assert not set(r0["shard_ids"]) & set(r1["shard_ids"])
    assert sorted(r0["shard_ids"] + r1["shard_ids"]) == list(range(9))
    assert sorted(set(r0["even_ids"]) | set(r1["even_ids"])) == list(range(9))
    assert len(r0["even_ids"]) == len(r1["even_ids"]) == 5
    # cache bytes ~ 1/world_size of the data: each rank holds only its items
    item_bytes = 16 * 4 + 16 * 64 * 4  # x + img (float32)
    assert [r0["nbytes"], r1["nbytes"]] == [5 * item_bytes, 4 * item_bytes]
    # the loader gives every rank the same batch count although the local counts differ (3 vs 2)
    assert sorted([r0["local_batches"], r1["local_batches"]]) == [2, 3]
    assert r0["batches"] == r1["batches"] == [2, 2]
    # DDP ran: gradients were averaged, so both ranks end with the same weights
    assert r0["params"] == pytest.approx(r1["params"], abs=1e-6)
    # SmartCacheDataset rotates through its own rank's shard only
    for r in (r0, r1):
        assert r["smart_inputs"] == r["shard_ids"]
        assert set(r["smart_seen"]) <= set(r["shard_ids"]) and len(r["smart_seen"]) > 2


@pytest.mark.timeout(120)
def test_failure_in_one_rank_fill_stops_all_ranks(two_ranks):
    r0, r1 = (res["fail"] for _, res in two_ranks)
    assert r1["type"] == "CacheFillError" and "injected failure" in r1["message"]
    assert r0["type"] == "FillBarrierError"
    assert "rank 1 failed during its cache fill" in r0["message"] and "injected failure" in r0["message"]


@pytest.mark.timeout(120)
def test_a_failed_fill_stops_the_other_ranks_fills_early(two_ranks):
    # rank 1 failed on its first item but waited at the barrier until rank 0 had filled its whole shard
    r0, r1 = (res["early"] for _, res in two_ranks)
    assert r1["type"] == "CacheFillError" and "corrupt file" in r1["message"], r1
    assert r0["type"] == "FillBarrierError" and "rank 1 failed during its cache fill" in r0["message"], r0
    assert "corrupt file" in r0["message"]
    assert r0["seconds"] < 7.0 and r1["seconds"] < 7.0, (r0["seconds"], r1["seconds"])  # 10 s before


@pytest.mark.timeout(120)
def test_a_rank_arriving_after_another_gave_up_stops_too(two_ranks):
    r0, r1 = (res["slow"] for _, res in two_ranks)
    assert r0["type"] == "FillBarrierError" and "rank(s) [1] did not finish" in r0["message"]
    assert r1["type"] == "FillBarrierError" and "after another rank gave up waiting" in r1["message"]


@pytest.mark.timeout(120)
def test_ranks_given_different_lists_stop_before_filling(two_ranks):
    r0, r1 = (res["lists"] for _, res in two_ranks)
    for r in (r0, r1):
        assert r["type"] == "ValueError" and "different data lists" in r["message"], r
        assert "rank(s) [1]" in r["message"] and "same order" in r["message"]


@pytest.mark.timeout(120)
def test_a_list_split_per_rank_names_world_size_1(two_ranks):
    # MONAI's DDP tutorials split the list with partition_dataset before CacheDataset: the error must
    # say how to keep that split (it said only "sort a glob"), and world_size=1 must then cache each part
    r0, r1 = (res["split"] for _, res in two_ranks)
    for r in (r0, r1):
        assert r["ok"], r
        assert "different data lists" in r["message"] and "partition_dataset" in r["message"], r
        assert "world_size=1" in r["message"] and r["ids"] == r["part"]
    assert sorted(set(r0["ids"]) | set(r1["ids"])) == list(range(9))


@pytest.mark.timeout(120)
def test_a_rank_reporting_while_another_gives_up_gets_the_same_verdict(two_ranks):
    # rank 0 found rank 1 missing and was about to write that it gave up when rank 1 reported: rank 1
    # read no "gave up" and went on alone (to wait at its next collective) while rank 0 raised
    r0, r1 = (res["race"] for _, res in two_ranks)
    assert r0["ok"] == r1["ok"], (r0, r1)


def test_list_fingerprint_sees_order_and_content_not_mount_points():
    from fastpipe.runtime._rendezvous import list_fingerprint

    a = [{"image": f"/mnt/a/imagesTr/s{i}.nii.gz", "id": i, "x": torch.zeros(2, 3)} for i in range(4)]
    b = [{"id": d["id"], "x": torch.ones(2, 3), "image": d["image"].replace("/mnt/a", "/data")} for d in a]
    assert list_fingerprint(a) == list_fingerprint(b)  # another mount point, key order, same shapes
    assert list_fingerprint(a) != list_fingerprint(a[::-1])  # another order
    assert list_fingerprint(a) != list_fingerprint(a[:3])  # another length
    assert list_fingerprint(a).startswith("4:")


@pytest.mark.timeout(120)
def test_rank_that_dies_in_fill_is_named_within_timeout(two_ranks):
    (c0, res0), (c1, res1) = two_ranks
    assert c1 == 3 and "die" not in res1  # rank 1 died without a word
    r0 = res0["die"]
    assert c0 == 1 and r0["type"] == "FillBarrierError"
    assert "rank(s) [1] did not finish their cache fill within 4 s" in r0["message"]
    assert r0["seconds"] < 4.0 + 10.0


def test_a_shard_names_items_by_their_index_in_the_data_list():
    import fastpipe as fp
    from fastpipe.cache.errors import CacheFillError

    data = [{"x": i, "name": f"/data/img{i}.nii.gz"} for i in range(8)]

    def fails_on_5(d):
        if d["x"] == 5:
            raise ValueError("corrupt voxel data")
        return d

    shard = fp.distributed.partition_indices(8, 1, 2)
    assert 5 in shard and shard.index(5) != 5
    with pytest.raises(CacheFillError, match=r"item 5 \(/data/img5.nii.gz\)"):
        fp.CacheDataset(data, [fails_on_5], progress=False, num_workers=1, rank=1, world_size=2)
    ds = fp.CacheDataset(
        data, [fails_on_5], progress=False, num_workers=1, rank=1, world_size=2, on_error="skip"
    )
    assert [ds.data_index(i) for i in range(len(ds))] == [i for i in shard if i != 5]
    assert "item 5 " in next(iter(ds.fill_report.skipped.values()))


def test_local_device_with_one_visible_gpu_per_rank(monkeypatch):
    # SLURM --gpus-per-task / CUDA_VISIBLE_DEVICES per rank: each process sees its one GPU as cuda:0
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert distributed.local_device() == torch.device("cuda", 0)  # was cuda:3: invalid device ordinal
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(ValueError, match="LOCAL_RANK=3 but this process sees 2 CUDA devices"):
        distributed.local_device()
    for bad in ("", "x", "-1"):  # was "invalid literal for int()" or an invalid device, naming no variable
        monkeypatch.setenv("LOCAL_RANK", bad)
        with pytest.raises(ValueError, match="LOCAL_RANK must be this process's GPU index"):
            distributed.local_device()


def test_a_fill_timeout_of_infinity_waits_instead_of_overflowing():
    from fastpipe.runtime import _rendezvous

    class Store:  # the two calls _wait_reported makes on the rendezvous store
        def wait(self, keys, timeout):
            self.timeout = timeout

        def check(self, keys):
            return True

    store = Store()  # DEFAULT_FILL_TIMEOUT_S = float("inf") raised OverflowError from timedelta on every rank
    assert _rendezvous._wait_reported(store, "p/", 2, float("inf")) == [0, 1]
    assert store.timeout.days >= 365


def test_a_launcher_s_world_size_without_a_process_group_warns_once(monkeypatch):
    """Under torchrun, a dataset built before init_process_group took (rank 0, world 1) silently: every
    rank cached and read the whole data set."""
    import warnings

    from fastpipe.runtime import _env

    monkeypatch.setattr(_env, "_warned_uninitialised", [])
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.warns(RuntimeWarning, match="WORLD_SIZE=2 is set .* not initialised"):
        assert distributed.dist_info() == (0, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert distributed.dist_info() == (0, 1)  # once
        monkeypatch.setattr(_env, "_warned_uninitialised", [])
        monkeypatch.setenv("WORLD_SIZE", "1")
        assert distributed.dist_info() == (0, 1)
