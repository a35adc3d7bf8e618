"""Turn measured rows into speedups, a text table and a PNG chart."""

from __future__ import annotations

from pathlib import Path

from benchmarks.rows import MATCHED


def _ok(r: dict) -> bool:
    return "error" not in r and "skipped" not in r


def speedups(rows: list[dict]) -> None:
    """Add ``speedup_vs_regular`` and ``speedup_vs_monai`` (crops/s ratios) to each measured row."""
    by = {r["row"]: r for r in rows if _ok(r)}
    base = by.get("regular")
    for r in by.values():
        rate = r["crops_per_s"]["median"]
        if base:
            r["speedup_vs_regular"] = rate / base["crops_per_s"]["median"]
        peer = by.get(MATCHED.get(r["row"], ""))
        if peer:
            r["matched_monai_row"] = peer["row"]
            r["speedup_vs_monai"] = rate / peer["crops_per_s"]["median"]


def format_table(rows: list[dict]) -> str:
    """A markdown table of the matrix (also printed by ``make bench``)."""
    head = (
        "| row | fill s | epoch s (median, IQR) | crops/s | data wait | peak RSS GiB | GPU GiB "
        "| x regular | x MONAI |"
    )
    lines = [head, "|" + "---|" * 9]
    for r in rows:
        if not _ok(r):
            why = r.get("skipped") or r.get("error", "")
            lines.append(f"| {r['row']} | {'skipped' if 'skipped' in r else 'error'}: {why[:90]} |||||||| ")
            continue
        e = r["epoch_s"]
        lines.append(
            f"| {r['row']} | {r['fill_s']:.1f} | {e['median']:.2f} ({e['iqr']:.2f}) | "
            f"{r['crops_per_s']['median']:.1f} | {100 * r['data_wait_fraction']['median']:.0f}% | "
            f"{r['peak_rss_bytes'] / 2**30:.2f} | {r['peak_gpu_bytes'] / 2**30:.2f} | "
            f"{_x(r.get('speedup_vs_regular'))} | {_x(r.get('speedup_vs_monai'))} |"
        )
    return "\n".join(lines)


def _x(v: float | None) -> str:
    return f"{v:.1f}x" if v is not None else "-"


def plot_rows(rows: list[dict], path: Path, title: str = "spleen") -> Path:
    """Crops/s (log scale) and data-wait fraction per row, fastpipe rows highlighted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in rows if _ok(r)]
    names = [r["row"] for r in ok]
    colors = ["#c44e52" if n.startswith("fastpipe") else "#4c72b0" for n in names]
    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 0.5 * len(ok) + 1.8), sharey=True)
    rate = [r["crops_per_s"]["median"] for r in ok]
    a.barh(names, rate, color=colors)
    a.set_xscale("log")
    a.set_xlabel("crops/s (96^3 image+label), higher is better")
    for y, v in enumerate(rate):
        a.text(v, y, f" {v:.0f}", va="center", fontsize=8)
    wait = [100 * r["data_wait_fraction"]["median"] for r in ok]
    b.barh(names, wait, color=colors)
    b.set_xlim(0, 100)
    b.set_xlabel("data wait under a stand-in step, % of wall time (lower is better)")
    a.invert_yaxis()
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    """Print the markdown table of a results JSON (``python -m benchmarks.report FILE``), for the README."""
    import argparse
    import json

    p = argparse.ArgumentParser(description=main.__doc__)
    p.add_argument("result", type=Path)
    doc = json.loads(p.parse_args(argv).result.read_text())
    print(format_table(doc["rows"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
