"""The spleen benchmark under torch.distributed: per-rank cache bytes, fill and epoch time, gathered to rank 0.

``python -m benchmarks.spleen --nproc N`` (``make bench NPROC=N``) calls :func:`launch`, which generates the
look-alike data once and re-executes itself under ``python -m torch.distributed.run --standalone
--nproc_per_node=N -m benchmarks.spleen --distributed ...``. Inside ``torchrun`` (``RANK``/``WORLD_SIZE``
set) :func:`launch` runs :func:`run_rank`: each rank caches only its shard (``CacheDataset`` partitions
itself once the process group is up), iterates a ``ThreadDataLoader`` whose batch count is equal on
every rank, and stands in for the DDP step with one all-reduce per batch (plus ``--step-ms-per-volume``
of sleep). Rank 0 writes ``bench-out/<date>-<host>-ddp<N>.json`` (``benchmarks/results/`` with ``--save``).

Backend: NCCL when CUDA is present (each rank on ``cuda:$LOCAL_RANK``), gloo on CPU.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time
from datetime import date, timedelta
from typing import Any

import torch
import torch.distributed as dist

from benchmarks import workload
from benchmarks.common import machine_info, out_dir, spread, sync, write_result
from benchmarks.workload import dataset_root, load_data

PATCH_BY_PRESET = {"spleen-tiny": (64, 64, 64)}  # tiny volumes are smaller than 96^3 after the chain


def launch(args: argparse.Namespace) -> int:
    """Run as one rank when started by torchrun/srun (``RANK`` set), else start ``args.nproc`` ranks."""
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        return run_rank(args)
    root = dataset_root(args)  # generate the data once, before the ranks start
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={max(1, args.nproc)}",
    ]
    cmd += ["-m", "benchmarks.spleen", "--distributed", *_forward(args, root)]
    print("launching: " + " ".join(cmd), flush=True)
    return subprocess.run(cmd, check=False).returncode


def _forward(args: argparse.Namespace, root: Any) -> list[str]:
    """The options each rank needs, rebuilt from ``args`` (the data folder now fixed)."""
    out = ["--preset", args.preset, "--data", str(root), "--epochs", str(args.epochs)]
    out += ["--step-epochs", str(args.step_epochs), "--step-ms-per-volume", str(args.step_ms_per_volume)]
    out += ["--batch-size", str(args.batch_size), "--threads", str(args.threads)]
    for flag, value in (("--num-volumes", args.num_volumes), ("--device", args.device), ("--out", args.out)):
        if value is not None:
            out += [flag, str(value)]
    if getattr(args, "save", False):  # rank 0 writes under benchmarks/results/, as asked
        out.append("--save")
    return out


def _init() -> tuple[int, int, torch.device]:
    from fastpipe.distributed import local_device

    device = local_device()
    if device.type == "cuda":
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, timeout=timedelta(minutes=30))
    return dist.get_rank(), dist.get_world_size(), device


def _load(args: argparse.Namespace, rank: int) -> list[dict]:
    if args.data is None and int(os.environ.get("LOCAL_RANK", "0")) == 0:
        dataset_root(args)  # started by torchrun directly: one rank per node generates the data
    dist.barrier()
    return load_data(args)


def build(
    data: list[dict], args: argparse.Namespace, device: torch.device, threads: int
) -> tuple[Any, Any, float]:
    """This rank's ``CacheDataset`` (its shard only) and ``ThreadDataLoader``, and the fill seconds."""
    import fastpipe as fp
    from fastpipe import transforms as T

    on_gpu = device.type == "cuda" and (args.device or "cuda") != "cpu"
    chain = workload.fastpipe_chain(device=str(device) if on_gpu else None, crop=False)
    patch = PATCH_BY_PRESET.get(args.preset, workload.PATCH)
    crop = T.RandCropByPosNegLabeld(
        workload.KEYS,
        label_key="label",
        spatial_size=patch,
        pos=1,
        neg=1,
        num_samples=workload.NUM_SAMPLES,
        fg_indices_key=workload.FG_KEY,
        bg_indices_key=workload.BG_KEY,
    )
    t0 = time.perf_counter()
    ds = fp.CacheDataset(data, [*chain, crop], num_workers=threads, progress=False, seed=dist.get_rank())
    sync(device)  # a GPU cache's fill queues asynchronous copies: they are part of the fill
    fill_s = time.perf_counter() - t0
    loader = fp.ThreadDataLoader(ds, batch_size=args.batch_size, shuffle=True, seed=dist.get_rank())
    return ds, loader, fill_s


