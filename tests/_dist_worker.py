"""One rank of the multi-process tests in ``test_distributed.py`` (gloo on CPU, file:// rendezvous).

Run as ``python tests/_dist_worker.py SCENARIO[,SCENARIO...] RANK WORLD INIT_FILE OUT_JSON``: runs the
scenarios in order in one process group (so the processes start once) and writes ``{scenario: findings
or error}`` as JSON to ``OUT_JSON`` after each; exits 0 when all succeeded, else 1 (3: died on purpose).
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from datetime import timedelta

import torch
import torch.distributed as dist

from fastpipe import distributed
from fastpipe.cache.cache_dataset import CacheDataset
from fastpipe.cache.smart_cache import SmartCacheDataset
from fastpipe.loader.thread_loader import ThreadDataLoader
from fastpipe.runtime import _rendezvous

N_ITEMS = 9  # uneven on 2 ranks
FEATURES = 16
REPEAT = 64  # cached "img" is FEATURES * REPEAT float32 = 4 KiB per item


def make_data(n: int = N_ITEMS) -> list[dict]:
    """Tiny in-memory items: an id and a feature vector."""
    return [{"id": i, "x": torch.full((FEATURES,), float(i))} for i in range(n)]


class Expand:
    """A cheap deterministic prefix step; fails on ``fail_id`` or kills the process on ``die_id``."""

    def __init__(self, fail_id: int = -1, die_id: int = -1) -> None:
        self.fail_id, self.die_id = fail_id, die_id

    def __call__(self, d: dict) -> dict:
        if d["id"] == self.fail_id:
            raise ValueError(f"injected failure on item {d['id']}")
        if d["id"] == self.die_id:
            os._exit(3)  # a hard death: no exception, no report
        return {**d, "img": d["x"].repeat(REPEAT)}


def scenario_train(rank: int, world: int) -> dict:
    """Shards, cache bytes, equal batch counts and DDP steps over the ThreadDataLoader."""
    ds = CacheDataset(make_data(), [Expand()], progress=False, num_workers=1, even_divisible=False)
    even = CacheDataset(make_data(), [Expand()], progress=False, num_workers=1)
    torch.manual_seed(0)
    model = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(FEATURES, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    loader = ThreadDataLoader(ds, batch_size=2, shuffle=True)
    batches = []
    for _ in range(2):
        count = 0
        for batch in loader:
            opt.zero_grad()
            loss = model(batch["x"]).pow(2).mean()
            loss.backward()
            opt.step()
            count += 1
        batches.append(count)
    params = torch.cat([p.detach().flatten() for p in model.parameters()]).tolist()
    smart = SmartCacheDataset(
        make_data(), [Expand()], cache_num=2, replace_rate=0.5, progress=False, even_divisible=False
    )
    with smart:  # the initial window, then one rotation
        smart_seen = {int(smart[i]["id"]) for i in range(len(smart))}
        smart.update_cache()
        smart_seen |= {int(smart[i]["id"]) for i in range(len(smart))}
    return {
        "shard_ids": sorted(int(ds._inputs[i]["id"]) for i in range(len(ds))),
        "even_ids": [int(item["id"]) for item in even._inputs],
        "nbytes": ds.stats()["nbytes"],
        "local_batches": len(loader),
        "batches": batches,
        "params": params,
        "smart_inputs": sorted(int(item["id"]) for item in smart._inputs),
        "smart_seen": sorted(smart_seen),
    }


def scenario_fail(rank: int, world: int) -> dict:
    """Rank 1's fill raises on its first item."""
    distributed.DEFAULT_FILL_TIMEOUT_S = 20.0
    shard = distributed.partition(make_data(), rank, world)
    fail_id = shard[0]["id"] if rank == 1 else -1
    CacheDataset(make_data(), [Expand(fail_id=fail_id)], progress=False, num_workers=1)
    return {}


def scenario_early(rank: int, world: int) -> dict:
    """Rank 1's first item is corrupt; rank 0's five items take 2 s each: rank 0 must stop early, not
    fill its whole shard (10 s; 20 minutes on a real dataset) before either rank reports the error."""
    distributed.DEFAULT_FILL_TIMEOUT_S = 30.0

    def slow_or_bad(d: dict) -> dict:
        if rank == 1:
            raise ValueError(f"corrupt file of item {d['id']}")
        time.sleep(2.0)
        return d

    CacheDataset(make_data(), [slow_or_bad], progress=False, num_workers=1)
    return {}


def scenario_slow(rank: int, world: int) -> dict:
    """Rank 1's fill takes longer than the barrier timeout: rank 0 gives up, and rank 1, arriving
    late, must stop too rather than go on alone to its next collective."""
    distributed.DEFAULT_FILL_TIMEOUT_S = 2.0

    def slow(d: dict) -> dict:
        if rank == 1:
            time.sleep(0.8)
        return d

    CacheDataset(make_data(), [slow], progress=False, num_workers=1)
    return {}


