"""Read an Nsight Systems SQLite export: per-NVTX-range totals and the GPU's idle gaps.

Usage:
    nsys export --type sqlite --output spleen.sqlite spleen.nsys-rep   # or nsys profile --export sqlite
    python profiling/nsys_report.py spleen.sqlite [--min-gap-us 100] [--top 10] [--json out.json]

Tables read (created by nsys only when the matching trace was on; any may be absent):
``NVTX_EVENTS`` (push/pop and start/end ranges; the message is ``text`` or, for registered
strings as the ``nvtx`` Python package emits, ``StringIds.value`` via ``textId``; domains are the
rows of event type 75), ``CUPTI_ACTIVITY_KIND_KERNEL``, ``CUPTI_ACTIVITY_KIND_MEMCPY`` and
``CUPTI_ACTIVITY_KIND_MEMSET`` (GPU work; timestamps in ns).
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import statistics
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

NVTX_RANGE_TYPES = (59, 60)  # NvtxPushPopRange, NvtxStartEndRange
NVTX_DOMAIN_CREATE = 75
GPU_TABLES = ("CUPTI_ACTIVITY_KIND_KERNEL", "CUPTI_ACTIVITY_KIND_MEMCPY", "CUPTI_ACTIVITY_KIND_MEMSET")


def _tables(conn: sqlite3.Connection) -> set[str]:
    return {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}


def nvtx_ranges(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    """Every closed NVTX range: ``domain``, ``name``, ``start``, ``end`` (ns), ``tid``."""
    tables = _tables(conn)
    if "NVTX_EVENTS" not in tables:
        return []
    has_strings = "StringIds" in tables
    name_sql = "COALESCE(e.text, s.value, '')" if has_strings else "COALESCE(e.text, '')"
    join = "LEFT JOIN StringIds s ON s.id = e.textId" if has_strings else ""
    domains = dict(
        conn.execute(
            "SELECT domainId, text FROM NVTX_EVENTS WHERE eventType = ?", (NVTX_DOMAIN_CREATE,)
        ).fetchall()
    )
    types = ",".join(str(t) for t in NVTX_RANGE_TYPES)
    rows = conn.execute(
        f"SELECT e.domainId, {name_sql}, e.start, e.end, e.globalTid FROM NVTX_EVENTS e {join} "
        f"WHERE e.eventType IN ({types}) AND e.end IS NOT NULL AND e.end >= e.start"
    ).fetchall()
    return [
        {"domain": domains.get(dom, "") or "", "name": name, "start": start, "end": end, "tid": tid}
        for dom, name, start, end, tid in rows
    ]


def range_totals(ranges: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (domain, name): count, total/mean/median ms; the biggest total first."""
    groups: dict[tuple[str, str], list[int]] = defaultdict(list)
    for r in ranges:
        groups[(r["domain"], r["name"])].append(r["end"] - r["start"])
    out = [
        {
            "domain": dom,
            "name": name,
            "count": len(d),
            "total_ms": sum(d) / 1e6,
            "mean_ms": statistics.fmean(d) / 1e6,
            "median_ms": statistics.median(d) / 1e6,
        }
        for (dom, name), d in groups.items()
    ]
    return sorted(out, key=lambda r: -r["total_ms"])


def gpu_intervals(conn: sqlite3.Connection) -> dict[int, list[tuple[int, int]]]:
    """Kernel, memcpy and memset intervals per device, sorted by start."""
    tables = _tables(conn)
    out: dict[int, list[tuple[int, int]]] = defaultdict(list)
    for table in GPU_TABLES:
        if table in tables:
            for dev, start, end in conn.execute(f"SELECT deviceId, start, end FROM {table}"):
                out[dev].append((start, end))
    return {dev: sorted(iv) for dev, iv in out.items()}


def idle_gaps(
    intervals: list[tuple[int, int]], min_gap_ns: int = 0
) -> tuple[int, int, list[tuple[int, int]]]:
    """``(span_ns, busy_ns, gaps)`` of sorted intervals: gaps are ``(start, end)`` of >= ``min_gap_ns``."""
    if not intervals:
        return 0, 0, []
    busy, gaps = 0, []
    cur_start, cur_end = intervals[0]
    for start, end in intervals[1:]:
        if start > cur_end:
            busy += cur_end - cur_start
            if start - cur_end >= min_gap_ns:
                gaps.append((cur_end, start))
            cur_start, cur_end = start, end
        else:
            cur_end = max(cur_end, end)
    busy += cur_end - cur_start
    return cur_end - intervals[0][0], busy, gaps


