"""GPU only: the host-to-device copies of a cached epoch, as the CUDA driver records them.

Two runs of the same epoch (spleen-like volumes, 4 pos/neg 96^3 crops per volume, batches of 2
volumes) under :class:`fastpipe.profiling.CopyCounter`:

- ``gpu_cache``: ToDevice-then-cache (``ToDeviced`` before the random crop): the cached volumes live in
  GPU memory and the crops are cut there. Expected: no host-to-device copy as big as one crop, only the
  crop parameters (a few hundred bytes per batch).
- ``host_cache_then_copy``: the same chain cached on the host, each batch moved to the GPU after the
  crop, as a CPU pipeline feeding a GPU step does. Expected: every crop's bytes cross once.

The second run is the contrast that shows the counter sees volume data when it moves.

Run (on a GPU machine): ``python -m benchmarks.gpu_copies [--volumes 8 --epochs 3]``. Writes
``benchmarks/results/gpu-copies.json`` with the device name. Without a GPU it says so and exits 2.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import torch

from benchmarks.cached_epoch_peers import BATCH, NUM_SAMPLES, PATCH
from benchmarks.common import write_result
from benchmarks.workload import make_volumes, volume_prefix


def build(data: list[dict], cache_device: str | None) -> tuple[Any, Any]:
    """``(dataset, loader)``: the benchmark chain, cached on ``cache_device`` (``None``: the host)."""
    import fastpipe as fp
    from fastpipe import transforms as T
    from fastpipe.transforms import RandCropByPosNegLabeld, ToDeviced

    keys = ["image", "label", "label_fg_indices", "label_bg_indices"]
    move = [ToDeviced(keys, device=cache_device)] if cache_device else []
    crop = RandCropByPosNegLabeld(
        ["image", "label"],
        "label",
        PATCH,
        pos=1,
        neg=1,
        num_samples=NUM_SAMPLES,
        fg_indices_key="label_fg_indices",
        bg_indices_key="label_bg_indices",
    )
    ds = fp.CacheDataset(data, [*volume_prefix(T), *move, crop], progress=False)
    return ds, fp.ThreadDataLoader(ds, batch_size=BATCH, shuffle=True)


def count_epochs(loader: Any, epochs: int, step_device: str | None) -> dict[str, Any]:
    """Copies per epoch after a warm-up epoch; ``step_device``: where each batch is moved (``None``: nowhere)."""
    from fastpipe import profiling

    for _ in loader:  # warm-up epoch: kernels compiled, buffers made
        pass
    per_epoch, crop_bytes = [], 0
    for _ in range(epochs):
        crop_bytes = 0
        with profiling.CopyCounter() as copies:
            for batch in loader:
                if step_device:
                    batch = {k: batch[k].to(step_device, non_blocking=True) for k in ("image", "label")}
                crop_bytes += sum(batch[k].numel() * batch[k].element_size() for k in ("image", "label"))
        per_epoch.append(copies.summary())
    return {
        "epochs": per_epoch,
        "h2d_bytes_per_epoch": [e["h2d_bytes"] for e in per_epoch],
        "largest_h2d_copy": max(e["by_kind"]["HtoD"]["largest"] for e in per_epoch),
        "crop_bytes_per_epoch": crop_bytes,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--volumes", type=int, default=8)
    p.add_argument("--shape", type=int, nargs=3, default=(240, 210, 250))
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--out", default=None, help="result path (default benchmarks/results/gpu-copies.json)")
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        print("benchmarks.gpu_copies needs a CUDA GPU; none on this machine", file=sys.stderr)
        raise SystemExit(2)
    data = make_volumes(args.volumes, tuple(args.shape))
    runs = {}
    for name, cache_device, step_device in (
        ("gpu_cache", "cuda", None),
        ("host_cache_then_copy", None, "cuda"),
    ):
        ds, loader = build(data, cache_device)
        runs[name] = {
            **count_epochs(loader, args.epochs, step_device),
            "cache_h2d_bytes": ds.stats()["h2d_bytes"],
        }
        loader.close()
        ds.close()
    one_crop = PATCH[0] * PATCH[1] * PATCH[2] * 4
    one_label_crop = PATCH[0] * PATCH[1] * PATCH[2]  # uint8: the smallest crop a batch holds
    gpu = runs["gpu_cache"]
    result = {
        "config": {**vars(args), "patch": list(PATCH), "num_samples": NUM_SAMPLES, "batch_volumes": BATCH},
        "device": torch.cuda.get_device_name(),
        "runs": runs,
        "one_image_crop_bytes": one_crop,
        "one_label_crop_bytes": one_label_crop,
        "no_volume_data_h2d": gpu["largest_h2d_copy"] < one_label_crop and gpu["cache_h2d_bytes"] == 0,
    }
    path = write_result("gpu-copies", result, args.out)
    for name, run in runs.items():
        print(
            f"{name}: host-to-device per epoch {run['h2d_bytes_per_epoch']} bytes, largest copy "
            f"{run['largest_h2d_copy']} bytes, crops per epoch {run['crop_bytes_per_epoch']} bytes"
        )
    print(
        f"no volume data host-to-device in the GPU-cached epoch: {result['no_volume_data_h2d']}; wrote {path}"
    )
    return result


if __name__ == "__main__":
    main()
