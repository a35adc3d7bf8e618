"""Profiling hooks: NVTX ranges, the NVML GPU sampler and the data-wait report."""

from fastpipe.profiling.nvtx_ranges import annotate, disable_nvtx, enable_nvtx, nvtx_enabled

__all__ = ["annotate", "disable_nvtx", "enable_nvtx", "nvtx_enabled"]
