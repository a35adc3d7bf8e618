"""Batched RandCropByPosNegLabeld vs MONAI vs a plain copy of the same bytes (and, on a GPU, kernel GB/s).

    python -m benchmarks.crop_speed                       # spleen-sized volumes, CPU (+ GPU when present)
    python -m benchmarks.crop_speed --shape 160 160 160 --volumes 2 --repeats 5

Per batch of B volumes each gives ``num_samples`` crops (float32 image + uint8 label) assembled
into the batch tensors. Peers, side by side on the same volumes and thread count:

- ``fastpipe``: ``RandCropByPosNegLabeld.batch_call`` (indices precomputed, one op per key);
- ``monai``: MONAI 1.6 ``RandCropByPosNegLabeld`` with precomputed indices, ``track_meta=False``,
  on items as MONAI's chain caches them (float32 label: MONAI's ``LoadImaged`` converts),
  then ``list_data_collate`` (its documented best settings); ``monai_meta``: the same with MONAI's
  default ``track_meta=True`` (MetaTensor outputs);
- ``copy``: the physical floor, ``copy_`` of the same windows (same count and size, uniform random
  starts, no sampling) from the same volumes into preallocated batch buffers, the plain-copy
  baseline ``benchmarks.cached_epoch`` uses too; ``copy_contiguous``: ``copy_`` of as many bytes from
  one contiguous, cache-warm buffer (optimistic: no strided reads, partly L3-resident), and
  ``copy_alloc``: that into freshly allocated buffers (what any op returning new tensors pays).

On a GPU it also times the crop kernel for 8 volumes x 4 crops against the device-to-device copy
bandwidth, and sampling the centres against cutting the crops. Results: JSON under
``benchmarks/results/`` or ``--out DIR`` (``crop-speed-cpu.json``, ``crop-speed-gpu.json``).
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import torch

from benchmarks.common import (
    RESULTS_DIR,
    interleaved,
    machine_info,
    spread,
    time_repeats,
    time_s,
    write_result,
)
from fastpipe.ops import crop_batch
from fastpipe.ops.indices import fg_bg_indices
from fastpipe.transforms import RandCropByPosNegLabeld

KEYS = ["image", "label"]
INDEX_KEYS = {
    "fg_indices_key": "label_fg_indices",
    "bg_indices_key": "label_bg_indices",
}  # make_items's lists


def make_items(n: int, shape: tuple[int, int, int], device: str = "cpu", seed: int = 0) -> list[dict]:
    """``n`` look-alike cached items: float32 CT-ish image, uint8 label with a spleen-sized blob, indices."""
    g = torch.Generator().manual_seed(seed)
    items = []
    for i in range(n):
        image = torch.rand((1, *shape), generator=g)
        label = torch.zeros((1, *shape), dtype=torch.uint8)
        c = [s // 2 + int(torch.randint(-s // 8, s // 8 + 1, (), generator=g)) for s in shape]
        r = [max(2, s // 8) for s in shape]
        label[0, c[0] - r[0] : c[0] + r[0], c[1] - r[1] : c[1] + r[1], c[2] - r[2] : c[2] + r[2]] = 1
        fg, bg = fg_bg_indices(label)
        d = {"image": image, "label": label, "label_fg_indices": fg, "label_bg_indices": bg}
        items.append({k: v.to(device) for k, v in d.items()} | {"name": f"vol{i}"})
    return items


def cpu_peers(items: list[dict], patch: tuple[int, ...], num_samples: int, repeats: int) -> dict:
    """Seconds per batch of each CPU peer (median, spread) on the same items."""
    from monai.data import list_data_collate, set_track_meta
    from monai.transforms import RandCropByPosNegLabeld as MonaiCrop

    ours = RandCropByPosNegLabeld(
        KEYS, "label", patch, num_samples=num_samples, **INDEX_KEYS
    ).set_random_state(0)
    theirs = MonaiCrop(KEYS, "label", patch, num_samples=num_samples, fg_indices_key="label_fg_indices",
                       bg_indices_key="label_bg_indices")  # fmt: skip
    theirs.set_random_state(0)
    n = len(items) * num_samples
    img_src = torch.rand(n, 1, *patch)
    lab_src = torch.randint(0, 2, (n, 1, *patch), dtype=torch.uint8)
    img_dst, lab_dst = torch.empty_like(img_src), torch.empty_like(lab_src)

    # MONAI's chain caches labels as float32 (its LoadImaged converts); fastpipe keeps the file's uint8.
    monai_items = [d | {"label": d["label"].float()} for d in items]

    def monai_batch():
        return list_data_collate([theirs(d) for d in monai_items])

    def copy_pre():
        img_dst.copy_(img_src), lab_dst.copy_(lab_src)

    g = torch.Generator().manual_seed(1)
    windows = []  # the same number of windows per volume, at uniform random starts (no sampling logic)
    for j in range(n):
        d = items[j // num_samples]
        st = [
            int(torch.randint(0, s - p + 1, (), generator=g))
            for s, p in zip(d["image"].shape[1:], patch, strict=True)
        ]
        windows.append((d, tuple(slice(a, a + p) for a, p in zip(st, patch, strict=True))))

    def copy_windows():
        for j, (d, (sx, sy, sz)) in enumerate(windows):
            img_dst[j].copy_(d["image"][:, sx, sy, sz]), lab_dst[j].copy_(d["label"][:, sx, sy, sz])

    def copy_alloc():
        return img_src.clone(), lab_src.clone()

    def monai_meta_batch():
        set_track_meta(True)
        try:
            return list_data_collate([theirs(d) for d in monai_items])
        finally:
            set_track_meta(False)

    peers = {"fastpipe": lambda: ours.batch_call(items), "monai": monai_batch, "monai_meta": monai_meta_batch,
             "copy": copy_windows, "copy_contiguous": copy_pre, "copy_alloc": copy_alloc}  # fmt: skip
    set_track_meta(False)
    try:  # interleave the peers repeat by repeat so drift (other load, turbo) hits all alike
        for fn in peers.values():
            time_repeats(fn, repeats=0, warmup=2)
        times = interleaved(list(peers), lambda k: time_repeats(peers[k], repeats=1, warmup=0)[0], repeats)
    finally:
        set_track_meta(True)
    out = {k: spread(v) for k, v in times.items()}
    med = {k: v["median"] for k, v in out.items()}
    out["ratios"] = {
        "fastpipe_over_copy": med["fastpipe"] / med["copy"],
        "fastpipe_over_copy_alloc": med["fastpipe"] / med["copy_alloc"],
        "fastpipe_over_copy_contiguous": med["fastpipe"] / med["copy_contiguous"],
        "monai_over_fastpipe": med["monai"] / med["fastpipe"],
        "monai_meta_over_fastpipe": med["monai_meta"] / med["fastpipe"],
        "monai_over_copy": med["monai"] / med["copy"],
    }
    out["per_volume_ms"] = {k: 1e3 * m / len(items) for k, m in med.items()}
    return out


def cuda_time(fn, repeats: int, inner: int = 20) -> list[float]:
    """Seconds per call of ``fn``, by CUDA events around ``inner`` back-to-back calls, ``repeats`` times."""
    return time_s(fn, torch.device("cuda"), repeats, warmup=3, inner=inner)


def raw_kernel_launches(items: list[dict], s, outs: dict[str, torch.Tensor]):
    """A closure making only the crop kernel's one launch for every key (arguments prepared once): the
    kernel's own GB/s."""
    from fastpipe.ops import _cuda_crop

    cupy, kernels = _cuda_crop.load_module()
    stream = cupy.cuda.ExternalStream(torch.cuda.current_stream().cuda_stream)
    calls = [
        dict(volumes=[d[key] for d in items], starts=s.starts, vol_index=s.vol_index, out=out)
        for key, out in outs.items()
    ]
    with stream:
        name, grid, args, launch = _cuda_crop.launch_args(cupy, calls)

    def run():
        with stream:
            kernels[name](grid, _cuda_crop.BLOCK, args)

    run.keep = launch  # the argument tensors must outlive the closure
    return run


