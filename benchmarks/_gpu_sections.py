"""The timed measurements of ``benchmarks.gpu_check``: one function per section, each returning its JSON keys.

Every section takes the device and the backend it measures, so that a CPU dry run (``device="cpu"``,
``backend="torch"``, ``small=True``) exercises the same code paths as the GPU run. Imports of
fastpipe happen inside the functions: the check installs missing wheels before the first one. The
correctness cases (CUDA against torch, bit for bit) are in ``_gpu_cases.py``.
"""

from __future__ import annotations

import statistics
from typing import Any

import torch

from benchmarks._gpu_cases import WINDOW, _crop_batch
from benchmarks._gpu_timing import kernel_s, new_info, wall_s


def bandwidth(
    device: torch.device, backend: str = "cuda", small: bool = False, repeats: int = 20
) -> dict[str, Any]:
    """Section ``crop_kernel_gbps`` / ``d2d_copy_gbps``: crop bytes read+written per second vs a copy of as many bytes."""
    crop_batch = _crop_batch()
    shape, window, vols_n, per_vol = (
        ((40, 36, 30), (8, 8, 8), 2, 4) if small else ((240, 210, 250), WINDOW, 8, 8)
    )
    gen = torch.Generator().manual_seed(1)
    vols = [torch.rand((1, *shape), generator=gen).to(device) for _ in range(vols_n)]
    n = vols_n * per_vol
    starts = torch.stack(
        [torch.randint(0, s - w + 1, (n,), generator=gen) for s, w in zip(shape, window, strict=True)], 1
    )
    vol_index = torch.arange(n) // per_vol
    starts, vol_index = starts.to(device), vol_index.to(device)
    out = torch.empty((n, 1, *window), device=device)
    inner = 1 if small else 5  # back to back, queued while the GPU sleeps: the kernels, not the launches
    timing = new_info()
    crop_s = kernel_s(
        lambda: crop_batch(vols, starts, vol_index, window, out=out, backend=backend, check_bounds=False),
        device,
        repeats,
        inner=inner,
        info=timing,
    )
    src, dst = torch.empty_like(out), torch.empty_like(out)
    copy_s = kernel_s(lambda: dst.copy_(src), device, repeats, inner=inner, info=timing)
    moved = 2 * out.numel() * out.element_size()  # each byte read once and written once
    crop_gbps = moved / statistics.median(crop_s) / 1e9
    copy_gbps = moved / statistics.median(copy_s) / 1e9
    batch = _batch_bandwidth(vols, starts, vol_index, window, out, device, backend, repeats, (inner, timing))
    return {
        "crop_kernel_gbps": crop_gbps,
        "d2d_copy_gbps": copy_gbps,
        "kernel_fraction_of_copy": crop_gbps / copy_gbps,
        **batch,
        "bandwidth_config": {
            "volumes": vols_n,
            "crops": n,
            "window": window,
            "bytes_moved": moved,
            "repeats": repeats,
            "calls_per_timing": inner,
        },
        "bandwidth_timing": timing,
    }


LANES_SWEEP = (0, 1, 2, 3, 4, 5)  # log2 threads per output row: 1 to a warp (32)


