"""Profiling hooks: NVTX ranges, the NVML GPU sampler and the data-wait report."""

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

__all__ = [
    "GpuMonitor",
    "ProfiledTransform",
    "annotate",
    "disable_nvtx",
    "enable_nvtx",
    "format_table",
    "nvtx_enabled",
    "profiled",
    "summarize",
    "unwrap",
    "wrap_chain",
]
