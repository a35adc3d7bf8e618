"""The workload of ``fastpipe profile``: the spleen chain, per-transform timing, the training step, the loop."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

from fastpipe.cache._item_errors import failed_file
from fastpipe.cache.errors import ItemError, TransformError, item_error
from fastpipe.profiling.nvtx_ranges import annotate, transform_name

KEYS = ["image", "label"]


def build_chain(device: str, roi: list[int], num_samples: int) -> list[Any]:
    """The MSD spleen chain of DESIGN.md, cached up to ``ToDeviced(device)``."""
    from fastpipe import transforms as T

    def need(name: str) -> Any:
        if not hasattr(T, name):
            raise RuntimeError(
                f"fastpipe profile: fastpipe.transforms has no {name}; the spleen chain needs it"
            )
        return getattr(T, name)

    return [
        need("LoadImaged")(KEYS),
        need("EnsureChannelFirstd")(KEYS),
        need("Orientationd")(KEYS, axcodes="RAS"),
        need("Spacingd")(KEYS, pixdim=(1.5, 1.5, 2.0), mode=("bilinear", "nearest")),
        need("ScaleIntensityRanged")("image", a_min=-57, a_max=164, b_min=0.0, b_max=1.0, clip=True),
        need("CropForegroundd")(KEYS, source_key="image", allow_smaller=True),
        need("FgBgToIndicesd")("label"),
        need("ToDeviced")(KEYS, device=device),
        need("RandCropByPosNegLabeld")(
            KEYS, label_key="label", spatial_size=roi, pos=1, neg=1, num_samples=num_samples
        ),
    ]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_prefix(prefix: list[Any], items: list[dict], device: torch.device) -> dict[str, dict[str, float]]:
    """Median/mean/total ms per call of each prefix transform, over ``items`` (device synchronised)."""
    names: list[str] = []
    seen: dict[str, int] = {}  # transforms of one name so far: the second is "Name#2", the third "Name#3"
    for t in prefix:
        name = transform_name(t)
        seen[name] = seen.get(name, 0) + 1
        names.append(name if seen[name] == 1 else f"{name}#{seen[name]}")
    calls: dict[str, list[float]] = {n: [] for n in names}
    for index, item in enumerate(items):
        data: Any = dict(item)
        for name, t in zip(names, prefix, strict=True):
            t0 = time.perf_counter()
            try:
                data = t(data)
            except Exception as err:  # a clear line from `fastpipe profile`, as a cache fill gives
                raise _timing_error(err, index, item, name) from err
            _sync(device)
            calls[name].append(time.perf_counter() - t0)
    total = sum(sum(v) for v in calls.values()) or 1.0
    return {
        n: {
            "calls": len(v),
            "median_ms": 1e3 * statistics.median(v),
            "mean_ms": 1e3 * statistics.fmean(v),
            "share": sum(v) / total,
        }
        for n, v in calls.items()
        if v
    }


def _timing_error(err: Exception, index: int, item: Any, name: str) -> ItemError:
    """A :class:`TransformError` (also of ``err``'s type) naming the item, its file and the transform."""
    key, file = failed_file(item, err)
    return item_error(
        TransformError,
        f"{name} failed on item {index} ({file}) while timing the prefix: {type(err).__name__}: {err}",
        err,
        index=index,
        file=file,
        key=key,
        transform=name,
    )


class TinyUNet(torch.nn.Module):
    """A two-level 3D conv net (~10k parameters): a real forward/backward as the training step."""

    def __init__(self, channels: int = 8, classes: int = 2) -> None:
        super().__init__()
        c = channels
        self.down = torch.nn.Sequential(torch.nn.Conv3d(1, c, 3, padding=1), torch.nn.ReLU())
        self.mid = torch.nn.Sequential(torch.nn.Conv3d(c, 2 * c, 3, stride=2, padding=1), torch.nn.ReLU())
        self.up = torch.nn.Conv3d(3 * c, classes, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = self.down(x)
        mid = torch.nn.functional.interpolate(self.mid(skip), size=skip.shape[2:], mode="trilinear")
        return self.up(torch.cat([skip, mid], dim=1))


def make_step(step_ms: float, model: str | None, device: torch.device) -> Callable[[dict], None]:
    """The stand-in training step: sleep ``step_ms``, or one SGD step of :class:`TinyUNet`."""
    if model is None:
        return lambda batch: time.sleep(step_ms / 1e3)
    net = TinyUNet().to(device)
    opt = torch.optim.SGD(net.parameters(), lr=1e-3)

    def step(batch: dict) -> None:
        image = batch["image"].to(device, non_blocking=True)
        label = batch["label"].to(device, non_blocking=True)[:, 0].long()
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(net(image), label.clamp(0, 1))
        loss.backward()
        opt.step()
        _sync(device)

    return step


def run_loop(loader: Any, iters: int, step: Callable[[dict], None]) -> list[dict[str, Any]]:
    """``iters`` iterations over ``loader`` (epochs repeat); the loader's timings plus ``step_s``/``iter_s``.

    The loader's timing dicts are read once the loop is over: the loader completes an epoch's last
    one after the consumer has moved on (its ``wait_s`` then also counts the wait for the epoch's end,
    e.g. a SmartCache window swap), so a copy taken at once would leave that wait out. ``iter_s`` is the
    loader's (request to next request), else the time from the previous step's end to this one's.
    """
    seen: list[tuple[dict[str, Any], float, float]] = []  # (the loader's timing, step_s, iter_s)
    t_prev = time.perf_counter()
    while len(seen) < iters:
        start = len(seen)
        for batch in loader:
            timing = loader.timings[-1]
            t0 = time.perf_counter()
            with annotate("train_step", "kernel"):
                step(batch)
            t1 = time.perf_counter()
            seen.append((timing, t1 - t0, t1 - t_prev))
            t_prev = t1
            if len(seen) >= iters:
                break
        if len(seen) == start:
            raise RuntimeError("fastpipe profile: the loader yielded no batch (empty dataset?)")
    # the loader's own iter_s where it has one: it holds that epoch-end wait too, so wait_s <= iter_s
    return [{"iter_s": iter_s, **timing, "step_s": step_s} for timing, step_s, iter_s in seen]


def transform_table(per_transform: dict[str, dict[str, float]]) -> str:
    """Plain-text table of :func:`time_prefix`."""
    lines = [
        "deterministic prefix, per call",
        f"{'transform':<24}{'calls':>7}{'median ms':>12}{'mean ms':>12}{'share':>8}",
    ]
    for name, t in per_transform.items():
        lines.append(
            f"{name:<24}{t['calls']:>7}{t['median_ms']:>12.2f}{t['mean_ms']:>12.2f}{100 * t['share']:>7.1f}%"
        )
    return "\n".join(lines)