def _batch_bandwidth(vols, starts, vol_index, window, out, device, backend, repeats, timed) -> dict[str, Any]:
    """``batch_kernel_gbps``: a training batch's crop, a float32 image and its uint8 label in one
    ``crop_batches`` call (one launch on the CUDA kernel), against one copy of as many bytes.

    ``batch_kernel_gbps_by_lanes``: the same batch with at most ``2**k`` threads per output row, for
    each ``k`` of :data:`LANES_SWEEP` (fewer threads per row: more 8-byte chunks each for one row's
    setup); the default (a warp) is the last. Only the kernel reads the cap, so on the torch backend the
    sweep times the same path each time.

    ``tutorial_batch_kernel_gbps``: the same batch with the tutorial suffix's draws (flips, quarter
    turns, the image's shift; :func:`tutorial_op_args`), the launch a training batch really makes; a
    crop whose last axis is flipped takes the kernel's element-by-element path.
    """
    from fastpipe.ops import _cuda_crop
    from fastpipe.ops._backends import crop_batches

    inner, info = timed
    labels = [(v > 0.5).to(torch.uint8) for v in vols]
    lab_out = torch.empty(out.shape, dtype=torch.uint8, device=device)
    calls = [
        dict(volumes=vols, starts=starts, vol_index=vol_index, size=window, out=out, check_bounds=False),
        dict(volumes=labels, starts=starts, vol_index=vol_index, size=window, out=lab_out, check_bounds=False),
    ]  # fmt: skip
    nbytes = out.numel() * out.element_size() + lab_out.numel()
    by_lanes, default = {}, _cuda_crop.MAX_LANES_LOG2
    try:
        for k in (*[k for k in LANES_SWEEP if k != default], default):  # the default last: its figure below
            _cuda_crop.MAX_LANES_LOG2 = k
            batch_s = kernel_s(
                lambda: crop_batches(calls, backend=backend), device, repeats, inner=inner, info=info
            )
            by_lanes[str(2**k)] = 2 * nbytes / statistics.median(batch_s) / 1e9
    finally:
        _cuda_crop.MAX_LANES_LOG2 = default
    src, dst = (
        torch.empty(nbytes, dtype=torch.uint8, device=device),
        torch.empty(nbytes, dtype=torch.uint8, device=device),
    )
    copy_s = kernel_s(lambda: dst.copy_(src), device, repeats, inner=inner, info=info)
    batch_gbps = by_lanes[str(2**default)]
    copy_gbps = 2 * nbytes / statistics.median(copy_s) / 1e9
    args = tutorial_op_args(starts.shape[0])
    for c, key in zip(calls, ("image", "label"), strict=True):
        c.update(args[key])
    tut_s = kernel_s(lambda: crop_batches(calls, backend=backend), device, repeats, inner=inner, info=info)
    tut_gbps = 2 * nbytes / statistics.median(tut_s) / 1e9
    img = args["image"]
    moved = torch.zeros(starts.shape[0], dtype=torch.bool)
    if img["axes"] is not None:
        moved = (img["axes"] != torch.arange(3)).any(1) | img["flips"].any(1)
    shifted = int((img["shift"] != 0).sum()) if img["shift"] is not None else 0
    return {"batch_kernel_gbps": batch_gbps, "batch_d2d_copy_gbps": copy_gbps,
            "batch_fraction_of_copy": batch_gbps / copy_gbps,
            "batch_kernel_gbps_by_lanes": dict(sorted(by_lanes.items(), key=lambda kv: int(kv[0]))),
            "tutorial_batch_kernel_gbps": tut_gbps, "tutorial_batch_fraction_of_copy": tut_gbps / copy_gbps,
            "tutorial_batch_crops_flipped_or_turned": int(moved.sum()), "tutorial_batch_crops_shifted": shifted}  # fmt: skip


def tutorial_op_args(n: int, seed: int = 2) -> dict[str, dict[str, Any]]:
    """The crop op's arguments per key (``axes``, ``flips``, ``scale``, ``shift``) for ``n`` crops, drawn by
    fastpipe's own fused tutorial suffix (:func:`benchmarks.workload.tutorial_suffix`)."""
    from benchmarks.workload import KEYS, tutorial_suffix
    from fastpipe import transforms as T
    from fastpipe.transforms._crop_suffix import KeyPlans, draw_suffix

    augs = tutorial_suffix(T)
    plans = KeyPlans(augs, draw_suffix(augs, n, torch.Generator().manual_seed(seed)), n)
    return {k: plans.get(k)[1] for k in KEYS}


