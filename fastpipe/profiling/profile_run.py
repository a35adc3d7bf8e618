"""``fastpipe profile``: where the time of the spleen pipeline goes, as a table, a PNG and a JSON.

Runs the spleen chain (DESIGN.md) over an MSD folder (``fastpipe synth`` output or a real
Task09_Spleen): times each transform of the deterministic prefix per call, fills a
``CacheDataset``, then runs a ``ThreadDataLoader`` for N iterations against a stand-in training
step (a sleep of ``--step-ms`` or a real small 3D conv net) and reports the data-wait fraction,
per-stage loader times and, when NVML has data, GPU utilisation.

Example:
    fastpipe profile --data data/spleen-small --iters 20 --step-ms 50 --out profiling/out
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch

from fastpipe.cache.errors import ItemError
from fastpipe.profiling._plots import plot_profile
from fastpipe.profiling._workload import build_chain, make_step, run_loop, time_prefix, transform_table
from fastpipe.profiling.gpu_monitor import GpuMonitor
from fastpipe.profiling.nvtx_ranges import enable_nvtx, wrap_chain
from fastpipe.profiling.report import format_table, summarize


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="fastpipe profile", description=__doc__.splitlines()[0])
    p.add_argument(
        "--data", required=True, help="MSD folder with dataset.json (fastpipe synth output or Task09)"
    )
    p.add_argument("--iters", type=int, default=20, help="loader iterations measured (default 20)")
    step = p.add_mutually_exclusive_group()
    step.add_argument("--step-ms", type=float, default=0.0, help="stand-in training step: sleep this long")
    step.add_argument(
        "--model", choices=["tiny-unet"], help="stand-in training step: a real small 3D conv net"
    )
    p.add_argument(
        "--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu"
    )
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--num-samples", type=int, default=4, help="crops per volume (default 4)")
    p.add_argument("--roi", type=int, nargs="+", default=[96], help="crop size: 1 or 3 ints (default 96)")
    p.add_argument("--limit", type=int, default=None, help="use only the first N volumes")
    p.add_argument(
        "--timing-items", type=int, default=2, help="volumes the per-transform timing runs on (0: none)"
    )
    p.add_argument(
        "--cache-workers", type=int, default=None, help="cache fill threads (default: one per core)"
    )
    p.add_argument("--loader-workers", type=int, default=0, help="ThreadDataLoader num_workers (default 0)")
    p.add_argument("--out", default="profiling/out", help="folder for profile.png / profile.json")
    p.add_argument("--nvtx", action="store_true", help="emit NVTX ranges (run under nsys to see them)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    _check_args(p, args)
    return args


def _check_args(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Exit through ``p.error`` (one line, status 2) on a value the run cannot use."""
    if len(args.roi) not in (1, 3):
        p.error(f"--roi takes 1 or 3 ints, got {args.roi}")
    at_least = {"--iters": 1, "--batch-size": 1, "--num-samples": 1, "--limit": 1, "--timing-items": 0,
                "--cache-workers": 1, "--loader-workers": 0, "--step-ms": 0}  # fmt: skip
    for flag, low in at_least.items():
        value = getattr(args, flag[2:].replace("-", "_"))
        if value is not None and value < low:
            p.error(f"{flag} must be >= {low}, got {value}")
    if not math.isfinite(args.step_ms):  # `value < low` lets nan through; time.sleep then raises
        p.error(f"--step-ms must be a finite number of milliseconds, got {args.step_ms}")
    if min(args.roi) < 1:
        p.error(f"--roi sizes must be >= 1, got {args.roi}")
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device on this machine")


