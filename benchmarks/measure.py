"""Measure one row of the matrix: fill, steady-state epochs, data-wait under a stand-in step, memory."""

from __future__ import annotations

import os
import resource
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks import workload
from benchmarks.common import spread, sync, waited_batches
from benchmarks.row_types import Config
from benchmarks.rows import ROWS


def _check_batch(batch: dict[str, Any], cfg: Config) -> int:
    img, lab = batch["image"], batch["label"]
    if tuple(img.shape[1:]) != (1, *workload.PATCH) or img.shape[0] != lab.shape[0]:
        raise RuntimeError(
            f"row produced image {tuple(img.shape)} / label {tuple(lab.shape)}; "
            f"expected (N, 1, {workload.PATCH}) for both"
        )
    return int(img.shape[0])


def sync_batch(batch: Any) -> Any:
    """Wait for the queued work of the batch's own device (its image's), so a timer measures it."""
    device = getattr(batch.get("image"), "device", None) if isinstance(batch, dict) else None
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)
    return batch


def throughput_epoch(loader, cfg: Config, expected: int | None = None) -> tuple[float, int]:
    """One epoch as fast as the consumer can take it: (seconds, crops); a short epoch raises."""
    crops = 0
    t0 = time.perf_counter()
    for batch in loader:
        crops += _check_batch(batch, cfg)
        sync_batch(batch)
    check_epoch_crops(crops, expected)
    return time.perf_counter() - t0, crops


def step_epoch(loader, cfg: Config, step_s: float, expected: int | None = None) -> tuple[float, float]:
    """One epoch with a stand-in training step of ``step_s`` per batch: (seconds, data-wait fraction)."""
    waited, crops, end = 0.0, 0, []
    t0 = time.perf_counter()
    for batch, wait_s in waited_batches(loader, "cpu", prepare=sync_batch, on_end=end.append):
        waited += wait_s
        crops += _check_batch(batch, cfg)
        time.sleep(step_s)  # the stand-in training step: the GIL is free, as during a CUDA step
    wall = time.perf_counter() - t0
    waited += sum(end)  # the epoch's end: a SmartCache swap is waited for there
    check_epoch_crops(crops, expected)
    return wall, waited / wall if wall > 0 else 0.0


def check_epoch_crops(crops: int, expected: int | None) -> None:
    """Raise when an epoch yielded fewer (or more) crops than its items x ``NUM_SAMPLES``.

    MONAI's ``ThreadDataLoader`` swallows an error raised while making a batch and ends the epoch
    early; a partial epoch timed as a whole one would read as a fast one, so it is an error here.
    """
    if expected is not None and crops != expected:
        raise RuntimeError(
            f"epoch yielded {crops} crops, expected {expected} "
            f"(items x {workload.NUM_SAMPLES}): the loader ended the epoch early or an item failed"
        )


def peak_rss_bytes() -> int:
    """Peak resident memory of this process plus its worker processes.

    ``RUSAGE_CHILDREN`` knows only children already waited for, and only the largest of them; read
    while a loader's worker processes are still alive (before the loader closes), their own peaks
    (``VmHWM``) are summed instead when that is more.
    """
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    reaped = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    return int(own + max(reaped, live_children_peak_bytes()))


def _children_status() -> list[tuple[int, dict[str, str]]]:
    """``(pid, /proc/<pid>/status fields)`` of this process's live children (none without ``/proc``)."""
    me, out = str(os.getpid()), []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            lines = status.read_text().splitlines()
        except OSError:  # the process ended meanwhile
            continue
        fields = dict(line.split(":", 1) for line in lines if ":" in line)
        if fields.get("PPid", "").strip() == me:
            out.append((int(status.parent.name), fields))
    return out


def live_children() -> list[int]:
    """The pids of this process's live children, from ``/proc`` (none without it)."""
    return [pid for pid, _ in _children_status()]


