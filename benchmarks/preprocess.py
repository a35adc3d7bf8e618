"""The deterministic spleen chain (LoadImaged ... FgBgToIndicesd): fastpipe vs MONAI 1.6, side by side.

    python -m benchmarks.preprocess                                   # 512x512x100, 3 repeats
    python -m benchmarks.preprocess --shape 256 256 60 --repeats 5 --out /tmp/pre.json

Writes one spleen-full-sized look-alike CT (int16 HU, in-plane ~0.8 mm, 2.5 mm slices, MSD-like
affine ``diag(-sx, -sy, sz)``) and its uint8 label as ``.nii.gz`` to a temporary folder, then runs
both chains on it, each in a spawned process of its own (``benchmarks.peer_process``), one after the
other: one warm-up, then the repeats. Every transform
is timed on its own (wall and process CPU seconds); the table and the JSON give medians and
spread. MONAI runs as its spleen tutorial does (default ``track_meta``: Orientationd/Spacingd
need the MetaTensor affine; Spacingd computes in float64 as by default). Floors: the isal gzip
decode of the image file. Both chains' final outputs are compared, so a fast wrong answer shows.
Results: ``benchmarks/results/preprocess-cpu.json`` by default.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from isal import igzip

from benchmarks.common import machine_info, spread, write_result
from benchmarks.workload import PIXDIM, prefix
from fastpipe.datasets._phantom import PRESETS, draw_params, render
from fastpipe.datasets.synth import write_nifti_gz


def make_volume(
    root: Path, shape: tuple[int, int, int], spacing_xy: float, slice_mm: float, seed: int
) -> dict:
    """Write a look-alike spleen CT + label of ``shape`` (X, Y, Z) and return the data item."""
    if shape[0] != shape[1]:
        raise ValueError(f"--shape: in-plane size must be square (the phantom's), got {shape[:2]}")
    preset = PRESETS["spleen-full"]
    preset = type(preset)(**{**preset.__dict__, "shape_xy": shape[0], "z_range": (shape[2], shape[2]),
                             "spacing_xy": (spacing_xy, spacing_xy), "slice_mm": (slice_mm,), "slice_weights": None,
                             "extent_mm": None})  # fmt: skip
    params = draw_params(preset, np.random.default_rng(seed))
    image, label = render(params, np.random.default_rng(seed + 1))
    item = {"image": str(root / "image.nii.gz"), "label": str(root / "label.nii.gz")}
    write_nifti_gz(item["image"], image, params.affine(), params.spacing)
    write_nifti_gz(item["label"], label, params.affine(), params.spacing)
    return item


def run_once(transforms: list, item: dict) -> tuple[dict, list[float], list[float]]:
    """Apply the chain once; wall and CPU seconds per transform."""
    walls, cpus, d = [], [], dict(item)
    for t in transforms:
        w0, c0 = time.perf_counter(), time.process_time()
        d = t(d)
        walls.append(time.perf_counter() - w0)
        cpus.append(time.process_time() - c0)
    return d, walls, cpus


def compare(fp: dict, mo: dict) -> dict:
    """Agreement of the two chains' outputs (the equivalence criteria of issue 2)."""
    a, b = fp["image"].float(), torch.as_tensor(mo["image"]).float()
    out = {"fastpipe_shape": list(a.shape), "monai_shape": list(b.shape), "same_shape": a.shape == b.shape}
    if a.shape == b.shape:
        diff = (a - b).abs()
        out |= {"image_mean_abs_diff": diff.mean().item(), "image_max_abs_diff": diff.max().item(),
                "label_equal_fraction": (fp["label"].float() == torch.as_tensor(mo["label"]).float()).float().mean().item()}  # fmt: skip
        for k in ("label_fg_indices", "label_bg_indices"):
            x, y = fp[k].numpy(), np.asarray(torch.as_tensor(mo[k]))
            out[f"{k}_mismatch"] = int(len(np.setxor1d(x, y)))
    return out


