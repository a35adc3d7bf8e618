"""SmartCache under a stand-in training step: fastpipe SmartCacheDataset vs full CacheDataset vs MONAI's.

Every peer reads the same look-alike spleen NIfTI files (``fastpipe.datasets.synthesize``) through
the spleen chain (benchmarks/workload.py): the deterministic prefix (load, orient, resample, scale,
crop foreground, fg/bg indices) is cached, 4 pos/neg 96^3 crops per volume are drawn per read,
batches hold 4 volumes (16 crops). Each batch is followed by a stand-in training step (``--step``
seconds of sleep, about an A100 UNet step in MONAI's tutorial), so replacement threads can work
while the "GPU" is busy, as in training. The SmartCache peers use ``cache_num = len(data) / 2`` and
``replace_rate = 0.25``, so one volume must be replaced per training step.

Peers, run one after the other, each in a spawned process of its own (a SmartCache prepares its next
round during the previous peer's epochs otherwise, and a shared heap slows whichever peer runs later): ``fastpipe_full`` (CacheDataset + ThreadDataLoader), ``fastpipe_smart``
(SmartCacheDataset + ThreadDataLoader, which calls ``update_cache()`` at each epoch end) and
``monai_smart`` (MONAI 1.6 SmartCacheDataset at best practice: ``copy_cache=False``,
metadata dropped after the prefix, monai.data.ThreadDataLoader, ``update_cache()`` after each epoch). The figure
is the steady-state wall time per batch (epoch time, ``update_cache`` included, over batches per
epoch), after ``--warmup`` epochs; median and spread of ``--epochs`` epochs.

Run: ``python -m benchmarks.smart_cache_bench [--volumes 16 --epochs 6 --step 0.2]``.
Writes ``benchmarks/results/smart-cache-cpu.json``.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import machine_info, spread, time_repeats, write_result
from benchmarks.measure import check_epoch_crops
from benchmarks.workload import NUM_SAMPLES, PATCH, fastpipe_chain, monai_chain, smart_cache_loader

BATCH = 4  # volumes per training step
CACHE_FRACTION = 0.5
REPLACE_RATE = 0.25
TARGETS = {"smart_vs_full_max": 1.10, "monai_smart_vs_smart_min": 1.0}


def _epoch_runner(loader: Any, step_s: float, after_epoch: Any = None) -> Any:
    """One epoch with the stand-in step after each batch; an epoch short of ``len(dataset) x NUM_SAMPLES``
    crops raises (MONAI's ``ThreadDataLoader`` ends an epoch early when an item fails, which would
    otherwise be timed as a fast epoch)."""

    def epoch() -> None:
        crops = 0
        for batch in loader:
            crops += int(batch["image"].shape[0])
            time.sleep(step_s)  # the stand-in training step: the CPU is free, as during a GPU step
        check_epoch_crops(crops, len(loader.dataset) * NUM_SAMPLES)
        if after_epoch is not None:
            after_epoch()

    return epoch


def _per_batch(samples: list[float], batches: int) -> dict[str, float]:
    return spread([s / batches for s in samples])


def run_fastpipe(data: list[dict], smart: bool, args: argparse.Namespace) -> dict[str, Any]:
    """fastpipe CacheDataset (all volumes) or SmartCacheDataset (half of them), one timed run."""
    import fastpipe as fp

    chain, workers = fastpipe_chain(), args.workers
    t0 = time.perf_counter()
    if smart:
        cache_num = int(len(data) * CACHE_FRACTION)
        ds, loader, close = smart_cache_loader(data, chain, cache_num, REPLACE_RATE, workers, BATCH, seed=0)
    else:
        ds = fp.CacheDataset(data, chain, num_workers=workers, progress=False)
        loader = fp.ThreadDataLoader(ds, batch_size=BATCH, shuffle=True, persistent_workers=True)

        def close() -> None:
            loader.close()
            ds.close()

    fill_s = time.perf_counter() - t0
    try:
        cpu0 = time.process_time()
        samples = time_repeats(_epoch_runner(loader, args.step), repeats=args.epochs, warmup=args.warmup)
        cpu_s = time.process_time() - cpu0
        stats = ds.stats()
    finally:
        close()
    row = {"fill_s": fill_s, "epoch_s": spread(samples), "per_batch_s": _per_batch(samples, len(loader))}
    row["cpu_s_per_batch"] = cpu_s / (len(loader) * (args.epochs + args.warmup))  # all threads, warm-up incl.
    row.update(batches_per_epoch=len(loader), cached_items=len(ds), cached_mib=stats["nbytes"] / 2**20)
    if smart:
        lags = stats["lag_s"][args.warmup :]
        row.update(replace_num=stats["replace_num"], replace_workers=stats["replace_workers"])
        row.update(lag_s=spread(lags), peak_cached_mib=stats["peak_nbytes"] / 2**20, rounds=stats["rounds"])
    return row


def run_monai(data: list[dict], args: argparse.Namespace) -> dict[str, Any]:
    """MONAI 1.6 SmartCacheDataset at best practice (chain ends in ``EnsureTyped(track_meta=False)``), same window, chain, crops, batches and step."""
    from monai.data import SmartCacheDataset, ThreadDataLoader

    t0 = time.perf_counter()
    ds = SmartCacheDataset(
        data,
        monai_chain(),
        replace_rate=REPLACE_RATE,
        cache_num=int(len(data) * CACHE_FRACTION),
        num_init_workers=args.workers,
        num_replace_workers=args.workers,
        progress=False,
        copy_cache=False,
    )
    ds.start()
    fill_s = time.perf_counter() - t0
    loader = ThreadDataLoader(ds, batch_size=BATCH, shuffle=True, num_workers=0)
    waits: list[float] = []

    def update() -> None:
        u0 = time.perf_counter()
        ds.update_cache()
        waits.append(time.perf_counter() - u0)

    try:
        cpu0 = time.process_time()
        samples = time_repeats(
            _epoch_runner(loader, args.step, update), repeats=args.epochs, warmup=args.warmup
        )
        cpu_s = time.process_time() - cpu0
    finally:
        ds.shutdown()
    row = {"fill_s": fill_s, "epoch_s": spread(samples), "per_batch_s": _per_batch(samples, len(loader))}
    row["cpu_s_per_batch"] = cpu_s / (len(loader) * (args.epochs + args.warmup))  # all threads, warm-up incl.
    row.update(batches_per_epoch=len(loader), cached_items=len(ds), replace_num=ds._replace_num)
    row["lag_s"] = spread(waits[args.warmup :])  # update_cache() wall time: its spin-wait for the round
    return row


def in_own_process(fn: Any, *args: Any) -> Any:
    """``fn(*args)`` in a new spawned process: no peer inherits another's heap, threads or caches."""
    with ProcessPoolExecutor(max_workers=1, mp_context=mp.get_context("spawn")) as pool:
        return pool.submit(fn, *args).result()


