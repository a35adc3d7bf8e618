"""PNG figures of the profiling tools; matplotlib is imported lazily with the Agg backend."""

from __future__ import annotations

from pathlib import Path
from typing import Any

_GPU_PANELS = (
    (("gpu_util_pct", "mem_util_pct"), "utilisation (%)"),
    (("mem_used_mib",), "memory used (MiB)"),
    (("power_w",), "power (W)"),
    (("pcie_tx_mbps", "pcie_rx_mbps"), "PCIe (MB/s)"),
)


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    _pyplot().close(fig)
    return path


def plot_gpu_timeline(records: list[dict[str, Any]], path: Path, title: str = "GPU") -> Path:
    """Four stacked panels over time: utilisation, memory, power, PCIe tx/rx."""
    plt = _pyplot()
    fig, axes = plt.subplots(len(_GPU_PANELS), 1, figsize=(9, 8), sharex=True)
    t = [r["t_s"] for r in records]
    for ax, (cols, label) in zip(axes, _GPU_PANELS, strict=True):
        drawn = 0
        for col in cols:
            vals = [r.get(col) for r in records]
            if any(v is not None for v in vals):
                ax.plot(t, [float("nan") if v is None else v for v in vals], label=col)
                drawn += 1
        ax.set_ylabel(label)
        if drawn > 1:
            ax.legend(loc="upper right", fontsize="small")
        elif records and not drawn:
            ax.text(
                0.5, 0.5, "not supported on this device", ha="center", va="center", transform=ax.transAxes
            )
    axes[-1].set_xlabel("time (s)")
    axes[0].set_title(title if records else f"{title}: no NVML samples (no NVIDIA driver?)")
    return _save(fig, path)


def plot_profile(
    per_transform: dict[str, dict[str, float]], iterations: list[dict[str, float]], path: Path
) -> Path:
    """Left: median ms per call of each transform. Right: per-iteration data wait vs training step."""
    plt = _pyplot()
    fig, (ax_t, ax_i) = plt.subplots(1, 2, figsize=(13, 4.5))
    names = list(per_transform)
    ax_t.barh(names, [per_transform[n]["median_ms"] for n in names], color="#4C72B0")
    ax_t.invert_yaxis()
    ax_t.set_xlabel("median ms per call")
    ax_t.set_title("deterministic prefix, per transform")
    idx = list(range(len(iterations)))
    wait = [1e3 * it.get("wait_s", 0.0) for it in iterations]
    step = [1e3 * it.get("step_s", 0.0) for it in iterations]
    ax_i.bar(idx, wait, color="#C44E52", label="waiting for data")
    ax_i.bar(idx, step, bottom=wait, color="#55A868", label="training step")
    ax_i.set_xlabel("iteration")
    ax_i.set_ylabel("ms")
    ax_i.set_title("consumer time per iteration")
    ax_i.legend(loc="upper right", fontsize="small")
    return _save(fig, path)