def gunzip_floor(path: str, repeats: int) -> list[float]:
    """Seconds to isal-decode the image file into memory (the physical floor of LoadImaged)."""
    raw = Path(path).read_bytes()
    times = []
    for _ in range(repeats + 1):
        t0 = time.perf_counter()
        igzip.decompress(raw)
        times.append(time.perf_counter() - t0)
    return times[1:]


def chain(name: str) -> list:
    """Peer ``name``'s prefix: fastpipe's as CacheDataset and Compose run it (Orientationd+Spacingd fused
    into one resample), or MONAI's (its two steps timed apart, reported summed on that row)."""
    if name == "fastpipe":
        import fastpipe.transforms as fp_t
        from fastpipe.transforms.spatial import fuse_spatial

        return fuse_spatial(prefix(fp_t))
    if name == "monai":
        import monai.transforms as monai_t

        return prefix(monai_t)
    raise ValueError(f"unknown preprocess peer {name!r}; expected 'fastpipe' or 'monai'")


class _Chain:
    """One peer's chain in its own process (:func:`serve_chain`): ``run`` applies it once."""

    def __init__(self, name: str, item: dict) -> None:
        warnings.filterwarnings("ignore")  # MONAI's deprecation chatter, in this process too
        self.transforms, self.item, self.out = chain(name), item, {}
        self.ready_info = {"pid": os.getpid()}
        gc.collect()

    def run(self) -> tuple[list[float], list[float]]:
        """Wall and CPU seconds per row (Orientationd's summed into Spacingd's)."""
        self.out, walls, cpus = run_once(self.transforms, self.item)
        return _merge_spatial(self.transforms, walls), _merge_spatial(self.transforms, cpus)

    def outputs(self) -> dict:
        """The last run's tensors as numpy arrays (plain pickles across the pipe)."""
        arrays = (torch.Tensor, np.ndarray)
        return {k: np.asarray(torch.as_tensor(v)) for k, v in self.out.items() if isinstance(v, arrays)}


def serve_chain(name: str, item: dict) -> _Chain:
    """The factory :class:`benchmarks.peer_process.PeerProcess` calls in the peer's process."""
    return _Chain(name, item)


def measure(item: dict, repeats: int) -> dict:
    """Per peer in turn, each in a fresh spawned process: one warm-up, then ``repeats`` timed runs;
    per-transform samples and outputs.

    Peers run in blocks, not interleaved, and in processes of their own: whichever chain ran second in
    a shared process ran on the first one's heap (MONAI's large temporaries), and fastpipe, always
    first, was measured on a fresh one (about 15% faster than after MONAI's block).
    """
    from benchmarks.peer_process import PeerProcess

    samples, outputs, pids = {}, {}, {}
    for name in ("fastpipe", "monai"):
        with PeerProcess(name, "benchmarks.preprocess:serve_chain", {"name": name, "item": item}) as peer:
            pids[name] = peer.ready_info["pid"]
            runs = [peer.call("run") for _ in range(repeats + 1)][1:]  # the first is the warm-up
            samples[name] = {"wall": [w for w, _ in runs], "cpu": [c for _, c in runs]}
            outputs[name] = {k: torch.from_numpy(v) for k, v in peer.call("outputs").items()}
    names = [ROW_NAMES.get(type(t).__name__, type(t).__name__) for t in chain("fastpipe")]
    return {"names": names, "samples": samples, "outputs": outputs, "pids": pids}


ROW_NAMES = {"OrientSpacingd": "Orientationd+Spacingd"}


def _merge_spatial(transforms: list, values: list[float]) -> list[float]:
    """Sum an ``Orientationd`` time into the ``Spacingd`` after it (one row, as fastpipe fuses them)."""
    out: list[float] = []
    for i, (t, v) in enumerate(zip(transforms, values, strict=True)):
        if i and type(t).__name__ == "Spacingd" and type(transforms[i - 1]).__name__ == "Orientationd":
            out[-1] += v
        else:
            out.append(v)
    return out