def gpu_section(shape, patch, num_samples: int, volumes: int, repeats: int) -> dict:
    """Kernel GB/s vs device-to-device copy, and sampling vs crop time, for ``volumes`` x ``num_samples``."""
    items = make_items(volumes, shape, "cuda")
    t = RandCropByPosNegLabeld(
        KEYS, "label", patch, num_samples=num_samples, backend="cuda", **INDEX_KEYS
    ).set_random_state(0)
    s, _ = t.sample(items)
    outs = {
        k: torch.empty((s.starts.shape[0], 1, *s.size), dtype=items[0][k].dtype, device="cuda") for k in KEYS
    }

    def crop_all():
        for k in KEYS:
            crop_batch(
                [d[k] for d in items],
                s.starts,
                s.vol_index,
                s.size,
                out=outs[k],
                backend="cuda",
                check_bounds=False,
            )

    crop_s = cuda_time(
        crop_all, repeats
    )  # through crop_batch: checks, tables, launch (host overhead included)
    kernel_s = cuda_time(raw_kernel_launches(items, s, outs), repeats)  # the kernels alone
    sample_s = cuda_time(lambda: t.sample(items), repeats)  # indices on the GPU: sample_centers.cu
    cpu_idx = [d | {k: d[k].cpu() for k in ("label_fg_indices", "label_bg_indices")} for d in items]
    sample_cpu_idx_s = cuda_time(lambda: t.sample(cpu_idx), repeats)  # indices left on the host (MONAI's way)
    batch_s = cuda_time(lambda: t.batch_call(items), repeats)
    moved = 2 * sum(o.numel() * o.element_size() for o in outs.values())  # each byte read once, written once
    src = torch.empty(256 * 2**20, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    copy_s = cuda_time(lambda: dst.copy_(src), repeats)
    crop_gbs, kernel_gbs, copy_gbs = (
        moved / statistics.median(crop_s) / 1e9,
        moved / statistics.median(kernel_s) / 1e9,
        2 * src.numel() / statistics.median(copy_s) / 1e9,
    )
    return {
        "volumes": volumes, "num_samples": num_samples, "bytes_moved": moved,
        "crop_s": spread(crop_s), "sample_s": spread(sample_s), "sample_cpu_indices_s": spread(sample_cpu_idx_s),
        "batch_call_s": spread(batch_s),
        "kernel_s": spread(kernel_s), "d2d_copy_s": spread(copy_s), "crop_gbs": crop_gbs,
        "kernel_gbs": kernel_gbs, "d2d_copy_gbs": copy_gbs, "crop_fraction_of_copy_bw": crop_gbs / copy_gbs,
        "kernel_fraction_of_copy_bw": kernel_gbs / copy_gbs,
        "sample_over_crop": statistics.median(sample_s) / statistics.median(crop_s),
    }  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    machine = machine_info()  # the commit the run starts on (the result may be written minutes later)
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--shape", type=int, nargs=3, default=(240, 210, 250), help="volume X Y Z (spleen after crop)"
    )
    p.add_argument("--patch", type=int, nargs=3, default=(96, 96, 96))
    p.add_argument("--num-samples", type=int, default=4)
    p.add_argument("--volumes", type=int, default=2, help="volumes per batch on the CPU")
    p.add_argument("--gpu-volumes", type=int, default=8)
    p.add_argument("--repeats", type=int, default=11)
    p.add_argument(
        "--threads", type=int, default=None, help="torch threads for every peer (default: torch's)"
    )
    p.add_argument("--no-gpu", action="store_true")
    p.add_argument(
        "--out",
        default=None,
        help="folder for crop-speed-cpu.json / crop-speed-gpu.json (default benchmarks/results)",
    )
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    shape, patch = tuple(a.shape), tuple(a.patch)
    config = {"shape": shape, "patch": patch, "num_samples": a.num_samples, "volumes": a.volumes,
              "repeats": a.repeats, "threads": torch.get_num_threads()}  # fmt: skip
    cpu = cpu_peers(make_items(a.volumes, shape), patch, a.num_samples, a.repeats)
    out = Path(a.out) if a.out else RESULTS_DIR
    path = write_result(
        "crop-speed-cpu", {"config": config, "results": cpu}, out / "crop-speed-cpu.json", machine=machine
    )
    print(f"CPU, {a.volumes} volumes x {a.num_samples} crops {patch}, ms per volume (median):")
    for k, v in cpu["per_volume_ms"].items():
        print(f"  {k:11s} {v:8.2f}   (IQR {1e3 * cpu[k]['iqr'] / a.volumes:.2f})")
    print("  " + ", ".join(f"{k} = {v:.2f}" for k, v in cpu["ratios"].items()) + f"\n  -> {path}")
    if torch.cuda.is_available() and not a.no_gpu:
        gpu = gpu_section(shape, patch, a.num_samples, a.gpu_volumes, a.repeats)
        gpu_doc = {"config": config | {"volumes": a.gpu_volumes}, "results": gpu}
        path = write_result("crop-speed-gpu", gpu_doc, out / "crop-speed-gpu.json", machine=machine)
        print(f"GPU {torch.cuda.get_device_name(0)}: kernel {gpu['kernel_gbs']:.0f} GB/s "
              f"({100 * gpu['kernel_fraction_of_copy_bw']:.0f}% of D2D copy {gpu['d2d_copy_gbs']:.0f} GB/s), "
              f"crop_batch incl. host {gpu['crop_gbs']:.0f} GB/s, "
              f"sample/crop time {gpu['sample_over_crop']:.2f}\n  -> {path}")  # fmt: skip


if __name__ == "__main__":
    main()
