"""What every fastpipe benchmark shares: run metadata, robust timing, the JSON it writes.

The method (DESIGN.md): warm up first; report the median and the spread of several repeats;
synchronise the device inside the timed region; every result carries machine, versions and commit.
"""

from __future__ import annotations

import json
import os
import platform
import socket
import statistics
import subprocess
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

RESULTS_DIR = Path(__file__).resolve().parent / "results"
#: Where a user's `make bench` run writes, outside the tracked results (``--save`` writes to RESULTS_DIR).
BENCH_OUT = Path(__file__).resolve().parent.parent / "bench-out"


def out_dir(save: bool) -> Path:
    """``RESULTS_DIR`` when the run is to be kept with the repository (``--save``), else ``BENCH_OUT``."""
    return RESULTS_DIR if save else BENCH_OUT


def _version(module: str) -> str | None:
    try:
        mod = __import__(module)
    except Exception:  # noqa: BLE001 - any import failure means "not available"
        return None
    return getattr(mod, "__version__", "unknown")


#: the commit of a copy of the repository without ``.git`` (a working tree sent to a GPU machine)
COMMIT_ENV = "FASTPIPE_COMMIT"


def git_commit() -> str:
    """``$FASTPIPE_COMMIT`` when set (a copy of the tree run elsewhere, maybe over another checkout's
    ``.git``, names the commit it was made from); else the current commit (with ``-dirty`` when the
    tree has changes); else (no ``.git`` or no git) ``unknown``."""
    if os.environ.get(COMMIT_ENV):
        return os.environ[COMMIT_ENV]
    root = Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            [
                "git",
                "status",
                "--porcelain",
                "--untracked-files=no",
                "--",
                ".",
                ":!benchmarks/results",
                ":!*.md",
            ],
            cwd=root,
            capture_output=True,
            text=True,
        ).stdout.strip()  # result files of an earlier benchmark and prose do not make the code dirty
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{sha}-dirty" if dirty else sha


def cpu_name() -> str:
    """The processor's model name from /proc/cpuinfo, else platform's guess."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict[str, Any]:
    """Machine, device and library versions for a result file."""
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "host": socket.gethostname(),
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "gpu": gpu,
        "python": platform.python_version(),
        "versions": {
            name: _version(name) for name in ("fastpipe", "torch", "numpy", "monai", "nibabel", "cupy")
        }
        | {"dali": _dali_version()},
        "commit": git_commit(),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def _dali_version() -> str | None:
    try:
        from nvidia import dali
    except Exception:  # noqa: BLE001
        return None
    return dali.__version__


def sync(device: torch.device | str | None = None) -> None:
    """Wait for queued GPU work so that a timer measures it."""
    if torch.cuda.is_available() and (device is None or torch.device(device).type == "cuda"):
        torch.cuda.synchronize()


def waited_batches(
    loader: Any,
    device=None,
    prepare: Callable[[Any], Any] | None = None,
    on_end: Callable[[float], Any] | None = None,
):
    """Iterate ``loader`` from the consumer's side: yield ``(batch, wait_s)``, where ``wait_s`` is how
    long the consumer waited for the batch (``prepare`` applied and the device synchronised inside).

    The first batch's wait includes ``iter(loader)`` (a loader may prepare its epoch there, as MONAI's
    SmartCache swap in ``benchmarks.rows``); ``on_end`` (default ``None``) gets the seconds of the
    request that found the epoch over (a fastpipe SmartCache waits there for its next window).
    """
    t0 = time.perf_counter()
    it = iter(loader)
    while True:
        try:
            batch = next(it)
        except StopIteration:
            if on_end is not None:
                on_end(time.perf_counter() - t0)
            return
        if prepare is not None:
            batch = prepare(batch)
        sync(device)
        yield batch, time.perf_counter() - t0
        t0 = time.perf_counter()


def spread(samples: list[float]) -> dict[str, float]:
    """Median, min, max, interquartile range and count of timing samples (seconds).

    The quartiles interpolate between samples (``method="inclusive"``, numpy's default): the
    ``"exclusive"`` default of :func:`statistics.quantiles` extrapolates beyond the samples when there
    are fewer than four, e.g. an IQR of 1.5 for ``[1, 2]``, wider than their range.
    """
    if not samples:
        return {"median": float("nan"), "min": float("nan"), "max": float("nan"), "iqr": float("nan"), "n": 0}
    qs = statistics.quantiles(samples, n=4, method="inclusive") if len(samples) > 1 else [samples[0]] * 3
    return {
        "median": statistics.median(samples),
        "min": min(samples),
        "max": max(samples),
        "iqr": qs[2] - qs[0],
        "n": len(samples),
    }


def time_repeats(fn: Callable[[], Any], repeats: int = 5, warmup: int = 1, device=None) -> list[float]:
    """Call ``fn`` ``warmup`` times untimed, then ``repeats`` times timed (device-synchronised)."""
    for _ in range(warmup):
        fn()
        sync(device)
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync(device)
        out.append(time.perf_counter() - t0)
    return out


def time_s(
    fn: Callable[[], Any], device: torch.device, repeats: int, warmup: int = 2, inner: int = 1
) -> list[float]:
    """Seconds per call of ``fn``: CUDA events around ``inner`` back-to-back calls on a GPU (so the
    host's launch work overlaps the device's), ``perf_counter`` on the CPU; ``repeats`` samples."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(inner):
                fn()
            end.record()
            end.synchronize()
            out.append(start.elapsed_time(end) / 1e3 / inner)
        else:
            t0 = time.perf_counter()
            for _ in range(inner):
                fn()
            out.append((time.perf_counter() - t0) / inner)
    return out


def write_result(
    name: str, payload: dict[str, Any], path: str | Path | None = None, machine: dict[str, Any] | None = None
) -> Path:
    """Write ``payload`` plus machine metadata as JSON under ``benchmarks/results/``.

    ``machine``: :func:`machine_info` as taken when the run started (default ``None``: taken now). A
    run of minutes or hours must name the commit its figures were measured on, not one made (or an
    edit) while it ran; when the commit differs at writing time, ``commit_at_end`` says so. A run
    may call it again as it goes (the file is replaced whole, never left half written).
    """
    path = Path(path) if path else RESULTS_DIR / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"benchmark": name, "machine": machine or machine_info(), **payload}
    if machine is not None and git_commit() != machine["commit"]:
        doc["commit_at_end"] = git_commit()
    # written beside and renamed over: a run killed mid-write (at its time limit) keeps the last whole file
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    os.replace(tmp, path)
    return path


