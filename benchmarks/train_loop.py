"""Train one arm to the Dice target: the tutorial's loop, with the data side timed per step."""

from __future__ import annotations

import importlib
import itertools
import time
from collections.abc import Callable
from typing import Any

import torch

from benchmarks.common import spread, sync
from benchmarks.measure import memory_now
from benchmarks.measure import peak_rss_bytes as _peak_rss_bytes  # every live worker process counts
from benchmarks.train_arms import build
from benchmarks.train_recipe import TrainConfig, Validator, make_loss, make_model, make_optimizer


class _Steps:
    """The training step and its clock: per step ``[t_s, wait_s, step_s]`` since the arm started."""

    def __init__(self, model, cfg: TrainConfig, device: torch.device, t0: float) -> None:
        self.model, self.device, self.t0 = model, device, t0
        self.amp = device.type == "cuda"
        self.loss_fn, self.opt = make_loss(), make_optimizer(model, cfg)
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.amp)
        self.records: list[list[float]] = []
        self.loss = float("nan")

    def epoch(self, loader: Any) -> tuple[int, float]:
        """One epoch: (crops, seconds the consumer waited for data).

        The wait includes the loader's work at the epoch's start (``iter``) and at its end (the request
        that finds the epoch over: a fastpipe SmartCache waits there for the replacements of its next
        window); both are in the epoch's wall time too.
        """
        crops, waited = 0, 0.0
        t_req = time.perf_counter()
        it = iter(loader)
        while True:
            try:
                batch = next(it)
            except StopIteration:
                return crops, waited + time.perf_counter() - t_req
            img = batch["image"].to(self.device, non_blocking=True).float()
            lab = batch["label"].to(self.device, non_blocking=True)
            sync(self.device)
            t_got = time.perf_counter()
            self._step(img, lab)
            sync(self.device)
            t_end = time.perf_counter()
            waited += t_got - t_req
            crops += int(img.shape[0])
            self.records.append([t_got - self.t0, t_got - t_req, t_end - t_got])
            t_req = time.perf_counter()

    def _step(self, img: torch.Tensor, lab: torch.Tensor) -> None:
        self.opt.zero_grad(set_to_none=True)
        with torch.autocast(self.device.type, enabled=self.amp):
            loss = self.loss_fn(self.model(img), lab)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.opt)
        self.scaler.update()
        self.loss = float(loss.detach())


def train_arm(
    arm: str,
    train: list[dict],
    val: list[dict],
    cfg: TrainConfig,
    device: torch.device,
    on_validation: Callable[[dict], None] | None = None,
) -> dict:
    """Build ``arm``, train until ``cfg.target`` or the budget, and return its figures and timelines.

    The clock starts before the datasets are built, so a cache's fill counts toward time to target,
    as in the tutorial's total times. ``on_validation`` (default ``None``) gets the timeline so far
    after every validation, ``{"arm", "validation", "epochs", "build_s"}``: what is left of an arm
    whose process is killed before it ends.
    """
    _import_libraries(device)  # Python imports (and a GPU's kernel compile) are not part of any arm's time
    torch.manual_seed(cfg.seed)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    monitor = _gpu_monitor(device)
    t0 = time.perf_counter()
    built = build(arm, train, val, cfg, device)
    sync(device)  # a GPU cache's fill queues asynchronous copies: they are part of the build
    build_s = time.perf_counter() - t0
    torch.manual_seed(cfg.seed)  # the same initial weights in every arm
    model = make_model(cfg).to(device)
    steps, validate = (
        _Steps(model, cfg, device, t0),
        Validator(built.val_volumes, cfg, device, device.type == "cuda"),
    )
    pass_crops = len(train) * cfg.num_samples

    def report(timeline: list[dict], epochs: int) -> None:
        if on_validation is not None:
            on_validation({"arm": arm, "validation": list(timeline), "epochs": epochs, "build_s": build_s})

    try:
        epochs, timeline, reached = _run_epochs(
            arm, built, steps, validate, model, cfg, t0, pass_crops, report
        )
    finally:
        peak_rss = _peak_rss_bytes()  # before close: worker processes still alive count with their peaks
        held = memory_now()  # what the arm holds at its end, a page shared by workers counted once (PSS)
        built.close()
        if monitor is not None:
            monitor.stop()
    res = _summary(
        arm, cfg, build_s, epochs, timeline, reached, steps.records, monitor, built.info, t0, pass_crops
    )
    res["peak_rss_bytes"] = peak_rss
    res.update(held)
    return res


