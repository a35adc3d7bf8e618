"""What fastpipe's NVTX ranges cost: a cached epoch with ranges off vs on, and the cost per range.

A cached epoch = ``ThreadDataLoader`` over a filled ``CacheDataset`` whose random suffix is
``RandCropByPosNegLabeld`` (the spleen workload's per-epoch work). Runs alternate off/on so drift
hits both; the result is the median and spread over ``--repeats`` epochs each. The target is
under 2% (issue 6).

Ranges only cost something real while a tool listens: run it once plain (NVTX calls return at
once) and once under Nsight Systems to measure the traced cost::

    python -m benchmarks.nvtx_overhead --items 8 --repeats 7
    nsys profile -t nvtx -o /tmp/nvtx_overhead python -m benchmarks.nvtx_overhead
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
import timeit

import torch

from benchmarks.common import interleaved, machine_info
from fastpipe import CacheDataset, ThreadDataLoader
from fastpipe.profiling import annotate, enable_nvtx, nvtx_ranges, profiled, wrap_chain
from fastpipe.transforms import RandCropByPosNegLabeld


def make_items(n: int, shape: tuple[int, int, int], seed: int = 0) -> list[dict]:
    """Cached-looking items: a float image, a label with a blob of foreground."""
    g = torch.Generator().manual_seed(seed)
    items = []
    for _ in range(n):
        label = torch.zeros((1, *shape), dtype=torch.uint8)
        x, y, z = (s // 4 for s in shape)
        label[:, x : 3 * x, y : 3 * y, z : 3 * z] = 1
        items.append({"image": torch.rand((1, *shape), generator=g), "label": label})
    return items


def epoch_seconds(loader: ThreadDataLoader, device: torch.device) -> float:
    t0 = time.perf_counter()
    for _batch in loader:
        pass
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - t0


def cached_epochs(args: argparse.Namespace) -> tuple[dict[str, list[float]], int]:
    """Alternating epochs with ranges off and on: seconds per epoch for each, ranges per epoch."""
    device = torch.device(args.device)
    items = make_items(args.items, tuple(args.shape))
    loaders = {}
    for mode in ("off", "on"):
        enable_nvtx(mode == "on")
        crop = RandCropByPosNegLabeld(
            ["image", "label"], label_key="label", spatial_size=args.roi, num_samples=args.num_samples
        )
        chain = wrap_chain([lambda d: {k: v.to(device) for k, v in d.items()}, crop])
        ds = CacheDataset(items, chain, progress=False, num_workers=1)
        loaders[mode] = (ThreadDataLoader(ds, batch_size=args.batch_size, shuffle=True), mode == "on")

    def seconds(mode: str) -> float:
        loader, on = loaders[mode]
        enable_nvtx(on)
        return epoch_seconds(loader, device)

    times = interleaved(list(loaders), seconds, args.repeats, warmup=1)  # the first round is warm-up
    enable_nvtx(True)
    n_ranges = ranges_per_epoch(loaders["on"][0], device)
    enable_nvtx(False)
    return times, n_ranges


def ranges_per_epoch(loader: ThreadDataLoader, device: torch.device) -> int:
    """How many NVTX ranges one enabled epoch opens (counted at fastpipe's one range factory)."""
    count = 0
    real = nvtx_ranges._range

    def counting(name: str, kind: str):
        nonlocal count
        count += 1
        return real(name, kind)

    nvtx_ranges._range = counting
    try:
        epoch_seconds(loader, device)
    finally:
        nvtx_ranges._range = real
    return count


def per_range_ns(n: int = 200_000) -> dict[str, float]:
    """Nanoseconds per call: a bare transform, wrapped with ranges off, wrapped with ranges on, annotate()."""

    def bare(d):
        return d

    wrapped = profiled(bare)

    def ranged_block():
        with annotate("fetch", "loader"):
            pass

    out = {}
    for name, fn, on in [
        ("bare_call", bare, False),
        ("wrapped_off", wrapped, False),
        ("wrapped_on", wrapped, True),
    ]:
        enable_nvtx(on)
        out[name] = 1e9 * min(timeit.repeat(lambda f=fn: f(None), number=n, repeat=3)) / n
    for on in (False, True):
        enable_nvtx(on)
        out[f"annotate_{'on' if on else 'off'}"] = (
            1e9 * min(timeit.repeat(ranged_block, number=n, repeat=3)) / n
        )
    enable_nvtx(False)
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--items", type=int, default=8)
    p.add_argument("--shape", type=int, nargs=3, default=[128, 128, 96])
    p.add_argument("--roi", type=int, nargs=3, default=[96, 96, 64])
    p.add_argument("--num-samples", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--json", help="write the result here as JSON")
    return p.parse_args(argv)


def measure(args: argparse.Namespace) -> dict:
    """Epoch times off/on, the measured and the estimated overhead, per-call costs."""
    machine = machine_info()  # versions and the commit the run starts on, as every result carries them
    times, n_ranges = cached_epochs(args)
    med = {k: statistics.median(v) for k, v in times.items()}
    best = {k: min(v) for k, v in times.items()}
    per_call = per_range_ns()
    # one range = what entering/leaving it adds when on, plus the wrapper's call layer
    range_ns = max(0.0, per_call["annotate_on"] - per_call["annotate_off"]) + per_call["wrapped_off"]
    return {
        "benchmark": "nvtx_overhead",
        "args": vars(args),
        "machine": {**machine, "platform": platform.platform()},
        "torch": torch.__version__,
        "traced": bool(os.environ.get("NVTX_INJECTION64_PATH")),
        "epoch_s": times,
        "epoch_median_s": med,
        "epoch_best_s": best,
        "overhead_median_fraction": med["on"] / med["off"] - 1.0,
        "overhead_best_fraction": best["on"] / best["off"] - 1.0,
        "ranges_per_epoch": n_ranges,
        "range_ns": range_ns,
        "overhead_estimate_fraction": n_ranges * range_ns * 1e-9 / best["off"],
        "per_call_ns": per_call,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    res = measure(args)
    for mode in ("off", "on"):
        t = res["epoch_s"][mode]
        print(
            f"epoch, ranges {mode:>3}: median {1e3 * res['epoch_median_s'][mode]:8.2f} ms, "
            f"best {1e3 * min(t):8.2f} ms, spread {1e3 * (max(t) - min(t)):.2f} ms"
        )
    print(
        f"measured overhead on a cached epoch: median {100 * res['overhead_median_fraction']:+.2f}%, "
        f"best {100 * res['overhead_best_fraction']:+.2f}% (target < 2%)"
    )
    print(
        f"{res['ranges_per_epoch']} ranges per epoch x {res['range_ns']:.0f} ns = "
        f"{100 * res['overhead_estimate_fraction']:.4f}% of the best epoch (estimate)"
    )
    for name, ns in res["per_call_ns"].items():
        print(f"{name:<14}{ns:8.0f} ns per call")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(res, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
