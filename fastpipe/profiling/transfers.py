"""Count the GPU memory copies a piece of code makes, from the CUDA driver's own record.

fastpipe's cache keeps a counter of the host-to-device bytes it copies itself (``stats()["h2d_bytes"]``).
That counter cannot see a copy made anywhere else: a transform that builds a tensor on the CPU and
moves it, a sampler that sends its draws over, a user's own ``.cuda()``. :class:`CopyCounter` asks the
driver instead: it runs the code under the PyTorch profiler with CUDA activity (CUPTI), and sums every
``gpu_memcpy`` event of the trace by direction (``HtoD``, ``DtoH``, ``DtoD``, ...), with the largest
single copy. "No host-to-device copy of volume data" then reads as: the largest ``HtoD`` copy of a
cached epoch is smaller than one crop.

Example (on a GPU machine):
    >>> from fastpipe.profiling import CopyCounter  # doctest: +SKIP
    >>> with CopyCounter() as copies:  # doctest: +SKIP
    ...     for batch in loader:
    ...         pass
    >>> copies.largest("HtoD") < 96**3 * 4  # no single copy as big as one float32 96^3 crop  # doctest: +SKIP
    True
"""

from __future__ import annotations

import gzip
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

#: Copy directions as the CUDA profiler names them (``Memcpy HtoD (Pinned -> Device)``, ...).
KINDS = ("HtoD", "DtoH", "DtoD", "HtoH", "PtoP")


def _events(trace: dict | list | str | Path) -> list[dict]:
    if isinstance(trace, (str, Path)):
        path = Path(trace)
        opener = gzip.open if path.suffix == ".gz" else open
        try:
            with opener(path, "rt") as f:
                trace = json.load(f)
        except (OSError, json.JSONDecodeError) as err:
            raise ValueError(f"transfers_in_trace: {path} is not a readable Chrome trace: {err}") from err
    events = trace.get("traceEvents") if isinstance(trace, dict) else trace
    if not isinstance(events, list):
        raise ValueError("transfers_in_trace: expected a Chrome trace with a 'traceEvents' list")
    return events


def transfers_in_trace(trace: dict | list | str | Path) -> dict[str, dict[str, int]]:
    """GPU copies in a PyTorch-profiler Chrome trace, by direction.

    Args:
        trace: the trace as a dict (``{"traceEvents": [...]}``), its event list, or a ``.json`` /
            ``.json.gz`` path (``prof.export_chrome_trace``).

    Returns:
        ``{kind: {"count", "bytes", "largest", "unsized"}}`` for every kind in :data:`KINDS`, plus any
        other kind the trace names. ``unsized`` counts copies whose event gives no byte count: they are
        counted, never taken as zero bytes.
    """
    out: dict[str, dict[str, int]] = {k: {"count": 0, "bytes": 0, "largest": 0, "unsized": 0} for k in KINDS}
    for e in _events(trace):
        if not isinstance(e, dict) or e.get("cat") != "gpu_memcpy":
            continue
        words = str(e.get("name", "")).split()
        kind = words[1] if len(words) > 1 and words[0] == "Memcpy" else "unknown"
        row = out.setdefault(kind, {"count": 0, "bytes": 0, "largest": 0, "unsized": 0})
        row["count"] += 1
        size = (e.get("args") or {}).get("bytes")
        if isinstance(size, (int, float)) and size >= 0:
            row["bytes"] += int(size)
            row["largest"] = max(row["largest"], int(size))
        else:
            row["unsized"] += 1
    return out


def _synchronize_all() -> None:
    """Wait for every GPU, not only the current one: a loader on ``cuda:1`` copies there."""
    for index in range(torch.cuda.device_count()):
        torch.cuda.synchronize(index)


class CopyCounter:
    """Context manager: the GPU copies made inside it, as the CUDA driver recorded them.

    Needs a CUDA device (raises ``RuntimeError`` naming what is missing otherwise). Work queued inside
    the block is synchronised on every GPU before the profiler stops, so copies still in flight are
    counted, on whichever device they run.

    Attributes (after the block):
        by_kind: :func:`transfers_in_trace` of the block.
        h2d_bytes / h2d_count: host-to-device bytes and copies.
        trace_path: the Chrome trace kept when ``keep_trace`` names a path (default: not kept).
    """

    def __init__(self, keep_trace: str | Path | None = None) -> None:
        self.keep_trace = Path(keep_trace) if keep_trace else None
        self.by_kind: dict[str, dict[str, int]] = {}
        self.trace_path: Path | None = None
        self._prof: Any = None

    def __enter__(self) -> CopyCounter:
        if not torch.cuda.is_available():
            raise RuntimeError("CopyCounter needs a CUDA device: torch.cuda.is_available() is False here")
        from torch.profiler import ProfilerActivity, profile

        _synchronize_all()  # copies queued before the block are not the block's
        self._prof = profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA])
        self._prof.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            _synchronize_all()
        finally:
            self._prof.__exit__(*exc)
        if exc[0] is not None:
            return
        if self.keep_trace is not None:
            self.keep_trace.parent.mkdir(parents=True, exist_ok=True)
            path = self.trace_path = self.keep_trace
        else:
            fd, tmp = tempfile.mkstemp(suffix=".json", prefix="fastpipe-copies-")
            os.close(fd)
            path = Path(tmp)
        try:
            self._prof.export_chrome_trace(str(path))
            self.by_kind = transfers_in_trace(path)
        finally:
            if self.keep_trace is None:
                path.unlink(missing_ok=True)

    def largest(self, kind: str) -> int:
        """Bytes of the largest single copy of ``kind`` (0 when none)."""
        return self.by_kind.get(kind, {}).get("largest", 0)

    @property
    def h2d_bytes(self) -> int:
        return self.by_kind.get("HtoD", {}).get("bytes", 0)

    @property
    def h2d_count(self) -> int:
        return self.by_kind.get("HtoD", {}).get("count", 0)

    def summary(self) -> dict[str, Any]:
        """JSON-ready: ``by_kind`` plus the host-to-device totals."""
        return {"by_kind": self.by_kind, "h2d_bytes": self.h2d_bytes, "h2d_count": self.h2d_count}