def compare(data: list[dict], args: argparse.Namespace) -> dict[str, Any]:
    """Run the three peers and derive the ratios of their steady-state seconds per batch."""
    peers = {
        "fastpipe_full": in_own_process(run_fastpipe, data, False, args),
        "fastpipe_smart": in_own_process(run_fastpipe, data, True, args),
        "monai_smart": in_own_process(run_monai, data, args),
    }
    med = {k: v["per_batch_s"]["median"] for k, v in peers.items()}
    ratios = {
        "smart_vs_full": med["fastpipe_smart"] / med["fastpipe_full"],
        "monai_smart_vs_smart": med["monai_smart"] / med["fastpipe_smart"],
    }
    passed = {
        "smart_vs_full": ratios["smart_vs_full"] <= TARGETS["smart_vs_full_max"],
        "monai_smart_vs_smart": ratios["monai_smart_vs_smart"] >= TARGETS["monai_smart_vs_smart_min"],
    }
    return {"peers": peers, "ratios": ratios, "targets": TARGETS, "passed": passed}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    machine = machine_info()  # the commit the run starts on (the result may be written minutes later)
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--volumes", type=int, default=16, help="look-alike spleen volumes (a multiple of 8)")
    p.add_argument("--preset", default="spleen-small", help="fastpipe.datasets.synthesize preset")
    p.add_argument("--data", default=None, help="an MSD Task09 folder to read instead of synthesizing")
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--step", type=float, default=0.2, help="stand-in training step per batch, seconds")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="fill and replacement threads")
    p.add_argument(
        "--out", default=None, help="result path (default benchmarks/results/smart-cache-cpu.json)"
    )
    args = p.parse_args(argv)
    from fastpipe.datasets import load_decathlon_datalist, synthesize

    with tempfile.TemporaryDirectory(prefix="fastpipe-smartbench-") as tmp:
        root = (
            Path(args.data)
            if args.data
            else synthesize(tmp, args.preset, progress=False, num_volumes=args.volumes)
        )
        data = load_decathlon_datalist(root)[: args.volumes]
        result = {"config": _config(args, len(data)), **compare(data, args)}
    path = write_result("smart-cache-cpu", result, args.out, machine=machine)
    _print(result, path)
    return result


def _config(args: argparse.Namespace, n: int) -> dict[str, Any]:
    cache_num = int(n * CACHE_FRACTION)
    return {
        "peer_processes": "each peer in a spawned process of its own, one after the other",
        "data": args.data or f"synthesize(preset={args.preset!r})",
        "volumes": n,
        "cache_num": cache_num,
        "replace_rate": REPLACE_RATE,
        "batch_volumes": BATCH,
        "num_samples": NUM_SAMPLES,
        "patch": list(PATCH),
        "step_s": args.step,
        "epochs": args.epochs,
        "warmup": args.warmup,
        "workers": args.workers,
        "torch_threads": torch.get_num_threads(),
        "loadavg_at_start": list(os.getloadavg()),
    }


def _print(result: dict[str, Any], path: Any) -> None:
    print(
        f"{'peer':<16}{'s/batch median':>15}{'IQR':>8}{'epoch s':>9}{'batches':>8}{'lag s':>8}{'fill s':>8}"
        f"{'CPU s/batch':>12}"
    )
    for name, row in result["peers"].items():
        b, lag = row["per_batch_s"], row.get("lag_s", {}).get("median", float("nan"))
        print(
            f"{name:<16}{b['median']:>15.3f}{b['iqr']:>8.3f}{row['epoch_s']['median']:>9.2f}"
            f"{row['batches_per_epoch']:>8}{lag:>8.3f}{row['fill_s']:>8.2f}{row['cpu_s_per_batch']:>12.3f}"
        )
    for k, v in result["ratios"].items():
        print(f"{k}: {v:.3f}x ({'pass' if result['passed'][k] else 'FAIL'})")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