def load_items(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The first ``--limit`` items of ``--data``'s training section.

    Raises FileNotFoundError (no dataset.json) or ValueError (unreadable json, empty section)
    naming the file."""
    from fastpipe.datasets import load_decathlon_datalist

    data = load_decathlon_datalist(args.data)[: args.limit]
    if not data:
        raise ValueError(f"{args.data}: the dataset.json's 'training' section lists no volumes")
    return data


def profile(
    args: argparse.Namespace, data: list[dict[str, Any]] | None = None
) -> tuple[dict[str, Any], GpuMonitor | None]:
    """Run the profile described by ``args``: the result dict and the GPU monitor (``None`` on CPU).

    ``data`` (default: :func:`load_items` of ``args``) is the list of items to profile."""
    from fastpipe import CacheDataset, ThreadDataLoader

    device = torch.device(args.device)
    data = load_items(args) if data is None else data
    if args.nvtx:
        enable_nvtx()
    roi = args.roi * 3 if len(args.roi) == 1 else args.roi
    chain = wrap_chain(build_chain(str(device), roi, args.num_samples))
    per_transform = time_prefix(chain[:-1], data[: args.timing_items], device)  # 0: no per-transform timing
    ds = CacheDataset(
        data, chain, cache_rate=1.0, num_workers=args.cache_workers, progress=False, seed=args.seed
    )
    loader = ThreadDataLoader(
        ds, batch_size=args.batch_size, shuffle=True, num_workers=args.loader_workers, seed=args.seed
    )
    step = make_step(args.step_ms, args.model, device)
    step(next(iter(loader)))  # warm-up: first batch, allocator, model build
    loader.timings.clear()
    monitor = GpuMonitor(interval_s=0.05, device=device.index or 0) if device.type == "cuda" else None
    with monitor or contextlib.nullcontext():  # NVML's start and stop are not the loop's time
        t0 = time.perf_counter()
        iterations = run_loop(loader, args.iters, step)
        wall = time.perf_counter() - t0
    loader.close()
    return {
        "args": vars(args),
        "device": str(device),
        "items": len(data),
        "cache": {"fill_s": ds.fill_report.seconds, "nbytes": ds.core.nbytes},
        "per_transform": per_transform,
        "loader": summarize(iterations, wall_s=wall),
        "gpu": monitor.summary() if monitor is not None and monitor.records else None,
        "iterations": iterations,
    }, monitor


def write_outputs(result: dict[str, Any], monitor: GpuMonitor | None, out: Path) -> list[Path]:
    """``profile.png`` (per-transform bars + per-iteration wait/step), ``profile.json``, GPU CSV/PNG."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "profile.json").write_text(json.dumps(result, indent=1, default=str))  # first: needs nothing more
    paths = [out / "profile.json"]
    if monitor is not None and monitor.records:
        paths.append(monitor.to_csv(out / "gpu.csv"))
    try:
        import matplotlib  # noqa: F401  (the plots only: the `bench` or `dev` extra)
    except ImportError:
        print(
            "fastpipe profile: matplotlib is not installed, so no PNGs (pip install matplotlib)",
            file=sys.stderr,
        )
        return paths
    paths.insert(0, plot_profile(result["per_transform"], result["iterations"], out / "profile.png"))
    if monitor is not None and monitor.records:
        paths.append(monitor.plot(out / "gpu.png"))
    return paths


def _fail(err: Exception, data: str, hint: bool) -> int:
    """Print a data error and return exit status 2; ``hint``: no dataset.json at all, so say how to make one.

    Never for a volume the dataset.json lists: ``fastpipe synth --out`` there would replace that folder's
    dataset.json and overwrite its ``imagesTr``/``labelsTr`` volumes of the same names."""
    more = f"\n(make data with `fastpipe synth --out {data} --preset spleen-small`)" if hint else ""
    print(f"fastpipe profile: {err}{more}", file=sys.stderr)
    return 2


def _gpu_line(gpu: dict[str, Any] | None) -> str:
    """The GPU utilisation line; n/a without NVML samples or where the device does not report it (MIG)."""
    if gpu is None:
        return "GPU utilisation: n/a (no NVML samples)"
    if gpu["gpu_util_mean_pct"] is None:
        return "GPU utilisation: n/a (this device does not report it through NVML, e.g. a MIG instance)"
    return f"GPU utilisation: mean {gpu['gpu_util_mean_pct']:.1f}%, max {gpu['gpu_util_max_pct']:.1f}%"


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``fastpipe profile``; returns the exit status."""
    args = parse_args(argv)
    try:
        data = load_items(args)
    except (FileNotFoundError, ValueError) as err:  # no dataset.json, one that does not parse, an empty one
        return _fail(err, args.data, hint=isinstance(err, FileNotFoundError))
    try:
        Path(args.out).mkdir(parents=True, exist_ok=True)  # found before the run, not once it is over
    except OSError as err:
        print(f"fastpipe profile: cannot write --out {args.out}: {err}", file=sys.stderr)
        return 2
    try:
        result, monitor = profile(args, data)
    except FileNotFoundError as err:  # a volume the dataset.json lists (a real data folder, part missing)
        return _fail(err, args.data, hint=False)
    except ItemError as err:  # the chain failed on a volume (its message names it): e.g. --roi too large
        print(f"fastpipe profile: {err}", file=sys.stderr)
        return 1
    print(transform_table(result["per_transform"]))
    print()
    print(format_table(result["loader"], title=f"loader, {args.iters} iterations on {result['device']}"))
    print(_gpu_line(result["gpu"]))
    for path in write_outputs(result, monitor, Path(args.out)):
        print(f"wrote {path}")
    return 0
