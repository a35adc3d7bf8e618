"""Bytes per cached volume and the cached epoch: MONAI-style index lists vs fastpipe's compact form.

Two ``CacheDataset`` peers over the same in-memory spleen-sized volumes (``workload.make_volumes``:
int16 HU image, uint8 organ label), the same prefix (``ScaleIntensityRanged``, ``FgBgToIndicesd``)
and crop (4 pos/neg crops per volume, batches of 2 volumes, shuffled):

- ``lists``: the cache holds MONAI's layout, one int64 per foreground and per background voxel;
- ``compact``: what fastpipe plans for its own crop, the int32 foreground list and a background
  count; background centres are drawn by rejection from the cached label.

Reported: bytes per cached volume by tensor and over the image's bytes (read from ``stats()``, and
checked against the closed form :func:`entry_bytes`); the cached epoch's time, epochs of the two
peers interleaved (alternating order) after a warm-up, ``compact / lists`` of the medians (target
<= 1.05); and how many spleen-full look-alike volumes fit in a host budget (default 8 GiB) before
and after: per-volume bytes from :func:`spleen_full_geometry` (the ``spleen-full`` synth preset's
shapes, spacings and spleen masks, as the spleen prefix resamples and crops them), averaged over the
preset's volumes, the budget divided by that mean.

Run: ``python -m benchmarks.cache_footprint [--volumes 8 --shape 240 210 250 --epochs 10]``.
Writes ``benchmarks/results/cache-footprint.json``.
"""

from __future__ import annotations

import argparse
import math
import threading
import time
from pathlib import Path
from typing import Any

from benchmarks import workload
from benchmarks.common import interleaved, machine_info, spread, write_result

FORMS = ("lists", "compact")
BATCH = 2
TARGET_EPOCH_RATIO = 1.05
GIB = 2**30


def entry_bytes(voxels: int, fg: int, form: str) -> int:
    """Bytes of one cached entry (float32 image, uint8 label, crop indices) with ``voxels`` voxels, ``fg`` foreground.

    Example:
        >>> entry_bytes(100, 10, "lists"), entry_bytes(100, 10, "compact")
        (1300, 548)
    """
    from fastpipe.ops.indices import MIN_BG_FRACTION

    base = 4 * voxels + voxels
    if form == "lists":
        return base + 8 * fg + 8 * (voxels - fg)
    width = 4 if voxels < 2**31 else 8
    bg = voxels - fg
    return base + width * fg + (width * bg if 0 < bg < MIN_BG_FRACTION * voxels else 8)


def spleen_full_geometry(index: int, seed: int = 0) -> tuple[tuple[int, int, int], int]:
    """``(shape, foreground voxels)`` of spleen-full volume ``index`` after the spleen prefix.

    ``Spacingd`` to ``workload.PIXDIM`` scales each axis by spacing / pixdim; ``CropForegroundd`` keeps
    the body: the bounding box of its outer ellipse (inner semi-axes + fat) in plane, every slice in
    z. The foreground is the rendered spleen mask's voxel count scaled by the voxel-volume ratio.
    """
    from fastpipe.datasets._phantom import spleen_mask
    from fastpipe.datasets.synth import volume_params

    p = volume_params("spleen-full", seed, index)
    resampled = [round(n * s / t) for n, s, t in zip(p.shape, p.spacing, workload.PIXDIM, strict=True)]
    body = [
        math.ceil(2 * (semi + p.fat) / t) for semi, t in zip(p.inner_semi, workload.PIXDIM[:2], strict=True)
    ]
    shape = (min(resampled[0], body[0]), min(resampled[1], body[1]), resampled[2])
    _, mask = spleen_mask(p)
    scale = math.prod(p.spacing) / math.prod(workload.PIXDIM)
    return shape, round(int(mask.sum()) * scale)