def epoch(loader: Any, device: torch.device, step_s: float) -> tuple[float, int, int]:
    """One epoch with a stand-in DDP step (one all-reduce per batch): (seconds, batches, crops)."""
    grad = torch.zeros(1024, device=device if dist.get_backend() == "nccl" else "cpu")
    batches = crops = 0
    t0 = time.perf_counter()
    for batch in loader:
        crops += int(batch["image"].shape[0])
        dist.all_reduce(grad)  # the gradient sync that hangs if ranks disagree on the batch count
        if step_s:
            time.sleep(step_s)
        batches += 1
    sync(device)
    return time.perf_counter() - t0, batches, crops


def run_rank(args: argparse.Namespace) -> int:
    """One rank: fill this rank's shard, time the epochs, gather every rank's figures to rank 0."""
    rank, world, device = _init()
    machine = (
        machine_info()
    )  # the commit the epochs run on: an edit or commit during the run must not relabel
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", world))
    threads = max(1, args.threads // local_world)
    torch.set_num_threads(threads)
    try:
        data = _load(args, rank)
        ds, loader, fill_s = build(data, args, device, threads)
        epoch(loader, device, 0.0)  # warm-up
        runs = [epoch(loader, device, 0.0) for _ in range(args.epochs)]
        step_s = args.step_ms_per_volume * args.batch_size / 1000.0
        steps = [epoch(loader, device, step_s)[0] for _ in range(args.step_epochs)]
        mine = _figures(rank, ds, loader, fill_s, runs, steps, threads, device)
        ds.close()
        gathered: list[Any] = [None] * world
        dist.all_gather_object(gathered, mine)
        if rank == 0:
            _report(args, gathered, len(data), world, local_world, machine)
    finally:
        dist.destroy_process_group()
    return 0


def _figures(rank, ds, loader, fill_s, runs, steps, threads, device) -> dict[str, Any]:
    stats = ds.stats()
    return {
        "rank": rank,
        "host": machine_info()["host"],
        "device": str(device),
        "threads": threads,
        "shard_items": len(ds),
        "cache_bytes": stats["nbytes"],
        "cache_bytes_by_tier": stats["bytes"],
        "fill_s": fill_s,
        "local_batches": len(loader),
        "batches_per_epoch": [b for _, b, _ in runs],
        "epoch_s": spread([s for s, _, _ in runs]),
        "crops_per_s": spread([c / s for s, _, c in runs]),
        "step_epoch_s": spread(steps),
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }


def _report(
    args: argparse.Namespace,
    ranks: list[dict],
    n_items: int,
    world: int,
    local_world: int,
    machine: dict[str, Any] | None = None,
) -> None:
    """Rank 0's JSON of every rank's figures; ``machine``: :func:`machine_info` as the run started
    (default ``None``: taken now)."""
    machine = machine or machine_info()
    total = sum(r["cache_bytes"] for r in ranks)
    payload = {
        "config": {k: str(v) for k, v in vars(args).items() if not k.startswith("worker")},
        "world_size": world,
        "local_world_size": local_world,
        "items": n_items,
        # not the matrix's fastpipe rows: those add the tutorial's flips, turns and shift to the crop
        "chain": "the spleen prefix cached, then RandCropByPosNegLabeld alone (no random suffix)",
        "cache_bytes_all_ranks": total,
        "epoch_s_max_over_ranks": max(r["epoch_s"]["median"] for r in ranks),
        "ranks": ranks,
    }
    out = (
        args.out
        or out_dir(getattr(args, "save", False))
        / f"{date.today().isoformat()}-{machine['host']}-ddp{world}.json"
    )
    path = write_result("spleen-distributed", payload, path=out, machine=machine)
    print(
        f"{'rank':>4} {'items':>5} {'cache MiB':>9} {'fill s':>7} {'epoch s':>8} {'batches':>8} {'crops/s':>8}"
    )
    for r in ranks:
        print(
            f"{r['rank']:>4} {r['shard_items']:>5} {r['cache_bytes'] / 2**20:>9.1f} {r['fill_s']:>7.2f} "
            f"{r['epoch_s']['median']:>8.2f} {str(r['batches_per_epoch']):>8} {r['crops_per_s']['median']:>8.1f}"
        )
    print(f"{n_items} items on {world} ranks; cache {total / 2**20:.1f} MiB over all ranks; results: {path}")
