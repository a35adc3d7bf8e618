"""The GPU's state for the records of ``make gpu-check`` and ``make gpu-bench``, taken through NVML.

Both take it when they start (before any work, so a run killed at its time limit still names the
machine) and again when they end: clocks, temperature, power and the other processes on the GPU
change during a run, and a figure read after the fact would describe another machine state.
"""

from __future__ import annotations

import os
from datetime import datetime, timezone
from typing import Any


def _text(value: Any) -> Any:
    return value.decode() if isinstance(value, bytes) else value


def _query(fn: Any, *args: Any) -> Any:
    """``fn(*args)``, ``None`` when the driver does not support it (or the binding lacks it)."""
    try:
        return _text(fn(*args))
    except Exception:  # noqa: BLE001 - NVMLError_NotSupported and kin: the figure is just absent
        return None


def gpu_state(device: int = 0) -> dict[str, Any]:
    """Driver, clocks, temperature, power, memory and compute processes of CUDA device ``device`` now.

    Without NVML (no driver, no ``nvidia-ml-py``) it says so under ``nvml`` and holds nothing else.
    """
    taken = datetime.now(timezone.utc).isoformat(timespec="seconds")
    try:  # fastpipe imports its wheels (nibabel, isal): a check that lacks them still records the GPU
        from fastpipe.profiling import gpu_monitor
    except ImportError as err:
        return {"taken": taken, "nvml": f"not queried: fastpipe cannot be imported ({err})"}
    found = gpu_monitor._init_nvml(device)
    if found is None:
        return {"taken": taken, "nvml": "unavailable (no NVIDIA driver or no nvidia-ml-py)"}
    nvml, h, _ = found
    try:
        return {"taken": taken, **_static(nvml, h), **_changing(nvml, h)}
    finally:
        _query(nvml.nvmlShutdown)


def _static(nvml: Any, h: Any) -> dict[str, Any]:
    return {
        "name": _query(nvml.nvmlDeviceGetName, h),
        "driver": _query(nvml.nvmlSystemGetDriverVersion),
        "cuda_driver": _query(nvml.nvmlSystemGetCudaDriverVersion_v2),
        "max_sm_clock_mhz": _query(nvml.nvmlDeviceGetMaxClockInfo, h, nvml.NVML_CLOCK_SM),
        "max_mem_clock_mhz": _query(nvml.nvmlDeviceGetMaxClockInfo, h, nvml.NVML_CLOCK_MEM),
        "power_limit_w": _scaled(_query(nvml.nvmlDeviceGetPowerManagementLimit, h), 1e-3),
    }


def _changing(nvml: Any, h: Any) -> dict[str, Any]:
    mem = _query(nvml.nvmlDeviceGetMemoryInfo, h)
    reasons = getattr(nvml, "nvmlDeviceGetCurrentClocksEventReasons", None) or getattr(
        nvml, "nvmlDeviceGetCurrentClocksThrottleReasons", None
    )
    return {
        "sm_clock_mhz": _query(nvml.nvmlDeviceGetClockInfo, h, nvml.NVML_CLOCK_SM),
        "mem_clock_mhz": _query(nvml.nvmlDeviceGetClockInfo, h, nvml.NVML_CLOCK_MEM),
        "clock_event_reasons": None if reasons is None else _query(reasons, h),
        "pstate": _query(nvml.nvmlDeviceGetPerformanceState, h),
        "temperature_c": _query(nvml.nvmlDeviceGetTemperature, h, nvml.NVML_TEMPERATURE_GPU),
        "power_w": _scaled(_query(nvml.nvmlDeviceGetPowerUsage, h), 1e-3),
        "mem_used_mib": None if mem is None else round(mem.used / 2**20, 1),
        "compute_processes": _processes(nvml, h),
    }


def _scaled(value: Any, factor: float) -> float | None:
    return None if value is None else round(value * factor, 1)


def _processes(nvml: Any, h: Any) -> list[dict[str, Any]] | None:
    """The compute processes on the GPU, this one marked ``"self": True``; ``None`` when unsupported."""
    procs = _query(nvml.nvmlDeviceGetComputeRunningProcesses, h)
    if procs is None:
        return None
    me = os.getpid()
    return [
        {
            "pid": p.pid,
            "used_mib": None if not isinstance(p.usedGpuMemory, int) else round(p.usedGpuMemory / 2**20, 1),
            "self": p.pid == me,
        }
        for p in procs
    ]
