"""Turn measured rows into speedups with their ranges, a noise verdict and a text table.

The PNG is drawn by :mod:`benchmarks.spleen_plot`.
"""

from __future__ import annotations

import statistics
from pathlib import Path

from benchmarks.rows import MATCHED

#: A row whose epoch times have an interquartile range above this fraction of their median is too
#: noisy to trust: the machine was busy with something else while it ran.
NOISY_IQR = 0.25
#: The slowest over the fastest timing of a fixed probe workload run before every row; above this the
#: machine's speed changed during the run, and ratios between rows measured at different times mislead.
DRIFT_LIMIT = 1.25


def _ok(r: dict) -> bool:
    return "error" not in r and "skipped" not in r


def _quartiles(r: dict) -> tuple[float, float]:
    """First and third quartile of a row's per-epoch crops/s (min and max when the samples are absent).

    Interpolated between samples (as :func:`benchmarks.common.spread`): the exclusive method would
    extrapolate beyond them for two or three epochs, down to negative crops/s.
    """
    samples = r.get("crops_per_s_samples") or []
    if len(samples) >= 2:
        q = statistics.quantiles(samples, n=4, method="inclusive")
        return q[0], q[2]
    c = r["crops_per_s"]
    return c.get("min", c["median"]), c.get("max", c["median"])


def relative_spread(r: dict) -> float:
    """The IQR of a row's epoch times over their median (0 for a single epoch)."""
    e = r["epoch_s"]
    return e["iqr"] / e["median"] if e.get("median") else 0.0


def speedups(rows: list[dict]) -> None:
    """Add to each measured row its crops/s ratios, their ranges and its noise verdict.

    ``speedup_vs_regular`` and ``speedup_vs_monai`` are ratios of medians; ``speedup_vs_monai_range``
    is ``[q1 / peer q3, q3 / peer q1]`` over the per-epoch crops/s, what the ratio could be given
    how much both rows' epochs spread; ``noisy`` is true when the row's epoch IQR exceeds
    ``NOISY_IQR`` of its median.
    """
    by = {r["row"]: r for r in rows if _ok(r)}
    base = by.get("regular")
    for r in by.values():  # every row's verdict first: a row is compared with peers listed after it
        r["epoch_relative_iqr"] = relative_spread(r)
        r["noisy"] = r["epoch_relative_iqr"] > NOISY_IQR
    for r in by.values():
        rate = r["crops_per_s"]["median"]
        if base:
            r["speedup_vs_regular"] = rate / base["crops_per_s"]["median"]
        peer = by.get(MATCHED.get(r["row"], ""))
        if peer:
            (lo, hi), (plo, phi) = _quartiles(r), _quartiles(peer)
            r["matched_monai_row"] = peer["row"]
            r["speedup_vs_monai"] = rate / peer["crops_per_s"]["median"]
            r["speedup_vs_monai_range"] = [lo / phi, hi / plo]
            r["speedup_vs_monai_noisy"] = r["noisy"] or peer["noisy"]


def format_table(rows: list[dict]) -> str:
    """A markdown table of the matrix (also printed by ``make bench``); noisy figures carry a ``~``."""
    head = (
        "| row | fill s | epoch s (median, IQR) | crops/s | data wait | peak RSS GiB | GPU GiB "
        "| x regular | x MONAI (range) |"
    )
    lines = [head, "|" + "---|" * 9]
    for r in rows:
        if not _ok(r):
            why = r.get("skipped") or r.get("error", "")
            lines.append(f"| {r['row']} | {'skipped' if 'skipped' in r else 'error'}: {why[:90]} |||||||| ")
            continue
        e = r["epoch_s"]
        noisy = "~" if r.get("noisy") else ""
        lines.append(
            f"| {r['row']} | {r['fill_s']:.1f} | {noisy}{e['median']:.2f} ({e['iqr']:.2f}) | "
            f"{noisy}{r['crops_per_s']['median']:.1f} | {100 * r['data_wait_fraction']['median']:.0f}% | "
            f"{r['peak_rss_bytes'] / 2**30:.2f} | {r['peak_gpu_bytes'] / 2**30:.2f} | "
            f"{_x(r.get('speedup_vs_regular'))} | {_ratio(r)} |"
        )
    return "\n".join(lines)


def noise_note(rows: list[dict], drift: float | None = None) -> str:
    """Say which figures are too noisy to trust (``""`` when every row held steady).

    Args:
        rows: measured rows, after :func:`speedups`.
        drift: slowest over fastest time of the probe workload run before each row (``None``: not measured).
    """
    out = []
    if drift is not None and drift > DRIFT_LIMIT:
        out.append(
            f"The machine's speed drifted {drift:.2f}x during the run (a fixed probe workload timed before "
            "every row): ratios between rows measured minutes apart are not trustworthy."
        )
    noisy = [r for r in rows if _ok(r) and r.get("noisy")]
    if not noisy:
        return " ".join(out)
    named = ", ".join(
        f"{r['row']} (epoch IQR {100 * r['epoch_relative_iqr']:.0f}% of the median)" for r in noisy
    )
    out.append(
        f"Too noisy to trust (marked ~): {named}. Their epochs spread by more than "
        f"{100 * NOISY_IQR:.0f}%: the machine was busy with other work. Rerun on a quiet machine, "
        "or with more --epochs, before quoting these figures or their ratios."
    )
    return " ".join(out)


def _x(v: float | None) -> str:
    return f"{v:.1f}x" if v is not None else "-"


def _ratio(r: dict) -> str:
    if r.get("speedup_vs_monai") is None:
        return "-"
    lo, hi = r["speedup_vs_monai_range"]
    mark = "~" if r.get("speedup_vs_monai_noisy") else ""
    return f"{mark}{r['speedup_vs_monai']:.1f}x ({lo:.1f}-{hi:.1f}x)"


def main(argv: list[str] | None = None) -> int:
    """Print the markdown table of a results JSON (``python -m benchmarks.report FILE``), for the README."""
    import argparse
    import json

    p = argparse.ArgumentParser(description=main.__doc__)
    p.add_argument("result", type=Path)
    doc = json.loads(p.parse_args(argv).result.read_text())
    speedups(doc["rows"])  # ranges and noise verdicts for results written before they existed
    print(format_table(doc["rows"]))
    note = noise_note(doc["rows"], doc.get("machine_drift"))
    if note:
        print(note)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