def scenario_lists(rank: int, world: int) -> dict:
    """Rank 1 was given the same items in another order (a folder listed differently on its node);
    each would shard its own list, overlapping rank 0's shard and missing items: both must stop first."""
    distributed.DEFAULT_FILL_TIMEOUT_S = 20.0
    data = make_data()
    filled = []

    def count(d: dict) -> dict:
        filled.append(d["id"])
        return d

    CacheDataset(data if rank == 0 else data[::-1], [count], progress=False, num_workers=1)
    return {"filled": filled}


class SlowVerdict:
    """The rendezvous store as one rank sees it when it is preempted for ``delay`` s between finding a
    rank missing and writing that it gave up (any write but a status, a ``seen`` mark or ``ok``)."""

    def __init__(self, store: object, delay: float) -> None:
        self.store, self.delay = store, delay

    def __getattr__(self, name: str) -> object:
        return getattr(self.store, name)

    def _pause(self, key: str, value: object) -> None:
        if "/status/" not in key and "/seen/" not in key and value not in ("ok", b"ok"):
            time.sleep(self.delay)

    def set(self, key: str, value: object) -> None:
        self._pause(key, value)
        self.store.set(key, value)

    def compare_set(self, key: str, expected: object, desired: object) -> bytes:
        self._pause(key, desired)
        return self.store.compare_set(key, expected, desired)


def scenario_race(rank: int, world: int) -> dict:
    """Rank 1 reports 1.5 s after rank 0 stopped waiting, but before rank 0 could say so (preempted for
    4 s): both ranks must take the same decision, not rank 0 raise while rank 1 goes on alone."""
    distributed.DEFAULT_FILL_TIMEOUT_S = 2.0
    store_of = _rendezvous._store
    if rank == 0:
        store = store_of()
        _rendezvous._store = lambda: SlowVerdict(store, 4.0)

    def late(d: dict) -> dict:
        if rank == 1 and d["id"] == shard[0]["id"]:
            time.sleep(3.5)
        return d

    shard = distributed.partition(make_data(), rank, world)
    try:
        CacheDataset(make_data(), [late], progress=False, num_workers=1)
    finally:
        _rendezvous._store = store_of
    return {}


def scenario_split(rank: int, world: int) -> dict:
    """MONAI's DDP recipe: each rank splits the list itself (``partition_dataset``) then caches its part.
    Without ``world_size=1`` every rank must stop with an error that says so; with it, each caches its part."""
    from monai.data import partition_dataset

    distributed.DEFAULT_FILL_TIMEOUT_S = 20.0
    part = partition_dataset(make_data(), num_partitions=world, shuffle=True, even_divisible=True)[rank]
    try:
        CacheDataset(part, [Expand()], progress=False, num_workers=1)
        message = ""
    except ValueError as err:
        message = str(err)
    ds = CacheDataset(part, [Expand()], progress=False, num_workers=1, world_size=1)
    return {
        "message": message,
        "ids": [int(ds[i]["id"]) for i in range(len(ds))],
        "part": [d["id"] for d in part],
    }


def scenario_die(rank: int, world: int) -> dict:
    """Rank 1 dies during its fill without a word; rank 0 must give up after the barrier timeout."""
    distributed.DEFAULT_FILL_TIMEOUT_S = 4.0
    shard = distributed.partition(make_data(), rank, world)
    die_id = shard[0]["id"] if rank == 1 else -1
    CacheDataset(make_data(), [Expand(die_id=die_id)], progress=False, num_workers=1)
    return {}


def run_one(scenario: str, rank: int, world: int) -> dict:
    """Run one scenario; its findings, or the error it raised."""
    t0 = time.perf_counter()
    try:
        result = {"ok": True, **globals()[f"scenario_{scenario}"](rank, world)}
    except Exception as err:  # noqa: BLE001 - the test inspects every error
        result = {"ok": False, "type": type(err).__name__, "message": str(err), "tb": traceback.format_exc()}
    result["seconds"] = time.perf_counter() - t0
    return result


def main(scenarios: list[str], rank: int, world: int, init_file: str, out: str) -> int:
    """Run ``scenarios`` in order in one process group, rewriting ``out`` after each."""
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=world, timeout=timedelta(seconds=60)
    )
    results = {}
    for scenario in scenarios:
        results[scenario] = run_one(scenario, rank, world)
        with open(out, "w") as f:
            json.dump(results, f)
    ok = all(r["ok"] for r in results.values())
    if ok:
        dist.destroy_process_group()
    return 0 if ok else 1


if __name__ == "__main__":
    scenarios, rank, world, init_file, out = sys.argv[1:6]
    sys.exit(main(scenarios.split(","), int(rank), int(world), init_file, out))
