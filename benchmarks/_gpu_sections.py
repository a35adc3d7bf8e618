"""The measurements of ``benchmarks.gpu_check``: one function per section, each returning its JSON keys.

Every section takes the device and the backend it measures, so that a CPU dry run (``device="cpu"``,
``backend="torch"``, ``small=True``) exercises the same code paths as the GPU run. Imports of
fastpipe happen inside the functions: the check installs missing wheels before the first one.
"""

from __future__ import annotations

import inspect
import itertools
import statistics
from typing import Any

import torch

from benchmarks._gpu_timing import kernel_s, new_info, wall_s

WINDOW = (96, 96, 96)
FULL_SHAPE = (512, 512, 200)  # a CT volume as cached after loading
HUGE_SHAPE = (1300, 1300, 1300)  # 2.197e9 voxels > 2**31: 64-bit offsets
DTYPES = {
    "f32": torch.float32,
    "f16": torch.float16,
    "bf16": torch.bfloat16,
    "u8": torch.uint8,
    "i16": torch.int16,
}
_BITS = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def border_starts(shape: tuple[int, ...], window: tuple[int, ...]) -> list[tuple[int, ...]]:
    """Window starts at both borders and the middle of every axis: 27 windows in 3-D."""
    per_axis = [sorted({0, (s - w) // 2, s - w}) for s, w in zip(shape, window, strict=True)]
    return list(itertools.product(*per_axis))


def _volume(
    shape: tuple[int, ...], dtype: torch.dtype, device: torch.device, gen: torch.Generator
) -> torch.Tensor:
    if dtype.is_floating_point:
        return (torch.randn((1, *shape), generator=gen) * 100).to(device=device, dtype=dtype)
    info = torch.iinfo(dtype)
    return torch.randint(info.min, info.max, (1, *shape), generator=gen, dtype=dtype).to(device)


def crop_case(name, volumes, starts, window, gen, intensity, device, rotate=True) -> dict[str, Any]:
    """The arguments of one ``crop_batch`` call: every start on alternating volumes, random flips/axes."""
    n = len(starts)
    case = {
        "name": name,
        "volumes": volumes,
        "starts": torch.tensor(starts, dtype=torch.int64, device=device),
        "vol_index": (torch.arange(n) % len(volumes)).to(device),
        "size": window,
        "flips": (torch.rand((n, 3), generator=gen) < 0.5).to(device),
    }
    if rotate and "axes" in inspect.signature(_crop_batch()).parameters:
        perms = list(itertools.permutations(range(3)))
        pick = torch.randint(0, len(perms), (n,), generator=gen).tolist()
        case["axes"] = torch.tensor([perms[p] for p in pick], dtype=torch.int64, device=device)
    if intensity:
        case["scale"] = (0.5 + torch.rand(n, generator=gen)).to(device)
        case["shift"] = (torch.rand(n, generator=gen) - 0.5).to(device)
    return case


def _crop_batch():
    from fastpipe.ops import crop_batch

    return crop_batch


def crop_cases(device: torch.device, small: bool = False):
    """Yield the cases of ``cuda_matches_torch`` one at a time (each frees its volumes after use)."""
    gen = torch.Generator().manual_seed(0)
    shape = (40, 36, 30) if small else FULL_SHAPE
    window = (8, 8, 8) if small else WINDOW
    for label, dtype in DTYPES.items():
        vols = [_volume(shape, dtype, device, gen) for _ in range(2)]
        yield crop_case(
            f"{label} {shape} borders",
            vols,
            border_starts(shape, window),
            window,
            gen,
            dtype == torch.float32,
            device,
        )
    tiny = torch.rand((1, 16, 16, 16), generator=gen) * 1e-38  # denormal float32 values (< 1.18e-38)
    starts = border_starts((16, 16, 16), (8, 8, 8))
    yield crop_case("f32 denormals", [tiny.to(device)], starts, (8, 8, 8), gen, True, device)
    huge = (40, 40, 40) if small else HUGE_SHAPE
    vol = torch.zeros((1, *huge), dtype=torch.uint8, device=device)
    vol[..., -window[2] :] = 7  # distinct values near the end of the 64-bit range
    vol[0, -1, -1, -1] = 255
    corners = list(itertools.product(*[(0, s - w) for s, w in zip(huge, window, strict=True)]))
    yield crop_case(
        f"u8 {huge} past 2^31" if not small else "u8 large (small run)",
        [vol],
        corners,
        window,
        gen,
        False,
        device,
    )


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous().view(_BITS[t.element_size()])


def compare_case(case: dict[str, Any], backend: str) -> dict[str, Any]:
    """``crop_batch(backend=backend)`` against ``backend="torch"``: bit-for-bit equality and the largest difference."""
    crop_batch = _crop_batch()
    args = {k: v for k, v in case.items() if k not in ("name", "volumes", "starts", "vol_index", "size")}
    ref = crop_batch(
        case["volumes"], case["starts"], case["vol_index"], case["size"], backend="torch", **args
    )
    got = crop_batch(
        case["volumes"], case["starts"], case["vol_index"], case["size"], backend=backend, **args
    )
    equal = ref.shape == got.shape and ref.dtype == got.dtype and torch.equal(_bits(ref), _bits(got))
    diff = (ref.double() - got.double()).abs().max().item() if ref.shape == got.shape else float("inf")
    return {
        "case": case["name"],
        "dtype": str(ref.dtype).replace("torch.", ""),
        "crops": int(case["starts"].shape[0]),
        "flips": True,
        "rotations": "axes" in case,
        "intensity": "scale" in case,
        "bit_equal": bool(equal),
        "max_abs_diff": diff,
    }


def matches(device: torch.device, backend: str = "cuda", small: bool = False) -> dict[str, Any]:
    """Section ``cuda_matches_torch``: every case of :func:`crop_cases`."""
    results = []
    for case in crop_cases(device, small):
        try:
            results.append(compare_case(case, backend))
        except Exception as err:  # noqa: BLE001 - one failing case is a result, the others still run
            results.append(
                {"case": case["name"], "bit_equal": False, "error": f"{type(err).__name__}: {err}"}
            )
        del case
        if device.type == "cuda":
            torch.cuda.empty_cache()
    rotations = any(r.get("rotations") for r in results)
    return {
        "cuda_matches_torch": all(r["bit_equal"] for r in results),
        "match_cases": results,
        "rotations_checked": rotations,
    }


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


LANES_SWEEP = (2, 3, 4, 5)  # log2 threads per output row: 4 to a warp (32)


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
    return {
        "gpu_vs_cpu_crop_speedup": times["cpu"] / times[device.type],
        "crop_batch_s": times,
        "crop_batch_timing": "wall: perf_counter between synchronizations",
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
    one_crop = PATCH[0] * PATCH[1] * PATCH[2] * 4
    return {
        "cached_epoch_h2d_bytes": run["h2d_bytes_per_epoch"][0],
        "cached_epoch_h2d_copies": run["epochs"][0]["h2d_count"],
        "cached_epoch_largest_h2d_copy": run["largest_h2d_copy"],
        "cached_epoch_cache_h2d_bytes": cache_h2d,
        "cached_epoch_no_volume_bytes": run["largest_h2d_copy"] < one_crop and cache_h2d == 0,
        "cached_epoch_crop_bytes": run["crop_bytes_per_epoch"],
    }


def sanitize_target(device: torch.device) -> None:
    """What ``compute-sanitizer`` runs: the crop and sampler kernels on small cases of every kind."""
    for case in crop_cases(device, small=True):
        compare_case(case, "cuda")
    from benchmarks.crop_speed import INDEX_KEYS, KEYS, make_items
    from fastpipe.transforms import RandCropByPosNegLabeld

    t = RandCropByPosNegLabeld(KEYS, "label", (8, 8, 8), num_samples=4, **INDEX_KEYS).set_random_state(0)
    t.batch_call(make_items(2, (40, 36, 30), device.type))
    torch.cuda.synchronize()