def round_orders(names: list[Any], rounds: int, order: str = "fixed", seed: int = 0) -> list[list[Any]]:
    """The order of ``names`` in each of ``rounds`` rounds.

    ``order``: ``"fixed"`` (the same every round), ``"alternate"`` (forward, then reversed, ...) or
    ``"shuffle"`` (a seeded random permutation per round; not a rotation, which would put the same
    peer after a given one in nearly every round).
    """
    if order == "shuffle":
        g = torch.Generator().manual_seed(seed)
        return [[names[i] for i in torch.randperm(len(names), generator=g).tolist()] for _ in range(rounds)]
    if order == "alternate":
        return [list(names) if r % 2 == 0 else list(names)[::-1] for r in range(rounds)]
    if order == "fixed":
        return [list(names) for _ in range(rounds)]
    raise ValueError(f"order must be 'fixed', 'alternate' or 'shuffle', got {order!r}")


def interleaved(
    names: list[Any],
    measure: Callable[[Any], Any],
    rounds: int,
    warmup: int = 0,
    order: str = "fixed",
    seed: int = 0,
) -> dict[Any, list[Any]]:
    """``measure(name)`` for every name, round by round, so drift (other load, turbo) hits all alike.

    The first ``warmup`` rounds are run and dropped; returns ``{name: [one result per kept round]}``.

    Example:
        >>> interleaved(["a", "b"], lambda n: n * 2, rounds=2, warmup=1)
        {'a': ['aa', 'aa'], 'b': ['bb', 'bb']}
    """
    samples: dict[Any, list[Any]] = {n: [] for n in names}
    for r, names_r in enumerate(round_orders(names, warmup + rounds, order, seed)):
        for name in names_r:
            out = measure(name)
            if r >= warmup:
                samples[name].append(out)
    return samples


def save_figure(fig: Any, path: str | Path) -> Path:
    """Save a matplotlib figure as PNG (110 dpi, parent folders made), close it, return the path."""
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_cli(
    description: str, what: str, draw: Callable[[dict, Path], Path], argv: list[str] | None = None
) -> Path:
    """The command line of a plot script: ``RESULT [--out PNG]``; ``draw(result, png)`` makes the figure."""
    import argparse

    p = argparse.ArgumentParser(description=description)
    p.add_argument("result", help=f"a {what} JSON")
    p.add_argument("--out", default=None, help="PNG path (default: the JSON's path with .png)")
    args = p.parse_args(argv)
    src = Path(args.result)
    out = draw(json.loads(src.read_text()), Path(args.out) if args.out else src.with_suffix(".png"))
    print(f"wrote {out}")
    return out