def summarise(m: dict) -> dict:
    """Per-transform and total medians/spreads for both peers, and the speedups."""
    res: dict = {"per_transform": {}, "total": {}}
    for name, s in m["samples"].items():
        walls = np.asarray(s["wall"])
        cpus = np.asarray(s["cpu"])
        res["per_transform"][name] = {
            n: {"wall_s": spread(walls[:, i].tolist()), "cpu_s": statistics.median(cpus[:, i])}
            for i, n in enumerate(m["names"])
        }
        res["total"][name] = {"wall_s": spread(walls.sum(1).tolist()), "cpu_s": spread(cpus.sum(1).tolist())}
    fp, mo = res["total"]["fastpipe"], res["total"]["monai"]
    res["speedup_wall"] = mo["wall_s"]["median"] / fp["wall_s"]["median"]
    res["speedup_cpu"] = mo["cpu_s"]["median"] / fp["cpu_s"]["median"]
    return res


def print_table(res: dict, names: list[str], floor: list[float]) -> None:
    """Per-transform medians side by side."""
    fp, mo = res["per_transform"]["fastpipe"], res["per_transform"]["monai"]
    print(
        f"{'transform':22s} {'fastpipe s':>11s} {'(cpu s)':>8s} {'MONAI s':>9s} {'(cpu s)':>8s} {'speedup':>8s}"
    )
    for n in names:
        a, b = fp[n]["wall_s"]["median"], mo[n]["wall_s"]["median"]
        print(
            f"{n:22s} {a:11.4f} {fp[n]['cpu_s']:8.4f} {b:9.4f} {mo[n]['cpu_s']:8.4f} {b / max(a, 1e-9):7.1f}x"
        )
    t_fp, t_mo = res["total"]["fastpipe"], res["total"]["monai"]
    print(f"{'total (median)':22s} {t_fp['wall_s']['median']:11.4f} {t_fp['cpu_s']['median']:8.4f} "
          f"{t_mo['wall_s']['median']:9.4f} {t_mo['cpu_s']['median']:8.4f} {res['speedup_wall']:7.1f}x")  # fmt: skip
    print(f"spread fastpipe {t_fp['wall_s']['min']:.3f}..{t_fp['wall_s']['max']:.3f} s, "
          f"MONAI {t_mo['wall_s']['min']:.3f}..{t_mo['wall_s']['max']:.3f} s; CPU-time speedup {res['speedup_cpu']:.1f}x")  # fmt: skip
    print(f"floor: isal gunzip of the image {statistics.median(floor):.4f} s")


def main(argv: list[str] | None = None) -> dict:
    machine = machine_info()  # the commit the run starts on (the result may be written minutes later)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", type=int, nargs=3, default=(512, 512, 100), metavar=("X", "Y", "Z"))
    ap.add_argument("--spacing-xy", type=float, default=0.8, help="in-plane spacing in mm (default 0.8)")
    ap.add_argument("--slice-mm", type=float, default=2.5, help="slice thickness in mm (default 2.5)")
    ap.add_argument("--repeats", type=int, default=11)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="JSON path (default benchmarks/results/preprocess-cpu.json)")
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore")  # MONAI's deprecation chatter would drown the table
    with tempfile.TemporaryDirectory(prefix="fastpipe-preprocess-") as tmp:
        item = make_volume(Path(tmp), tuple(args.shape), args.spacing_xy, args.slice_mm, args.seed)
        floor = gunzip_floor(item["image"], args.repeats)
        m = measure(item, args.repeats)
    res = summarise(m)
    print_table(res, m["names"], floor)
    payload = {
        "config": vars(args)
        | {
            "pixdim": PIXDIM,
            "device": "cpu",
            "monai_settings": "tutorial defaults, track_meta=True",
            "peer_processes": "each chain in its own spawned process, fastpipe's then MONAI's",
        },
        "names": m["names"],
        **res,
        "floor_gunzip_s": spread(floor),
        "equivalence": compare(m["outputs"]["fastpipe"], m["outputs"]["monai"]),
        "samples": m["samples"],
    }
    path = write_result("preprocess-cpu", payload, args.out, machine=machine)
    print(f"wrote {path}")
    return payload


if __name__ == "__main__":
    main()
