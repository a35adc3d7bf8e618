"""GpuMonitor: a background NVML sampler of GPU utilisation, memory, power and PCIe throughput.

Without an NVIDIA driver (or without ``pynvml``) the monitor says so once, records nothing and
never raises: a profiling aid must not crash the job it watches.
"""

from __future__ import annotations

import csv
import json
import logging
import threading
import time
import warnings
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

#: Columns of every record, in CSV order. Values a device does not support are ``None``.
FIELDS = (
    "t_s",
    "timestamp",
    "gpu_util_pct",
    "mem_util_pct",
    "mem_used_mib",
    "mem_total_mib",
    "power_w",
    "pcie_tx_mbps",
    "pcie_rx_mbps",
)
_warned = False
#: the sampler's clock (seconds, monotonic); tests swap it for a controllable one
_clock = time.perf_counter


def _import_pynvml() -> Any:
    """Import ``pynvml`` (the nvidia-ml-py package); the one place tests may swap NVML out."""
    import pynvml

    return pynvml


def _warn_once(message: str) -> None:
    global _warned
    if _warned:
        return
    _warned = True
    logger.warning(message)
    warnings.warn(message, RuntimeWarning, stacklevel=4)


def _cuda_uuid(device: int) -> str | None:
    """torch's UUID of CUDA device ``device`` (``8-4-4-4-12`` hex, no ``GPU-`` prefix), or ``None``."""
    try:
        import torch

        if not torch.cuda.is_available() or device >= torch.cuda.device_count():
            return None
        return str(torch.cuda.get_device_properties(device).uuid)
    except Exception:  # a CPU build, a torch without ``uuid``: the index is all there is
        return None


def _nvml_handle(nvml: Any, device: int) -> tuple[Any, str]:
    """NVML handle of CUDA device ``device`` and how it was found: ``"uuid"``, else ``"index"``.

    NVML numbers every GPU of the machine in PCI order; CUDA numbers the visible ones
    (``CUDA_VISIBLE_DEVICES=3`` makes NVML device 3 ``cuda:0``), fastest first by default.
    """
    uuid = _cuda_uuid(device)
    if uuid is not None:
        names = [uuid] if uuid.startswith(("GPU-", "MIG-")) else ["GPU-" + uuid, "MIG-" + uuid]
        for name in names:
            try:
                return nvml.nvmlDeviceGetHandleByUUID(name), "uuid"
            except Exception:
                continue
        logger.debug(
            "GpuMonitor: NVML knows no UUID %s of cuda:%d; using NVML index %d", uuid, device, device
        )
    return nvml.nvmlDeviceGetHandleByIndex(device), "index"


def _init_nvml(device: int) -> tuple[Any, Any, str] | None:
    """``(pynvml, handle, match)`` for CUDA device ``device``, or ``None`` (warned once) without NVML."""
    try:
        nvml = _import_pynvml()
    except ImportError as err:
        _warn_once(f"GpuMonitor: nvidia-ml-py (pynvml) is not installed ({err}); recording nothing")
        return None
    try:
        nvml.nvmlInit()
    except Exception as err:  # NVMLError_LibraryNotFound, DriverNotLoaded, ...
        _warn_once(f"GpuMonitor: NVML is unavailable ({err}); no NVIDIA driver? recording nothing")
        return None
    try:
        return (nvml, *_nvml_handle(nvml, device))
    except Exception as err:
        count = _safe(lambda: nvml.nvmlDeviceGetCount())
        _warn_once(f"GpuMonitor: no GPU {device} ({err}); NVML sees {count} device(s); recording nothing")
        _safe(nvml.nvmlShutdown)
        return None


def _safe(fn: Any) -> Any:
    """``fn()``, or ``None`` when NVML does not support the query on this device."""
    try:
        return fn()
    except Exception:
        return None


def sample(nvml: Any, handle: Any) -> dict[str, Any]:
    """One record of the device behind ``handle`` (without the ``t_s`` column)."""
    util = _safe(lambda: nvml.nvmlDeviceGetUtilizationRates(handle))
    mem = _safe(lambda: nvml.nvmlDeviceGetMemoryInfo(handle))
    power_mw = _safe(lambda: nvml.nvmlDeviceGetPowerUsage(handle))
    # PCIe counters come in KB/s, sampled by the driver over a 20 ms window
    tx = _safe(lambda: nvml.nvmlDeviceGetPcieThroughput(handle, nvml.NVML_PCIE_UTIL_TX_BYTES))
    rx = _safe(lambda: nvml.nvmlDeviceGetPcieThroughput(handle, nvml.NVML_PCIE_UTIL_RX_BYTES))
    return {
        "timestamp": time.time(),
        "gpu_util_pct": None if util is None else float(util.gpu),
        "mem_util_pct": None if util is None else float(util.memory),
        "mem_used_mib": None if mem is None else mem.used / 2**20,
        "mem_total_mib": None if mem is None else mem.total / 2**20,
        "power_w": None if power_mw is None else power_mw / 1000.0,
        "pcie_tx_mbps": None if tx is None else tx / 1000.0,
        "pcie_rx_mbps": None if rx is None else rx / 1000.0,
    }