def budget_fit(budget: int, volumes: int, seed: int = 0) -> dict[str, Any]:
    """Spleen-full look-alike volumes that fit ``budget`` bytes, per form, from the preset's geometry."""
    geo = [spleen_full_geometry(i, seed) for i in range(volumes)]
    out: dict[str, Any] = {"budget_bytes": budget, "preset_volumes": volumes, "seed": seed}
    voxels = [math.prod(s) for s, _ in geo]
    out["mean_voxels"] = sum(voxels) / volumes
    out["mean_fg_fraction"] = sum(f / v for (_, f), v in zip(geo, voxels, strict=True)) / volumes
    for form in FORMS:
        per = [entry_bytes(v, f, form) for v, (_, f) in zip(voxels, geo, strict=True)]
        mean = sum(per) / volumes
        out[form] = {
            "mean_bytes_per_volume": mean,
            "fit": int(budget // mean),
            "image_ratio": mean / (4 * out["mean_voxels"]),
        }
    out["fit_gain"] = out["compact"]["fit"] / max(out["lists"]["fit"], 1)
    return out


def build(data: list[dict], form: str, patch: tuple[int, int, int], workers: int) -> tuple[Any, Any]:
    """The ``CacheDataset`` and ``ThreadDataLoader`` of one peer (the compact form switched off for ``lists``)."""
    import fastpipe as fp
    from fastpipe import transforms as T
    from fastpipe.transforms import _compact_indices

    crop = T.RandCropByPosNegLabeld(workload.KEYS, **{**workload.CROP, "spatial_size": patch})
    _compact_indices.ENABLED = form == "compact"
    try:
        ds = fp.CacheDataset(data, [*workload.volume_prefix(T), crop], num_workers=workers, progress=False)
    finally:
        _compact_indices.ENABLED = True
    return ds, fp.ThreadDataLoader(ds, batch_size=BATCH, shuffle=True)


def footprint(ds: Any, data: list[dict]) -> dict[str, Any]:
    """Bytes per entry by tensor, over the image's float32 bytes, and the closed form's agreement."""
    eb = ds.stats()["entry_bytes"]
    image = eb["by_tensor"]["image"]
    label = ds.cached_entry(0)["label"]
    voxels = label[0].numel()
    fg = int((label[0] != 0).sum())
    form = "compact" if eb["background"]["rejection"] else "lists"
    return {
        "bytes_per_entry": eb["bytes_per_entry"],
        "by_tensor": eb["by_tensor"],
        "background": eb["background"],
        "image_ratio": eb["bytes_per_entry"] / image,
        "closed_form_entry0": entry_bytes(voxels, fg, form),
        "measured_entry0": sum(
            v.numel() * v.element_size() for v in ds.cached_entry(0).values() if hasattr(v, "element_size")
        ),
    }


def _epoch(loader: Any) -> float:
    """Seconds of one epoch, run in a background thread (where loader peers make their batches)."""
    out: list[float] = []

    def run() -> None:
        t0 = time.perf_counter()
        for _ in loader:
            pass
        out.append(time.perf_counter() - t0)

    worker = threading.Thread(target=run, name="cache-footprint-epoch")
    worker.start()
    worker.join()
    return out[0]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    machine = machine_info()  # the commit the run starts on (the result may be written minutes later)
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--volumes", type=int, default=8)
    p.add_argument("--shape", type=int, nargs=3, default=(240, 210, 250))
    p.add_argument("--patch", type=int, nargs=3, default=workload.PATCH)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--workers", type=int, default=4, help="cache-fill threads")
    p.add_argument("--budget-gib", type=float, default=8.0)
    p.add_argument(
        "--geometry-volumes", type=int, default=None, help="spleen-full volumes (default: the preset's)"
    )
    p.add_argument("--seed", type=int, default=0, help="the synth seed of the spleen-full geometry")
    p.add_argument(
        "--out", type=Path, default=None, help="result path (default benchmarks/results/cache-footprint.json)"
    )
    args = p.parse_args(argv)
    from fastpipe.datasets._phantom import PRESETS

    data = workload.make_volumes(args.volumes, tuple(args.shape))
    peers = {form: build(data, form, tuple(args.patch), args.workers) for form in FORMS}
    sizes = {form: footprint(ds, data) for form, (ds, _) in peers.items()}
    epochs = interleaved(
        list(FORMS), lambda f: _epoch(peers[f][1]), args.epochs, args.warmup, order="alternate"
    )
    times = {form: spread(epochs[form]) for form in FORMS}
    ratio = times["compact"]["median"] / times["lists"]["median"]
    volumes = args.geometry_volumes or PRESETS["spleen-full"].num_volumes
    payload = {
        "config": {**vars(args), "out": str(args.out) if args.out else None, "batch": BATCH},
        "bytes": sizes,
        "epoch_s": times,
        "epoch_ratio_compact_over_lists": ratio,
        "epoch_target": TARGET_EPOCH_RATIO,
        "epoch_within_target": ratio <= TARGET_EPOCH_RATIO,
        "spleen_full_fit": budget_fit(int(args.budget_gib * GIB), volumes, args.seed),
    }
    for ds, _ in peers.values():
        ds.close()
    path = write_result("cache-footprint", payload, args.out, machine=machine)
    print(f"wrote {path}")
    for form in FORMS:
        fit = payload["spleen_full_fit"][form]
        print(
            f"{form:8s} {sizes[form]['image_ratio']:.2f}x image bytes; epoch {times[form]['median']:.3f} s; "
            f"spleen-full: {fit['mean_bytes_per_volume'] / 2**20:.1f} MiB/volume, {fit['fit']} fit in {args.budget_gib:g} GiB"
        )
    print(f"epoch compact / lists = {ratio:.3f} (target <= {TARGET_EPOCH_RATIO})")
    return payload


if __name__ == "__main__":
    main()
