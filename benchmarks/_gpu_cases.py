"""The correctness cases of ``benchmarks.gpu_check``: the CUDA crop against the torch path, bit for bit.

:func:`matches` (section ``cuda_matches_torch``) runs every case of :func:`crop_cases`: each dtype on
windows at both borders and the middle of every axis, denormal float32 values, and a uint8 volume past
2**31 voxels (64-bit offsets); :func:`sanitize_target` is what ``compute-sanitizer`` runs. Like the
timed sections (``_gpu_sections.py``), each takes the device and the backend, so that a CPU dry run
exercises the same code; fastpipe is imported inside the functions.
"""

from __future__ import annotations

import inspect
import itertools
from typing import Any

import torch

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


def sanitize_target(device: torch.device) -> None:
    """What ``compute-sanitizer`` runs: the crop and sampler kernels on small cases of every kind."""
    for case in crop_cases(device, small=True):
        compare_case(case, "cuda")
    from benchmarks.crop_speed import INDEX_KEYS, KEYS, make_items
    from fastpipe.transforms import RandCropByPosNegLabeld

    t = RandCropByPosNegLabeld(KEYS, "label", (8, 8, 8), num_samples=4, **INDEX_KEYS).set_random_state(0)
    t.batch_call(make_items(2, (40, 36, 30), device.type))
    torch.cuda.synchronize()