def _proc_kb(path: Path, key: str) -> int | None:
    """The ``key:`` line of a ``/proc`` file, in bytes (its figure is in kB); ``None`` when unreadable."""
    try:
        for line in path.read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _running(pid: int) -> bool:
    """Whether ``pid`` still runs: not ended, not a zombie (which maps no memory; its ``smaps_rollup`` is empty)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status


def memory_now() -> dict[str, Any]:
    """Memory this process and its live children hold now, each shared page counted once.

    PSS (``/proc/<pid>/smaps_rollup``, Linux 4.14+) splits a page shared by n processes (a
    copy-on-write cache forked into workers, shared memory, libraries) into n parts; the RSS of
    each process counts it whole, so a sum over worker processes counts it n times. Where some
    process's PSS cannot be read, RSS (``VmRSS``) of all is summed instead, and ``memory_measure``
    says so: ``{"memory_bytes", "memory_measure": "pss" | "rss", "memory_processes"}``.
    """
    pids = [os.getpid(), *[pid for pid in live_children() if _running(pid)]]
    pss = [_proc_kb(Path(f"/proc/{pid}/smaps_rollup"), "Pss") for pid in pids]
    found = [v for v in pss if v is not None]
    if len(found) == len(pids):
        return {"memory_bytes": sum(found), "memory_measure": "pss", "memory_processes": len(pids)}
    rss = [_proc_kb(Path(f"/proc/{pid}/status"), "VmRSS") for pid in pids]
    rss_found = [v for v in rss if v is not None]
    if not rss_found:  # no /proc at all: this process's peak is all there is
        own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        return {"memory_bytes": own, "memory_measure": "peak rss (no /proc)", "memory_processes": 1}
    return {"memory_bytes": sum(rss_found), "memory_measure": "rss", "memory_processes": len(rss_found)}


def live_children_peak_bytes() -> int:
    """The sum of the peak RSS of this process's live children, from ``/proc`` (0 without it)."""
    return sum(int(f["VmHWM"].split()[0]) * 1024 for _, f in _children_status() if "VmHWM" in f)  # kB


def measure_row(
    name: str, data: list[dict], cfg: Config, epochs: int, step_epochs: int, step_s: float
) -> dict[str, Any]:
    """Build row ``name`` and measure it; the figures of one line of the results table."""
    torch.set_num_threads(cfg.threads)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    row = ROWS[name](data, cfg)
    sync(None)  # whatever device the row filled
    fill_s = time.perf_counter() - t0
    want = row.items_per_epoch * workload.NUM_SAMPLES
    try:
        throughput_epoch(row.loader, cfg, want)  # warm-up: workers start, allocators settle
        runs = [throughput_epoch(row.loader, cfg, want) for _ in range(epochs)]
        steps = [step_epoch(row.loader, cfg, step_s, want) for _ in range(step_epochs)]
        peak_rss = peak_rss_bytes()  # before close: live worker processes count, every one of them
        memory = memory_now()  # the same moment, each shared page once (PSS where readable)
    finally:
        row.close()
    epoch_s = [s for s, _ in runs]
    crops = runs[0][1]
    crops_per_s = [c / s for s, c in runs]
    return {
        "row": name,
        "items_per_epoch": row.items_per_epoch,
        "crops_per_epoch": crops,
        "fill_s": fill_s,
        "epoch_s": spread(epoch_s),
        "crops_per_s": spread(crops_per_s),
        "crops_per_s_samples": crops_per_s,  # every timed epoch: the ratio ranges come from these
        "full_epoch_s": spread([len(data) * workload.NUM_SAMPLES / c for c in crops_per_s]),
        "step_s": step_s,
        "step_epoch_s": spread([s for s, _ in steps]),
        "data_wait_fraction": spread([w for _, w in steps]),
        "peak_rss_bytes": peak_rss,  # peaks summed over processes: a page shared by workers counts in each
        **memory,
        "peak_gpu_bytes": torch.cuda.max_memory_allocated() if torch.cuda.is_available() else 0,
        "info": row.info,
    }
