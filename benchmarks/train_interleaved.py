"""The arms' epochs under one training step, interleaved in one process: what each data side costs.

Time to target (:mod:`benchmarks.train_loop`) runs every arm in its own process, one after the
other. On a machine whose speed drifts, arms a minute apart meet different machines, and an arm's
epoch time mixes its data side with that drift. Here the arms share one process, one model and
one optimiser (MONAI's recipe, the step run for real), and each round runs one epoch of every arm
in a seeded random order (:func:`benchmarks.common.interleaved`): drift falls on all arms alike.
An epoch's time is its steps plus its waits, so a data side that slows the step down (threads or
worker processes taking the cores the step needs) is counted as well as one that keeps it waiting.

Work an arm does between its epochs must not land in another arm's:

- the SmartCache arm's replacements for its next round start, as in training, once its loader has
  made the epoch's last batch, beside the epoch's last steps; its timed epoch ends only when they
  are all computed (``SmartCacheDataset.wait_replacements``). What is left then is waited for
  instead of overlapping the next epoch's first steps: slightly pessimistic where the steps leave
  CPU idle. Its epoch covers its window only, so every arm is compared per pass over the training
  volumes (``per_pass_s``);
- the regular arm's worker processes and MONAI's loader thread do nothing between their epochs;
- fastpipe's persistent loaders make at most ``buffer_size`` batches of their next epoch ahead, plus
  one each producer holds while it waits for room, during the next arm's epoch; the result bounds
  that share (``run_ahead_bound_s``: ``buffer_size + max(1, num_workers)`` x the median time to make
  a batch; results before this rule counted ``buffer_size`` batches only).
"""

from __future__ import annotations

import time
from typing import Any

import torch

from benchmarks.common import interleaved, spread
from benchmarks.train_arms import ARMS, build
from benchmarks.train_loop import _Steps
from benchmarks.train_recipe import TrainConfig, make_model


def interleaved_epochs(
    train: list[dict], val: list[dict], cfg: TrainConfig, device: torch.device, rounds: int, arms=ARMS
) -> dict[str, Any]:
    """``rounds`` interleaved epochs of every arm (after one warm-up round): medians, spreads, ratios."""
    built = {arm: build(arm, train, val, cfg, device) for arm in arms}
    torch.manual_seed(cfg.seed)
    steps = _Steps(make_model(cfg).to(device), cfg, device, time.perf_counter())

    def epoch(arm: str) -> dict[str, float]:
        first = len(steps.records)
        t0 = time.perf_counter()
        crops, waited = steps.epoch(built[arm].loader)
        finish = getattr(built[arm].loader.dataset, "wait_replacements", None)
        if finish is not None:  # SmartCache: its next round's replacements belong to this epoch
            finish()
        wall = time.perf_counter() - t0
        if crops != built[arm].crops_per_epoch:
            raise RuntimeError(
                f"{arm}: an epoch yielded {crops} crops, expected {built[arm].crops_per_epoch}"
            )
        step_s = [r[2] for r in steps.records[first:]]
        return {"epoch_s": wall, "wait_s": waited, "step_s": sum(step_s) / len(step_s)}

    try:
        samples = interleaved(list(arms), epoch, rounds, warmup=1, order="shuffle", seed=cfg.seed)
        ahead = {arm: _run_ahead_bound_s(b.loader) for arm, b in built.items()}
    finally:
        for arm in built.values():
            arm.close()
    pass_crops = len(train) * cfg.num_samples
    rows = {
        arm: {
            "epoch_s": spread([s["epoch_s"] for s in got]),
            "per_pass_s": spread([s["epoch_s"] * pass_crops / built[arm].crops_per_epoch for s in got]),
            "mean_step_s": spread([s["step_s"] for s in got]),
            "data_wait_fraction": sum(s["wait_s"] for s in got) / sum(s["epoch_s"] for s in got),
            "run_ahead_bound_s": ahead[arm],
        }
        for arm, got in samples.items()
    }
    med = {arm: row["per_pass_s"]["median"] for arm, row in rows.items()}
    ratios = {
        f"vs_{base}": {arm: med[base] / m for arm, m in med.items()}
        for base in ("regular", "monai-fast")
        if base in med
    }
    return {"rounds": rounds, "order": "shuffled per round (seeded), one warm-up round dropped", "arms": rows,
            "ratios_per_pass": ratios}  # fmt: skip


def _run_ahead_bound_s(loader: Any) -> float:
    """Most work a persistent fastpipe loader can do for its next epoch during another arm's (0 for others)."""
    timings = getattr(loader, "timings", None)
    if not timings or not getattr(loader, "persistent_workers", False):
        return 0.0
    make = sorted(t.get("fetch_s", 0.0) + t.get("collate_s", 0.0) for t in timings)
    # the queue's batches, plus one each producer makes and holds while it waits for room
    return (loader.buffer_size + max(1, loader.num_workers)) * make[len(make) // 2]
