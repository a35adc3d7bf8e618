"""Profiling hooks: NVTX ranges, the NVML GPU sampler, the data-wait report and a GPU copy counter."""

from fastpipe.profiling.gpu_monitor import GpuMonitor
from fastpipe.profiling.nvtx_ranges import (
    ProfiledTransform,
    annotate,
    disable_nvtx,
    enable_nvtx,
    nvtx_enabled,
    profiled,
    unwrap,
    wrap_chain,
)
from fastpipe.profiling.report import format_table, summarize
from fastpipe.profiling.transfers import CopyCounter, transfers_in_trace

__all__ = [
    "CopyCounter",
    "GpuMonitor",
    "ProfiledTransform",
    "annotate",
    "disable_nvtx",
    "enable_nvtx",
    "format_table",
    "nvtx_enabled",
    "profiled",
    "summarize",
    "transfers_in_trace",
    "unwrap",
    "wrap_chain",
]
