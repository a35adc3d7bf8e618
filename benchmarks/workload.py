"""The shared spleen workload: the transform chain (built identically for fastpipe and MONAI,
DESIGN.md steps 1-12; the tutorial suffix,
steps 10-12, is written once in :func:`tutorial_suffix`, and "crop only" chains stop at step 9), the crop parameters, and where the volumes come from.

Every benchmark that measures the spleen pipeline takes its chain and data from here, so the
scripts cannot drift apart.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent

KEYS = ["image", "label"]
PIXDIM = (1.5, 1.5, 2.0)
PATCH = (96, 96, 96)
NUM_SAMPLES = 4
SCALE = {"a_min": -57, "a_max": 164, "b_min": 0.0, "b_max": 1.0, "clip": True}
FG_KEY, BG_KEY = "label_fg_indices", "label_bg_indices"
#: RandCropByPosNegLabeld's arguments, the same for fastpipe and MONAI
CROP = {
    "label_key": "label",
    "spatial_size": PATCH,
    "pos": 1,
    "neg": 1,
    "num_samples": NUM_SAMPLES,
    "fg_indices_key": FG_KEY,
    "bg_indices_key": BG_KEY,
}


#: MONAI's spleen fast-training tutorial suffix after the crop (DESIGN.md steps 10-12)
FLIP_PROB, ROT90_PROB, ROT90_MAX_K, SHIFT_OFFSETS, SHIFT_PROB = 0.10, 0.10, 3, 0.10, 0.50


def tutorial_suffix(T: Any) -> list[Any]:
    """Steps 10-12 built from module ``T`` (``monai.transforms`` or ``fastpipe.transforms``): ``RandFlipd``
    on each spatial axis, ``RandRotate90d``, ``RandShiftIntensityd``."""
    flips = [T.RandFlipd(KEYS, spatial_axis=[axis], prob=FLIP_PROB) for axis in range(3)]
    return [
        *flips,
        T.RandRotate90d(KEYS, prob=ROT90_PROB, max_k=ROT90_MAX_K),
        T.RandShiftIntensityd("image", offsets=SHIFT_OFFSETS, prob=SHIFT_PROB),
    ]


def fastpipe_random(tutorial: bool = True) -> list[Any]:
    """fastpipe's random part: the crop, then (``tutorial``) the tutorial suffix under MONAI's names."""
    from fastpipe import transforms as T

    return [fastpipe_crop(), *(tutorial_suffix(T) if tutorial else [])]


def prefix(T: Any) -> list[Any]:
    """The deterministic prefix (steps 1-7) built from module ``T``: ``fastpipe.transforms`` or
    ``monai.transforms`` (same names, same keyword arguments)."""
    return [
        T.LoadImaged(KEYS),
        T.EnsureChannelFirstd(KEYS),
        T.Orientationd(KEYS, axcodes="RAS"),
        T.Spacingd(KEYS, pixdim=PIXDIM, mode=("bilinear", "nearest")),
        T.ScaleIntensityRanged("image", **SCALE),
        T.CropForegroundd(KEYS, source_key="image", allow_smaller=True),
        T.FgBgToIndicesd("label"),
    ]


def fastpipe_chain(device: str | None = None, crop: bool = True, tutorial: bool = True) -> list[Any]:
    """fastpipe's spleen chain; ``device`` inserts ``ToDeviced`` (the GPU cache point); ``tutorial=False``
    stops at the crop ("crop only")."""
    from fastpipe import transforms as T

    chain = prefix(T)
    if device is not None:
        chain.append(T.ToDeviced([*KEYS, FG_KEY, BG_KEY], device=device))
    if crop:
        chain.extend(fastpipe_random(tutorial))
    return chain


def fastpipe_crop():
    """fastpipe's batched pos/neg crop with the benchmark's parameters."""
    from fastpipe import transforms as T

    return T.RandCropByPosNegLabeld(KEYS, **CROP)


def monai_chain(
    device: str | None = None, crop: bool = True, track_meta: bool = False, tutorial: bool = True
) -> list[Any]:
    """MONAI 1.6's spleen chain at best practice (indices precomputed, ``track_meta=False``);
    ``tutorial=False`` stops at the crop ("crop only")."""
    from monai import transforms as M

    chain = prefix(M)
    if not track_meta:
        chain.append(M.EnsureTyped([*KEYS, FG_KEY, BG_KEY], track_meta=False))
    if device is not None:
        chain.append(M.ToDeviced(KEYS, device=device))
    if crop:
        chain.append(M.RandCropByPosNegLabeld(KEYS, **CROP))
        if tutorial:
            chain.extend(tutorial_suffix(M))
    return chain


def dataset_root(args: argparse.Namespace) -> Path:
    """The MSD folder to use (``args.data``), generating the look-alike ``args.preset`` when it is missing."""
    if args.data is not None:
        return args.data
    root = REPO / "data" / args.preset
    if not (root / "dataset.json").exists():
        from fastpipe.datasets import synthesize

        print(f"generating look-alike data: {args.preset} -> {root}", flush=True)
        synthesize(root, preset=args.preset, seed=0, progress=True)
    return root


def load_data(args: argparse.Namespace) -> list[dict]:
    """The training items of :func:`dataset_root`, the first ``args.num_volumes`` of them when set."""
    from fastpipe.datasets import load_decathlon_datalist

    data = load_decathlon_datalist(dataset_root(args))
    return data[: args.num_volumes] if args.num_volumes else data


def make_volumes(n: int, shape: tuple[int, int, int], seed: int = 0) -> list[dict[str, Any]]:
    """``n`` in-memory items as MSD files hold them: int16 HU-like image ``(1, *shape)``, uint8 organ label."""
    import torch

    g = torch.Generator().manual_seed(seed)
    grids = torch.meshgrid(*[torch.linspace(-1, 1, s) for s in shape], indexing="ij")
    out = []
    for i in range(n):
        c = (torch.rand(3, generator=g) - 0.5) * 0.6
        r = 0.15 + torch.rand(3, generator=g) * 0.1
        organ = sum(((x - ci) / ri) ** 2 for x, ci, ri in zip(grids, c, r, strict=True)) <= 1
        img = torch.randint(-200, 300, shape, generator=g, dtype=torch.int16)
        img[organ] = torch.randint(40, 160, (int(organ.sum()),), generator=g, dtype=torch.int16)
        meta = {"filename_or_obj": f"synthetic/spleen_{i}.nii.gz"}  # as a loaded item has; names errors
        out.append({"image": img[None], "label": organ[None].to(torch.uint8), "image_meta_dict": meta})
    return out


def volume_prefix(T: Any) -> list[Any]:
    """The cached part of the chain for :func:`make_volumes` items (intensity scaling, crop indices),
    built from ``fastpipe.transforms`` or ``monai.transforms``."""
    return [T.ScaleIntensityRanged("image", **SCALE), T.FgBgToIndicesd("label")]


def smart_cache_loader(
    data: list[dict],
    chain: list[Any],
    cache_num: int,
    replace_rate: float,
    threads: int,
    batch_size: int,
    seed: int,
    persist_dir: str | None = None,
) -> tuple[Any, Any, Any]:
    """fastpipe's SmartCache peer: ``(dataset, loader, close)``, replacement started, persistent loader.

    ``persist_dir``: the dataset's persistent cache folder (default ``None``: none).
    """
    import fastpipe as fp

    ds = fp.SmartCacheDataset(
        data,
        chain,
        cache_num=cache_num,
        replace_rate=replace_rate,
        num_init_workers=threads,
        num_replace_workers=threads,
        progress=False,
        seed=seed,
        persist_dir=persist_dir,
    )
    ds.start()
    loader = fp.ThreadDataLoader(ds, batch_size=batch_size, shuffle=True, seed=seed, persistent_workers=True)

    def close() -> None:
        loader.close()
        ds.close()  # shutdown() keeps the window (MONAI's restart); close() frees it

    return ds, loader, close
