"""Timings of the GPU check: what the GPU alone takes (:func:`kernel_s`), or what the caller waits (:func:`wall_s`).

CUDA events around calls the GPU finishes faster than the host issues them time the host's launch
work, not the kernels: the GPU idles between launches inside the timed region. :func:`kernel_s` first
queues a spin kernel (``torch.cuda._sleep``) so that the start event, every call and the end event are
queued while the GPU is still busy; the region between the events then holds GPU work only.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch

from benchmarks.common import time_s

SLEEP_CYCLES = 1 << 21  # about 1 ms at 2 GHz: the first guess of how long the host takes to queue a sample
MAX_SLEEP_CYCLES = 1 << 26  # about 34 ms: a sample still not GPU-bound then is kept, and counted
SLEEP_METHOD = "sleep-then-events"


def new_info() -> dict[str, Any]:
    """The record :func:`kernel_s` adds to: method, samples, GPU-bound samples, sleep cycles."""
    return {"method": None, "samples": 0, "gpu_bound_samples": 0, "sleep_cycles": SLEEP_CYCLES}


def _sample(fn: Callable[[], Any], inner: int, cycles: int) -> tuple[float, bool]:
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    if cycles:
        torch.cuda._sleep(cycles)
    start.record()
    for _ in range(inner):
        fn()
    end.record()
    bound = not start.query()  # the GPU was still asleep when the last call was queued
    end.synchronize()
    return start.elapsed_time(end) / 1e3 / inner, bound


def kernel_s(
    fn: Callable[[], Any],
    device: torch.device,
    repeats: int,
    warmup: int = 2,
    inner: int = 1,
    info: dict[str, Any] | None = None,
) -> list[float]:
    """Seconds per call of ``fn`` on the GPU alone, ``repeats`` samples of ``inner`` calls each.

    A sample whose start event had completed before its last call was queued is taken again with
    twice the sleep, up to :data:`MAX_SLEEP_CYCLES`; one still not GPU-bound then is kept, and
    ``fn`` (which must wait for the GPU itself) is timed by plain events from there on. ``info``
    (from :func:`new_info`) gets the method, the samples and how many were GPU-bound, and the sleep
    reached. Off CUDA, or on a torch without ``torch.cuda._sleep``: :func:`benchmarks.common.time_s`,
    and ``info["method"]`` says which.
    """
    info = new_info() if info is None else info
    if device.type != "cuda" or not hasattr(torch.cuda, "_sleep"):
        info["method"] = "events" if device.type == "cuda" else "perf_counter"
        info["samples"] += repeats
        return time_s(fn, device, repeats, warmup, inner)
    info["method"] = SLEEP_METHOD
    for _ in range(warmup):
        fn()
    out, cycles = [], info["sleep_cycles"]
    # one sample untimed: the spin kernel's first launch, and pools (pinned blocks for the calls'
    # tables) grown to ``inner`` calls in flight, so no timed sample waits on a new allocation
    _sample(fn, inner, cycles)
    for _ in range(repeats):
        seconds, bound = _sample(fn, inner, cycles)
        while not bound and 0 < cycles < MAX_SLEEP_CYCLES:
            cycles *= 2
            seconds, bound = _sample(fn, inner, cycles)
        if bound:
            info["sleep_cycles"] = cycles
        else:  # fn waits for the GPU itself (a sync, a pageable copy): no sleep helps, plain events
            cycles = 0
        out.append(seconds)
        info["samples"] += 1
        info["gpu_bound_samples"] += bound
    return out


def wall_s(fn: Callable[[], Any], device: torch.device, repeats: int, warmup: int = 2) -> list[float]:
    """Seconds a caller waits for ``fn`` and the GPU work it queued: ``perf_counter`` between two
    synchronizations (host work after the last launch included, which events would leave out)."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        out.append(time.perf_counter() - t0)
    return out