class GpuMonitor:
    """Samples one GPU through NVML on a background thread, as a context manager or start/stop.

    Args:
        interval_s: seconds between scheduled samples (default 0.05), kept on a fixed schedule
            that does not drift. A sample itself takes about 20 ms (the driver's PCIe counter
            window), so intervals below that sample back to back, and the ticks they skip are
            counted in ``missed_ticks`` (also in :meth:`summary`).
        device: CUDA device index as torch numbers it (default 0). Its NVML device is found by
            UUID (so ``CUDA_VISIBLE_DEVICES`` is honoured; this asks torch for the device's
            properties, initialising CUDA), by the same NVML index where torch has no CUDA.

    Records are dicts with :data:`FIELDS`: ``t_s`` (seconds since the first :meth:`start`: a monitor
    started again after :meth:`stop` appends to the same timeline), ``timestamp`` (Unix),
    utilisation in %, memory in MiB, power in W, PCIe tx/rx in MB/s.

    Threading contract: one daemon sampler thread; :meth:`stop` sets a stop event, joins with a
    timeout and is idempotent; an error inside the sampler is logged and ends sampling, it never
    propagates. ``records`` may be read while running (a list only appended to).

    Example:
        >>> with GpuMonitor(interval_s=0.1) as mon:
        ...     train_one_epoch()
        >>> mon.summary()["gpu_util_mean_pct"]
    """

    def __init__(self, interval_s: float = 0.05, device: int = 0) -> None:
        if interval_s <= 0:
            raise ValueError(f"GpuMonitor interval_s must be > 0, got {interval_s}")
        self.interval_s = float(interval_s)
        self.device = int(device)
        self.records: list[dict[str, Any]] = []
        self.available = False
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._t0: float | None = None  # the first start: ``t_s`` of every session counts from it
        self._nvml: Any = None
        self.nvml_match: str | None = None  # "uuid" or "index": how the NVML device was found
        self.missed_ticks = 0  # scheduled samples skipped because the sampler was still busy

    def start(self) -> GpuMonitor:
        """Start sampling (a no-op when already started or NVML is unavailable)."""
        if self._thread is not None:
            return self
        found = _init_nvml(self.device)
        self.available = found is not None
        if found is None:
            return self
        self._nvml, handle, self.nvml_match = found
        if self._t0 is None:
            self._t0 = _clock()
        # a new event per session: a sampler an earlier stop() could not join keeps its own, set one
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run,
            args=(self._nvml, handle, self._stop, self._t0),
            name="fastpipe-gpu-monitor",
            daemon=True,
        )
        self._thread.start()
        return self

    def _run(self, nvml: Any, handle: Any, stop: threading.Event, t0: float) -> None:
        """Sample on a fixed schedule of ticks ``interval_s`` apart from the session's first sample.

        A wait that wakes late, or a slow sample, does not push later ticks back (sleeping a fixed
        interval after each sample drifts: 197 samples in 2 s at 10 ms). A tick already wholly past
        when the sampler is free again is skipped and counted in :attr:`missed_ticks`; a tick whose
        slot is still open is sampled at once, late. ``t_s`` is when the sample was really taken.
        """
        try:
            start, tick = _clock(), 0  # tick k is due at start + k * interval_s (no summed error)
            while not stop.is_set():
                now = _clock()
                rec = sample(nvml, handle)
                self.records.append({"t_s": now - t0, **rec})
                now = _clock()
                open_tick = int((now - start) / self.interval_s)  # the latest tick already due
                missed = max(0, open_tick - tick - 1)
                self.missed_ticks += missed
                tick += 1 + missed
                stop.wait(max(0.0, start + tick * self.interval_s - now))
        except Exception as err:  # never let the sampler take the job down
            self.error = err
            logger.warning("GpuMonitor: sampling stopped after %d records: %r", len(self.records), err)

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop sampling and release NVML; safe to call any number of times."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout_s)
            if thread.is_alive():
                logger.warning("GpuMonitor: sampler thread did not stop within %.1f s", timeout_s)
        if self._nvml is not None:
            _safe(self._nvml.nvmlShutdown)
            self._nvml = None

    def __enter__(self) -> GpuMonitor:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def summary(self) -> dict[str, Any]:
        """Sample count, duration and mean/max of each column (``None`` where never measured)."""
        out: dict[str, Any] = {
            "available": self.available,
            "samples": len(self.records),
            "device": self.device,
            "nvml_match": self.nvml_match,
            "interval_s": self.interval_s,
            "missed_ticks": self.missed_ticks,
        }
        out["duration_s"] = self.records[-1]["t_s"] if self.records else 0.0
        for col in FIELDS[2:]:
            vals = [r[col] for r in self.records if r.get(col) is not None]
            stem = col.rsplit("_", 1)[0]
            unit = col.rsplit("_", 1)[1]
            out[f"{stem}_mean_{unit}"] = sum(vals) / len(vals) if vals else None
            out[f"{stem}_max_{unit}"] = max(vals) if vals else None
        return out

    def to_csv(self, path: str | Path) -> Path:
        """Write the records as CSV (a header only when there are none); returns the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=FIELDS)
            writer.writeheader()
            writer.writerows(self.records)
        return path

    def to_json(self, path: str | Path) -> Path:
        """Write settings, summary and records as JSON; returns the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        doc = {"interval_s": self.interval_s, "summary": self.summary(), "records": self.records}
        path.write_text(json.dumps(doc, indent=1))
        return path

    def plot(self, path: str | Path) -> Path:
        """Write a PNG timeline (utilisation, memory, power, PCIe); says so in the figure when empty."""
        from fastpipe.profiling._plots import plot_gpu_timeline

        return plot_gpu_timeline(self.records, Path(path), title=f"GPU {self.device}")