def speedup(device: torch.device, small: bool = False, repeats: int = 5) -> dict[str, Any]:
    """Section ``gpu_vs_cpu_crop_speedup``: one batch of RandCropByPosNegLabeld (sample + crop), CPU vs ``device``."""
    from benchmarks.crop_speed import INDEX_KEYS, KEYS, make_items
    from fastpipe.transforms import RandCropByPosNegLabeld

    shape, window = ((40, 36, 30), (8, 8, 8)) if small else ((240, 210, 250), WINDOW)
    times = {}
    for where in ("cpu", device.type):
        dev = torch.device(where)
        items = make_items(4, shape, where)
        t = RandCropByPosNegLabeld(KEYS, "label", window, num_samples=4, **INDEX_KEYS).set_random_state(0)
        times[where] = statistics.median(wall_s(lambda t=t, items=items: t.batch_call(items), dev, repeats))
    from fastpipe.ops._backends import cuda_kernels_available

    return {
        "gpu_vs_cpu_crop_speedup": times["cpu"] / times[device.type],
        "crop_batch_s": times,
        "crop_batch_timing": "wall: perf_counter between synchronizations",
        # without a working CuPy the device's crop takes the torch path: say which one was timed
        "crop_backend": "cuda kernel" if device.type == "cuda" and cuda_kernels_available() else "torch",
    }


def voxel_augments(device: torch.device, small: bool = False, repeats: int = 5) -> dict[str, Any]:
    """Section ``voxel_augment``: ``RandGaussianNoised`` then ``RandAdjustContrastd`` (MONAI's defaults but
    ``prob=1``: every crop fires) on one training batch of crops on ``device``: fastpipe's on the stacked
    batch against MONAI's objects per crop (``set_track_meta(False)``, the crops stacked again after)."""
    import monai.transforms as M
    from monai.data import get_track_meta, set_track_meta

    from fastpipe import transforms as T

    n, window = (4, (8, 8, 8)) if small else (8, WINDOW)
    base = torch.rand((n, 1, *window), generator=torch.Generator().manual_seed(0)).to(device)
    ours = [T.RandGaussianNoised("image", prob=1.0), T.RandAdjustContrastd("image", prob=1.0)]
    theirs = [M.RandGaussianNoised("image", prob=1.0), M.RandAdjustContrastd("image", prob=1.0)]
    for i, t in enumerate([*ours, *theirs]):
        t.set_random_state(i)

    def on_batch() -> None:
        batch = {"image": base.clone()}
        for t in ours:
            batch = t.apply_batch(batch, t.draw(n))

    def per_crop() -> None:
        crops = [{"image": c} for c in base.clone()]
        for t in theirs:
            crops = [t(c) for c in crops]
        torch.stack([torch.as_tensor(c["image"]) for c in crops])

    before = get_track_meta()
    set_track_meta(False)
    try:
        ours_s = statistics.median(wall_s(on_batch, device, repeats))
        theirs_s = statistics.median(wall_s(per_crop, device, repeats))
    finally:
        set_track_meta(before)
    return {
        "voxel_augment_crops": n,
        "voxel_augment_batch_ms": ours_s * 1e3,
        "voxel_augment_monai_per_crop_ms": theirs_s * 1e3,
        "voxel_augment_speedup": theirs_s / ours_s,
        "voxel_augment_timing": "wall: perf_counter between synchronizations",
    }


def cached_epoch_h2d(volumes: int = 4, shape: tuple[int, int, int] = (200, 180, 160)) -> dict[str, Any]:
    """Section ``cached_epoch_h2d_bytes``: driver-counted host-to-device bytes of one GPU-cached epoch."""
    from benchmarks.gpu_copies import build, count_epochs
    from benchmarks.workload import PATCH, make_volumes

    ds, loader = build(make_volumes(volumes, shape), "cuda")
    try:
        run = count_epochs(loader, 1, None)
        cache_h2d = ds.stats()["h2d_bytes"]
    finally:
        loader.close()
        ds.close()
    # the smallest crop of a batch: the uint8 label's (one byte a voxel); a copy of one label crop (or of
    # any volume data as big) is volume data crossing, not crop parameters
    one_crop = PATCH[0] * PATCH[1] * PATCH[2]
    return {
        "cached_epoch_h2d_bytes": run["h2d_bytes_per_epoch"][0],
        "cached_epoch_h2d_copies": run["epochs"][0]["h2d_count"],
        "cached_epoch_largest_h2d_copy": run["largest_h2d_copy"],
        "cached_epoch_cache_h2d_bytes": cache_h2d,
        "cached_epoch_no_volume_bytes": run["largest_h2d_copy"] < one_crop and cache_h2d == 0,
        "cached_epoch_crop_bytes": run["crop_bytes_per_epoch"],
    }