def _run_epochs(
    arm, built, steps, validate, model, cfg, t0, pass_crops, report
) -> tuple[list, list, dict | None]:
    """Epochs until the target or the budget: ``(epochs, validation timeline, the validation that
    reached the target or None)``; ``report(timeline, epochs)`` after every validation. ``pass_crops``:
    the crops of one pass over the training volumes.

    Validation comes after every ``val_interval`` passes over the training volumes, counted in crops
    seen: an epoch of the SmartCache arm covers only its window, so it validates every other epoch,
    and every arm validates after the same amount of training data. The epoch budget counts passes
    too, so a SmartCache arm gets as much training data as the others.
    """
    epochs: list[dict] = []
    timeline: list[dict] = []
    seen, next_val = 0, cfg.val_interval * pass_crops
    for epoch in itertools.count(1):
        t_ep = time.perf_counter()
        crops, waited = steps.epoch(built.loader)
        wall = time.perf_counter() - t_ep
        if crops != built.crops_per_epoch:
            raise RuntimeError(
                f"{arm}: epoch {epoch} yielded {crops} crops, expected {built.crops_per_epoch}"
            )
        epochs.append({"epoch": epoch, "s": wall, "wait_s": waited, "crops": crops, "loss": steps.loss})
        seen += crops
        if seen >= next_val:
            next_val += cfg.val_interval * pass_crops
            t_val = time.perf_counter()
            dice = validate(model)
            t_now = time.perf_counter()
            timeline.append(
                {
                    "epoch": epoch,
                    "passes": seen / pass_crops,
                    "t_s": t_now - t0,
                    "dice": dice,
                    "val_s": t_now - t_val,
                }
            )
            report(timeline, len(epochs))
            if dice >= cfg.target:
                return epochs, timeline, timeline[-1]
        if seen >= cfg.max_epochs * pass_crops or time.perf_counter() - t0 > cfg.max_s:
            return epochs, timeline, None


def _import_libraries(device: torch.device) -> None:
    """The imports, and on a GPU fastpipe's one NVRTC compile of its kernels, before any arm's clock.

    CuPy keeps a compiled kernel on disk: on a fresh machine the first fastpipe arm alone would pay the
    compile inside its time to target, and the fastpipe arms after it (same kernels) would not.
    """
    for name in ("fastpipe", "monai.data", "monai.inferers", "monai.losses", "monai.metrics",
                 "monai.networks.nets", "monai.optimizers", "monai.transforms"):  # fmt: skip
        importlib.import_module(name)
    if device.type == "cuda":
        from fastpipe.ops import cuda_kernels_available

        cuda_kernels_available()  # compiles (or loads from CuPy's cache); False: the torch path, no compile


def _gpu_monitor(device: torch.device):
    if device.type != "cuda":
        return None
    from fastpipe.profiling import GpuMonitor

    return GpuMonitor(interval_s=0.2).start()


def _summary(
    arm, cfg, build_s, epochs, timeline, reached, steps, monitor, info, t0, pass_crops
) -> dict[str, Any]:
    walls = [e["s"] for e in epochs]
    # an epoch's time scaled to one pass over the training volumes: a SmartCache epoch covers its window only
    per_pass = [e["s"] * pass_crops / e["crops"] for e in epochs[1:] or epochs]
    waits = [e["wait_s"] / e["s"] for e in epochs if e["s"] > 0]
    total_wall = sum(walls)
    return {
        "arm": arm,
        "target": cfg.target,
        "reached": reached is not None,
        "time_to_target_s": reached["t_s"] if reached else None,
        "epochs_to_target": reached["epoch"] if reached else None,
        # passes over the training volumes: comparable across arms (a SmartCache epoch is half a pass)
        "passes_to_target": reached["passes"] if reached else None,
        "best_dice": max((v["dice"] for v in timeline), default=None),
        "epoch_s": spread(walls[1:] or walls),
        "per_pass_s": spread(per_pass),
        "data_wait_fraction": sum(e["wait_s"] for e in epochs) / total_wall if total_wall > 0 else 0.0,
        "data_wait_fraction_per_epoch": spread(waits),
        "build_s": build_s,
        "total_s": time.perf_counter() - t0,
        "peak_rss_bytes": None,  # measured by train_arm before the arm closes
        "peak_gpu_bytes": torch.cuda.max_memory_allocated() if torch.cuda.is_available() else 0,
        "validation": timeline,
        "epochs": epochs,
        "steps": {"columns": ["t_s", "wait_s", "step_s"], "rows": [[round(v, 4) for v in s] for s in steps]},
        "gpu_util": _gpu_records(monitor),
        "info": info,
    }


def _gpu_records(monitor) -> dict[str, Any] | None:
    if monitor is None or not monitor.available:
        return None
    rows = [[round(r["t_s"], 3), r.get("gpu_util_pct")] for r in monitor.records]
    return {"columns": ["t_s", "gpu_util_pct"], "rows": rows, "summary": monitor.summary()}
