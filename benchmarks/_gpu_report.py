"""The files of ``benchmarks.gpu_check``: ``gpu-check-<gpu>.json`` (with machine metadata) and a one-page PNG."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from benchmarks._gpu_meta import gpu_state
from benchmarks.common import RESULTS_DIR, machine_info, save_figure, write_result


def write_report(
    result: dict[str, Any], out_dir: Path | None, gpu_slug: str, machine: dict[str, Any] | None = None
) -> tuple[Path, Path]:
    """Write the JSON and the PNG of a check into ``out_dir`` (default ``benchmarks/results``);
    ``machine``: :func:`benchmarks.common.machine_info` as taken at the start (default: now)."""
    out_dir = Path(out_dir) if out_dir else RESULTS_DIR
    json_path = write_result("gpu-check", result, out_dir / f"gpu-check-{gpu_slug}.json", machine)
    png_path = plot_check(result, json_path.with_suffix(".png"))
    return json_path, png_path


class CheckRecord:
    """The check's JSON from its first second: machine metadata and the GPU's state taken at the start,
    the file written at once and again around every section (``status`` ``"running"`` and the section
    in ``running`` until :meth:`finish`), so a check killed at its time limit leaves a valid JSON that
    names what ran, what was running, and the machine it ran on."""

    def __init__(self, result: dict[str, Any], out_dir: Path | None, gpu_slug: str) -> None:
        self.result, self.out_dir, self.slug = result, out_dir, gpu_slug
        self.machine = machine_info()
        result |= {"status": "running", "gpu_state": {"start": gpu_state()}}
        self.path = (Path(out_dir) if out_dir else RESULTS_DIR) / f"gpu-check-{gpu_slug}.json"
        self.save()

    def save(self) -> Path:
        """Write the JSON as it stands (replaced whole)."""
        self.result["updated"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        return write_result("gpu-check", self.result, self.path, self.machine)

    def finish(self, status: str = "complete") -> tuple[Path, Path]:
        """The GPU's state at the end beside its start, ``status``, then the final JSON and the PNG."""
        self.result.pop("running", None)
        self.result["gpu_state"]["end"] = gpu_state()
        self.result["status"] = status
        self.result["updated"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        return write_report(self.result, self.out_dir, self.slug, self.machine)


def plot_check(result: dict[str, Any], path: Path) -> Path:
    """Three panels: crop kernel vs copy GB/s, GPU tests, host-to-device bytes per cached epoch; goals in the title."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (bw, tests, h2d) = plt.subplots(1, 3, figsize=(14, 4.2))
    kernel, copy = result.get("crop_kernel_gbps") or 0.0, result.get("d2d_copy_gbps") or 0.0
    bw.bar(["crop kernel", "d2d copy"], [kernel, copy], color=["#c44e52", "#4c72b0"])
    if copy:
        bw.axhline(0.7 * copy, color="k", ls="--", lw=1, label="70% of copy (goal)")
        bw.legend(loc="lower right")
    bw.set_ylabel("GB/s (read + written)")
    bw.set_title("bandwidth, CUDA events")
    counts = result.get("pytest_gpu") or {}
    names = ["passed", "failed", "skipped", "errors"]
    tests.bar(
        names, [counts.get(n, 0) or 0 for n in names], color=["#55a868", "#c44e52", "#8c8c8c", "#dd8452"]
    )
    tests.set_title("pytest -m gpu")
    moved = result.get("cached_epoch_h2d_bytes")
    h2d.bar(["GPU-cached epoch"], [moved or 0], color="#c44e52")
    h2d.set_ylabel("host-to-device bytes (driver count)")
    h2d.set_title(f"largest copy {result.get('cached_epoch_largest_h2d_copy')} B")
    goals = result.get("goals") or {}
    verdict = ", ".join(f"{k}: {'yes' if v else 'NO'}" for k, v in goals.items())
    fig.suptitle(
        f"{result.get('device', 'GPU')}: cuda_matches_torch={result.get('cuda_matches_torch')}, "
        f"speedup vs CPU {result.get('gpu_vs_cpu_crop_speedup') or 0:.1f}x, "
        f"{result.get('nvml_samples', 0)} NVML samples\n{verdict}",
        fontsize=9,
    )
    fig.tight_layout()
    return save_figure(fig, path)
