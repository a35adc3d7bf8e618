"""The data-wait report: how long the consumer waited for data, and what each loader stage cost.

Input is the loader's per-iteration timings (``ThreadDataLoader.timings``): one dict per batch
with ``wait_s`` (consumer blocked on the queue), ``fetch_s``, ``collate_s``, ``h2d_s`` (producer
side, overlapping the consumer), ``batch_size`` and ``num_crops``. Any other ``*_s`` entry (e.g.
``step_s`` written by ``fastpipe profile``) is reported as a stage too.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

STAGE_ORDER = ("wait_s", "fetch_s", "collate_s", "h2d_s", "step_s")


def _wall_time(timings: Sequence[dict[str, Any]], wall_s: float | None) -> float | None:
    """The consumer's wall time: given, else the sum of ``iter_s``, else of ``wait_s + step_s``."""
    if wall_s is not None:
        if wall_s <= 0:
            raise ValueError(f"summarize: wall_s must be > 0, got {wall_s}")
        return float(wall_s)
    if timings and all("iter_s" in t for t in timings):
        return float(sum(t["iter_s"] for t in timings))
    if timings and all("step_s" in t for t in timings):
        return float(sum(t.get("wait_s", 0.0) + t["step_s"] for t in timings))
    return None


def _stage_names(timings: Sequence[dict[str, Any]]) -> list[str]:
    seen = {k for t in timings for k, v in t.items() if k.endswith("_s") and k != "iter_s" and v is not None}
    return [s for s in STAGE_ORDER if s in seen] + sorted(seen.difference(STAGE_ORDER))


def _stages(timings: Sequence[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """``{stage: {"mean_ms", "median_ms", "max_ms", "total_s"}}`` over the batches that timed it."""
    stages = {}
    for name in _stage_names(timings):
        vals = [float(t[name]) for t in timings if t.get(name) is not None]
        stages[name[:-2]] = {
            "mean_ms": 1e3 * statistics.fmean(vals),
            "median_ms": 1e3 * statistics.median(vals),
            "max_ms": 1e3 * max(vals),
            "total_s": sum(vals),
        }
    return stages


def _rate(count: float, wall: float | None) -> float | None:
    return count / wall if wall else None


def summarize(timings: Sequence[dict[str, Any]], wall_s: float | None = None) -> dict[str, Any]:
    """Summarise per-iteration loader timings into the data-wait report.

    Args:
        timings: one dict per batch (see the module docstring).
        wall_s: the consumer's wall time over these batches (default ``None``: the sum of the
            entries' ``iter_s`` if every entry has one, else of ``wait_s + step_s``; if neither is
            known the fraction and the rates are ``None``). Read inside the loop, the last entry
            (the batch being used, whose ``iter_s`` is not known yet) is left out.

    Returns:
        dict with ``batches``, ``items``, ``crops``, ``wall_s``, ``data_wait_s``,
        ``data_wait_fraction`` (waited / wall), ``batches_per_s``, ``crops_per_s``,
        ``items_per_s``, ``first_wait_s`` (start-up latency, included above) and ``stages``:
        ``{stage: {"mean_ms", "median_ms", "max_ms", "total_s"}}`` per batch.

    Example:
        >>> summarize([{"wait_s": 0.01, "step_s": 0.09, "batch_size": 2, "num_crops": 8}])["data_wait_fraction"]
        0.1
    """
    if wall_s is None and len(timings) > 1 and "iter_s" not in timings[-1]:
        if all("iter_s" in t for t in timings[:-1]):  # read inside the loop: the batch held now is open
            timings = timings[:-1]
    wall = _wall_time(timings, wall_s)
    waited = float(sum(t.get("wait_s", 0.0) for t in timings))
    crops = sum(int(t.get("num_crops", t.get("batch_size", 0))) for t in timings)
    items = sum(int(t.get("batch_size", 0)) for t in timings)
    return {
        "batches": len(timings),
        "items": items,
        "crops": crops,
        "wall_s": wall,
        "data_wait_s": waited,
        "data_wait_fraction": min(1.0, waited / wall) if wall else None,
        "batches_per_s": _rate(len(timings), wall),
        "crops_per_s": _rate(crops, wall),
        "items_per_s": _rate(items, wall),
        "first_wait_s": float(timings[0].get("wait_s", 0.0)) if timings else None,
        "stages": _stages(timings),
    }


def _fmt(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def format_table(summary: dict[str, Any], title: str = "data-wait report") -> str:
    """A plain-text table of a :func:`summarize` result, for terminals and logs."""
    lines = [title, f"{'stage':<12}{'median ms':>12}{'mean ms':>12}{'max ms':>12}{'total s':>12}"]
    for name, st in summary["stages"].items():
        lines.append(
            f"{name:<12}{st['median_ms']:>12.2f}{st['mean_ms']:>12.2f}{st['max_ms']:>12.2f}{st['total_s']:>12.3f}"
        )
    frac = summary["data_wait_fraction"]
    lines += [
        f"batches {summary['batches']}, crops {summary['crops']}, wall {_fmt(summary['wall_s'], '.3f')} s",
        f"data wait {summary['data_wait_s']:.3f} s = {_fmt(None if frac is None else 100 * frac, '.1f')}% of wall",
        f"throughput {_fmt(summary['batches_per_s'], '.2f')} batches/s, {_fmt(summary['crops_per_s'], '.2f')} crops/s",
    ]
    return "\n".join(lines)