def innermost_range(ranges: list[dict[str, Any]], t: int) -> str:
    """The shortest NVTX range (any thread) that contains time ``t``: what the host did meanwhile."""
    inside = [r for r in ranges if r["start"] <= t <= r["end"]]
    return min(inside, key=lambda r: r["end"] - r["start"])["name"] if inside else ""


def report(path: str | Path, min_gap_us: float = 100.0, top: int = 10) -> dict[str, Any]:
    """The per-range totals and per-device idle summary of one export, as a dict."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"nsys_report: no SQLite export at {path}")
    # as_uri() escapes '#', '?' and '%', which a bare "file:{path}" URI would take for its own syntax
    # (a "run#1.sqlite" then opened, and created, an empty "run")
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        ranges = nvtx_ranges(conn)
        devices = gpu_intervals(conn)
    finally:
        conn.close()
    gpus = {}
    for dev, iv in devices.items():
        span, busy, gaps = idle_gaps(iv, int(min_gap_us * 1e3))
        largest = sorted(gaps, key=lambda g: g[0] - g[1])[:top]
        gpus[dev] = {
            "span_ms": span / 1e6,
            "busy_ms": busy / 1e6,
            "idle_fraction": 1.0 - busy / span if span else 0.0,
            "gaps": len(gaps),
            "gap_total_ms": sum(e - s for s, e in gaps) / 1e6,
            "largest_gaps": [
                {
                    "start_ms": s / 1e6,
                    "ms": (e - s) / 1e6,
                    "host_range": innermost_range(ranges, (s + e) // 2),
                }
                for s, e in largest
            ],
        }
    return {"file": str(path), "min_gap_us": min_gap_us, "ranges": range_totals(ranges), "gpus": gpus}


def format_report(rep: dict[str, Any], top: int = 25) -> str:
    """Plain-text tables of :func:`report`."""
    lines = [
        f"NVTX ranges in {rep['file']}",
        f"{'domain':<12}{'range':<36}{'count':>8}{'total ms':>12}{'mean ms':>10}",
    ]
    for r in rep["ranges"][:top]:
        lines.append(
            f"{r['domain'][:11]:<12}{r['name'][:35]:<36}{r['count']:>8}{r['total_ms']:>12.2f}{r['mean_ms']:>10.3f}"
        )
    if not rep["ranges"]:
        lines.append(
            "(no NVTX ranges: was the run traced with -t nvtx and fastpipe.profiling.enable_nvtx()?)"
        )
    for dev, g in rep["gpus"].items():
        lines.append(
            f"GPU {dev}: busy {g['busy_ms']:.1f} of {g['span_ms']:.1f} ms, idle {100 * g['idle_fraction']:.1f}%; "
            f"{g['gaps']} gaps >= {rep['min_gap_us']:g} us totalling {g['gap_total_ms']:.1f} ms"
        )
        for gap in g["largest_gaps"]:
            lines.append(
                f"  gap at {gap['start_ms']:.3f} ms: {gap['ms']:.3f} ms idle, host in '{gap['host_range']}'"
            )
    if not rep["gpus"]:
        lines.append("(no GPU activity: was the run traced with -t cuda?)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Command line: print the report of one export (optionally also as JSON)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sqlite", help="an nsys SQLite export")
    parser.add_argument("--min-gap-us", type=float, default=100.0, help="smallest GPU idle gap counted (us)")
    parser.add_argument("--top", type=int, default=10, help="largest gaps listed per GPU")
    parser.add_argument("--json", help="also write the report as JSON here")
    args = parser.parse_args(argv)
    try:
        rep = report(args.sqlite, args.min_gap_us, args.top)
    except (FileNotFoundError, sqlite3.DatabaseError) as err:
        print(f"nsys_report: {err}", file=sys.stderr)
        return 1
    print(format_report(rep))
    if args.json:
        try:
            Path(args.json).write_text(json.dumps(rep, indent=1))
        except OSError as err:  # a folder that is not there, a file in the way, no permission
            print(f"nsys_report: cannot write --json {args.json}: {err}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
