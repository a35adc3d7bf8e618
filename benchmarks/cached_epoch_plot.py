"""Picture of a ``benchmarks.cached_epoch`` result: every epoch of every peer, and the fill-scaling curve.

Left: the time per volume of each timed epoch of each peer (one dot per epoch, the median as a bar),
on a log scale, with fastpipe's ratio to each peer. The spread is the point: on a shared VM a peer's
epochs can differ by 3x within one run, and the median is what the ratios use. Right: fastpipe's fill
time per volume against ``num_workers`` (every repeat a dot, the median a line) with ideal linear
scaling from one worker drawn dashed for reference.

Run: ``python -m benchmarks.cached_epoch_plot benchmarks/results/cached-epoch-cpu.json`` (re-plots a
saved result; ``benchmarks.cached_epoch`` writes the PNG itself next to its JSON).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks.common import plot_cli, save_figure

FASTPIPE = "#c44e52"
PEER = "#4c72b0"


def title(result: dict[str, Any]) -> str:
    """``benchmarks.cached_epoch on <cpu> x<cores> (GPU: <name or none>), commit <sha>``."""
    machine = result.get("machine", {})
    return (
        f"{result.get('benchmark', 'benchmarks.cached_epoch')} on {machine.get('cpu', '?')} x{machine.get('cpu_count', '?')}"
        f" (GPU: {machine.get('gpu') or 'none'}), commit {machine.get('commit', '?')}"
    )


def plot(result: dict[str, Any], path: str | Path) -> Path:
    """Write the two-panel PNG of ``result`` (the dict ``benchmarks.cached_epoch.main`` returns) to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    peers = result["peers"]
    names = sorted(peers, key=lambda k: peers[k]["ms_per_volume"])
    fill = result.get("fill_scaling", {})
    if fill:
        fig, (a, b) = plt.subplots(1, 2, figsize=(13, 4.8), gridspec_kw={"width_ratios": [3, 2]})
        _fill_panel(b, fill, result["config"]["volumes"])
    else:  # no fill-scaling part (benchmarks.tutorial_epoch): the epoch panel alone
        fig, a = plt.subplots(figsize=(max(9.0, 1.5 * len(names)), 4.8))  # room for each column's label
    _epoch_panel(a, peers, names, result["config"]["volumes"])
    fig.suptitle(title(result), fontsize=11)
    fig.tight_layout()
    return save_figure(fig, path)


def _epoch_panel(a, peers: dict[str, Any], names: list[str], volumes: int) -> None:
    """Each peer's epochs per volume (dots), its median (bar) and its time against fastpipe's."""
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    tops = [_epoch_column(a, x, name, peers[name], peers["fastpipe"]["ms_per_volume"], volumes)
            for x, name in enumerate(names)]  # fmt: skip
    a.set_yscale("log")
    a.set_ylim(top=max(tops) * 1.8)  # room for the highest column's label
    a.set_xticks(range(len(names)), [n.replace("_", "\n") for n in names], fontsize=8)
    a.set_xlim(-0.6, len(names) - 0.1)
    a.set_ylabel("epoch time per volume, ms (log; lower is better)")
    turns = any("first_epoch_samples_s" in r for r in peers.values())
    a.set_title(
        "cached epoch: each dot one epoch, bar the median"
        + (" (hollow, left: a turn's first epoch, not in the median)" if turns else ""),
        fontsize=10,
    )
    a.grid(axis="y", which="both", alpha=0.3)
    a.yaxis.set_major_formatter(ScalarFormatter())
    a.yaxis.set_minor_formatter(NullFormatter())


def _epoch_column(a, x: int, name: str, row: dict[str, Any], fp_ms: float, volumes: int) -> float:
    """One peer's column at ``x``; returns its highest point (where its label sits)."""
    color = FASTPIPE if name == "fastpipe" else PEER
    samples = [1e3 * s / volumes for s in row.get("epoch_samples_s", [])]
    jitter = [x + 0.25 * ((i % 5) - 2) / 2 for i in range(len(samples))]
    a.scatter(jitter, samples, s=12, color=color, alpha=0.55, zorder=3)
    firsts = [1e3 * s / volumes for s in row.get("first_epoch_samples_s", [])]
    if firsts:  # a turn's first epoch, right after another peer's: hollow, beside the dots
        a.scatter([x - 0.3] * len(firsts), firsts, s=14, facecolors="none", edgecolors=color, zorder=3)
    a.hlines(row["ms_per_volume"], x - 0.35, x + 0.35, color=color, linewidth=2.5, zorder=4)
    r = row["ms_per_volume"] / fp_ms
    label = (
        "" if name == "fastpipe" else f"{r:.2f}x fastpipe's time" if r < 2 else f"{r:.1f}x fastpipe's time"
    )
    top = max([row["ms_per_volume"], *samples, *firsts])
    a.annotate(  # above the column's highest dot, so no label covers another column
        f"{row['ms_per_volume']:.1f} ms\n{label}".strip(),
        (x, top * 1.08),
        ha="center",
        va="bottom",
        fontsize=8,
    )
    return top


def _fill_panel(b, fill: dict[str, Any], volumes: int) -> None:
    """Fill time per volume against ``num_workers``, beside the ideal 1/num_workers."""
    from matplotlib.ticker import FormatStrFormatter, NullFormatter, ScalarFormatter

    workers = sorted(int(w) for w in fill)
    med = [1e3 * fill[str(w)]["fill_s_per_volume"]["median"] for w in workers]
    for w in workers:
        dots = [1e3 * s for s in fill[str(w)].get("samples_s", [])]
        b.scatter([w] * len(dots), dots, s=12, color=FASTPIPE, alpha=0.5, zorder=3)
    b.plot(workers, med, "o-", color=FASTPIPE, label="fastpipe fill (median)", zorder=4)
    b.plot(workers, [med[0] / w for w in workers], "--", color="grey", label="ideal: 1/num_workers")
    for w, m in zip(workers, med, strict=True):
        b.annotate(f" {med[0] / m:.1f}x", (w, m), fontsize=8)
    b.set_xscale("log", base=2)
    b.set_yscale("log")
    b.set_xticks(workers, [str(w) for w in workers])
    b.set_xlabel("num_workers")
    b.set_ylabel("fill time per volume, ms (log)")
    b.set_title(f"fill scaling, {fill[str(workers[0])].get('volumes', volumes)} volumes", fontsize=10)
    b.legend(fontsize=8)
    b.grid(which="both", alpha=0.3)
    b.xaxis.set_major_formatter(ScalarFormatter())
    b.xaxis.set_minor_formatter(NullFormatter())
    b.yaxis.set_major_formatter(FormatStrFormatter("%.0f"))
    b.yaxis.set_minor_formatter(FormatStrFormatter("%.0f"))


def main(argv: list[str] | None = None) -> Path:
    return plot_cli(__doc__.splitlines()[0], "cached-epoch", plot, argv)


if __name__ == "__main__":
    main()
