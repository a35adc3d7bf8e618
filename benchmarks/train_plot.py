"""The training experiment's pictures: Dice against wall-clock time, and a Clara-style utilisation chart."""

from __future__ import annotations

from pathlib import Path
from typing import Any

COLORS = {
    "regular": "#4c72b0",
    "monai-fast": "#55a868",
    "fastpipe": "#c44e52",
    "fastpipe-smartcache": "#dd8452",
    "fastpipe-smartcache-persist": "#8172b3",
}


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _ok(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [a for a in doc["arms"] if "error" not in a]


def _where(doc: dict[str, Any]) -> str:
    m = doc["machine"]
    return f"{m['gpu']} (GPU)" if m.get("gpu") else f"{m['cpu']}, {m['cpu_count']} cores (CPU only)"


def plot_dice(doc: dict[str, Any], path: Path) -> Path:
    """Validation foreground Dice against wall-clock seconds, every arm on one plot, target line."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for arm in _ok(doc):
        t = [v["t_s"] for v in arm["validation"]]
        d = [v["dice"] for v in arm["validation"]]
        label = arm["arm"] + (f" ({arm['time_to_target_s']:.0f} s)" if arm["reached"] else " (not reached)")
        ax.plot(t, d, marker=".", color=COLORS.get(arm["arm"]), label=label)
    target = doc["config"]["target"]
    ax.axhline(target, color="grey", linestyle="--", linewidth=1, label=f"target {target}")
    ax.set_xlabel("wall-clock time since the start of the arm (s), cache fill included")
    ax.set_ylabel("validation foreground Dice")
    ax.set_ylim(0, 1)
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title(f"Time to Dice {target} - {_where(doc)}", fontsize=10)
    return _save(fig, plt, path)


def plot_utilisation(doc: dict[str, Any], path: Path) -> Path:
    """One row per arm: GPU utilisation over time (GpuMonitor) on a GPU, else data wait per step."""
    plt = _plt()
    arms = _ok(doc)
    fig, axes = plt.subplots(len(arms) or 1, 1, figsize=(8, 1.6 * max(1, len(arms)) + 0.8), sharex=True)
    axes = list(axes) if len(arms) > 1 else [axes]
    for ax, arm in zip(axes, arms, strict=False):
        color = COLORS.get(arm["arm"])
        util = _util_rows(arm)
        if util:
            t, u = zip(*util, strict=True)
            ax.fill_between(t, u, color=color, alpha=0.6, step="post")
            ax.set_ylim(0, 100)
            ax.set_ylabel("GPU %", fontsize=8)
        else:
            rows = arm["steps"]["rows"]
            val = [(v["t_s"] - v.get("val_s", 0.0), v.get("val_s", 0.0)) for v in arm["validation"]]
            ax.broken_barh([(r[0] - r[1], r[1]) for r in rows], (0.7, 0.25), color=color, linewidth=0)
            ax.broken_barh([(r[0], r[2]) for r in rows], (0.375, 0.25), color="#999999", linewidth=0)
            ax.broken_barh(val, (0.05, 0.25), color="#dddddd", linewidth=0)
            ax.set_ylim(0, 1)
            ax.set_yticks([0.175, 0.5, 0.825], ["validate", "step", "wait"], fontsize=8)
        ax.set_title(
            f"{arm['arm']}: data wait {100 * arm['data_wait_fraction']:.0f}% of training time",
            fontsize=9,
            loc="left",
        )
    kind = (
        "GPU utilisation (NVML)"
        if any(_util_rows(a) for a in arms)
        else "training loop: waiting for data (colour), training steps, validation"
    )
    axes[-1].set_xlabel("wall-clock time since the start of the arm (s)")
    fig.suptitle(f"{kind} - {_where(doc)}", fontsize=10)
    return _save(fig, plt, path)


def _util_rows(arm: dict[str, Any]) -> list[tuple[float, float]]:
    """The arm's measured ``(t_s, gpu_util_pct)`` samples; none where NVML gave no utilisation (a MIG slice)."""
    gpu = arm.get("gpu_util") or {}
    return [(r[0], r[1]) for r in gpu.get("rows", []) if r[1] is not None]


def _save(fig, plt, path: Path) -> Path:
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_all(doc: dict[str, Any], out_json: Path) -> list[Path]:
    """Both charts beside the result JSON: ``<stem>-dice.png`` and ``<stem>-utilisation.png``."""
    stem = out_json.with_suffix("")
    return [
        plot_dice(doc, Path(f"{stem}-dice.png")),
        plot_utilisation(doc, Path(f"{stem}-utilisation.png")),
    ]
