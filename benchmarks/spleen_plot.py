"""Picture of a ``benchmarks.spleen`` result (``make bench``): throughput and data wait per row.

Left: crops/s per row on a log scale, the median as a bar, each timed epoch as a dot, the matched
ratio to MONAI with its range beside fastpipe's rows. Right: the share of wall time the loop waited
for data under the stand-in training step, with its value printed (a 0% bar still shows as a
sliver). Red is fastpipe, blue its peers (a legend says so). A skipped or failed row keeps its line
with the reason. The title names the machine, the GPU (or "none"), the step time and the commit;
rows too noisy to trust are marked.

Run: ``python -m benchmarks.spleen_plot bench-out/<date>-<host>.json`` (re-plots a saved result;
``benchmarks.spleen`` writes the PNG itself next to its JSON).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks.common import plot_cli, save_figure
from benchmarks.report import DRIFT_LIMIT, speedups

FASTPIPE = "#c44e52"
PEER = "#4c72b0"
MISSING = "#555555"


def title(doc: dict[str, Any], rows: list[dict]) -> str:
    """``make bench: <data> on <cpu> x<cores> (GPU: <name or none>), step <ms> per batch, commit <sha>``."""
    machine = doc.get("machine", {})
    config = doc.get("config", {})
    steps = [r["step_s"] for r in rows if "step_s" in r]
    step = f"step {1e3 * steps[0]:.0f} ms per batch" if steps else "step ?"
    data = config.get("data") if config.get("data") not in (None, "None") else config.get("preset", "?")
    return (
        f"make bench: {Path(str(data)).name} on {machine.get('cpu', '?')} x{machine.get('cpu_count', '?')}"
        f" (GPU: {machine.get('gpu') or 'none'}), {step}, commit {machine.get('commit', '?')}"
    )


def _color(name: str) -> str:
    return FASTPIPE if name.startswith("fastpipe") else PEER


def _why(r: dict) -> str:
    text = r.get("skipped") or r.get("error", "")
    kind = "skipped" if "skipped" in r else "error"
    return f"{kind}: {text[:70]}"


def _throughput(ax: Any, rows: list[dict]) -> None:
    ok = [r["crops_per_s"]["median"] for r in rows if "crops_per_s" in r]
    left = min(ok) / 3 if ok else 1.0
    for y, r in enumerate(rows):
        if "crops_per_s" not in r:
            ax.text(left, y, "  " + _why(r), va="center", fontsize=8, color=MISSING, style="italic")
            continue
        color, med = _color(r["row"]), r["crops_per_s"]["median"]
        ax.barh(y, med, color=color, alpha=0.85)
        dots = r.get("crops_per_s_samples") or []
        ax.scatter(dots, [y] * len(dots), s=9, color="black", alpha=0.5, zorder=3)
        label = f" {med:.0f}"
        if r.get("speedup_vs_monai") is not None:
            lo, hi = r["speedup_vs_monai_range"]
            label += f"  {r['speedup_vs_monai']:.1f}x MONAI ({lo:.1f}-{hi:.1f}x)"
        if r.get("noisy"):
            label += "  noisy"
        ax.text(1.12 * max([med, *dots]), y, label, va="center", fontsize=8)
    ax.set_xscale("log")
    if ok:
        ax.set_xlim(left, max(ok) * 30)
    ax.set_xlabel("crops/s (96³ image+label), log; bar = median, dots = epochs (higher is better)")


def _data_wait(ax: Any, rows: list[dict]) -> None:
    for y, r in enumerate(rows):
        if "data_wait_fraction" not in r:
            ax.text(1, y, "no figure", va="center", fontsize=8, color=MISSING, style="italic")
            continue
        wait = 100 * r["data_wait_fraction"]["median"]
        color = _color(r["row"])
        ax.barh(y, max(wait, 0.6), color=color, alpha=0.85, edgecolor=color)  # a 0% bar stays visible
        ax.text(
            max(wait, 0.6) + 1, y, f"{wait:.0f}%" if wait >= 1 else f"{wait:.1f}%", va="center", fontsize=8
        )
    ax.set_xlim(0, 110)
    ax.set_xlabel("data wait under the stand-in step, % of wall time (lower is better)")


def plot_rows(rows: list[dict], path: str | Path, doc: dict[str, Any] | None = None) -> Path:
    """Write the two-panel PNG of a spleen result to ``path``; ``doc`` gives the title's machine and config."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    doc = doc or {}
    fig, (a, b) = plt.subplots(
        1, 2, figsize=(14, 0.45 * len(rows) + 2.4), sharey=True, gridspec_kw={"width_ratios": [3, 2]}
    )
    _throughput(a, rows)
    _data_wait(b, rows)
    a.set_yticks(range(len(rows)), [r["row"] for r in rows], fontsize=9)
    a.set_ylim(len(rows) - 0.5, -0.5)  # top to bottom in run order, a row without a bar included
    for ax in (a, b):
        ax.grid(axis="x", which="major", alpha=0.3)
    fig.legend(
        handles=[
            Patch(color=FASTPIPE, label="fastpipe"),
            Patch(color=PEER, label="peers: MONAI, DALI, plain PyTorch"),
        ],
        loc="lower center",
        ncol=2,
        fontsize=9,
        frameon=False,
    )
    noisy = [r["row"] for r in rows if r.get("noisy")]
    notes = [f"noisy (epoch IQR > 25% of median), do not trust: {', '.join(noisy)}"] if noisy else []
    drift = doc.get("machine_drift")
    if drift and drift > DRIFT_LIMIT:
        notes.append(
            f"machine speed drifted {drift:.2f}x during the run: ratios between rows are not trustworthy"
        )
    note = "\n".join(notes)
    fig.suptitle(title(doc, rows) + (f"\n{note}" if note else ""), fontsize=10)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    return save_figure(fig, path)


def _draw(doc: dict[str, Any], out: Path) -> Path:
    speedups(doc["rows"])
    return plot_rows(doc["rows"], out, doc)


def main(argv: list[str] | None = None) -> Path:
    return plot_cli(__doc__.splitlines()[0], "spleen result", _draw, argv)


if __name__ == "__main__":
    main()
