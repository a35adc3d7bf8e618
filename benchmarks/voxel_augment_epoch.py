"""Cached epoch with the tutorial suffix plus RandGaussianNoised and RandAdjustContrastd: batched vs per crop vs MONAI.

The chain is ``benchmarks.tutorial_epoch``'s (spleen-sized volumes, 4 pos/neg 96^3 crops per volume,
flips, quarter turns, intensity shift; batches of 2 volumes) with two voxel-wise augmentations after
it at MONAI's defaults, as nnU-Net-style chains add them: ``RandGaussianNoised("image", prob=0.1)``
and ``RandAdjustContrastd("image", prob=0.1)``. Neither fits the crop's gather.

- ``fastpipe``: fastpipe's transforms; the two run on the stacked batch (one draw, only the crops
  they fire on touched);
- ``monai_compose``: the whole MONAI ``Compose`` handed to ``fp.CacheDataset`` as it is (translated:
  the same plan as ``fastpipe``);
- ``fastpipe_monai_voxel``: fastpipe's chain, but the two are MONAI's objects, run per crop: the batch is
  split into crops and stacked again, as any transform fastpipe does not know;
- ``fastpipe_tutorial``: the tutorial chain without the two (what they cost);
- ``monai_best``: MONAI's ``CacheDataset(copy_cache=False)``, ``set_track_meta(False)``, indices
  precomputed, its ``ThreadDataLoader``, the same chain.

Each peer in its own spawned process, turns of ``--turn`` epochs in a seeded random order
(``benchmarks.peer_epochs.run_peers``). Run: ``python -m benchmarks.voxel_augment_epoch``; writes
``benchmarks/results/voxel-augment-epoch-cpu.json`` and a PNG next to it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks import workload as chains
from benchmarks.cached_epoch_peers import BATCH, _epoch, _set_track_meta
from benchmarks.common import machine_info
from benchmarks.peer_epochs import epoch_config, epoch_parser, run_peers, write_and_plot
from benchmarks.tutorial_epoch import monai_compose
from benchmarks.workload import make_volumes, volume_prefix

PEERS = ("fastpipe", "monai_compose", "fastpipe_monai_voxel", "fastpipe_tutorial", "monai_best")
TURN = 3
PROB = 0.1  # MONAI's default for both


def voxel_augments(T: Any) -> list[Any]:
    """The two voxel-wise augmentations from ``T`` (``fastpipe.transforms`` or ``monai.transforms``)."""
    return [T.RandGaussianNoised("image", prob=PROB), T.RandAdjustContrastd("image", prob=PROB)]


class _PerCrop:
    """A MONAI transform as a plain random callable: fastpipe keeps it as given and runs it per crop."""

    random = True

    def __init__(self, t: Any) -> None:
        self.t = t

    def __call__(self, d: dict) -> dict:
        return self.t(d)

    def set_random_state(self, seed: int | None = None, state: Any = None) -> _PerCrop:
        self.t.set_random_state(seed, state)
        return self


def build_peer(name: str, data: list[dict], workers: int) -> tuple[Any, Any]:
    """``(loader, dataset)`` of peer ``name``, its cache filled."""
    import monai.transforms as M

    import fastpipe as fp

    T = fp.transforms
    if name == "monai_best":
        from monai.data import CacheDataset, ThreadDataLoader

        _set_track_meta(False)
        chain = M.Compose([*monai_compose(label_float=True).transforms, *voxel_augments(M)])
        ds = CacheDataset(data, chain, num_workers=workers, progress=False, copy_cache=False)
        return ThreadDataLoader(ds, batch_size=BATCH, shuffle=True, num_workers=0), ds
    tutorial = [*volume_prefix(T), *chains.fastpipe_random()]
    if name == "monai_compose":
        chain = M.Compose([*monai_compose().transforms, *voxel_augments(M)])
    elif name == "fastpipe":
        chain = [*tutorial, *voxel_augments(T)]
    elif name == "fastpipe_monai_voxel":
        _set_track_meta(False)
        chain = [*tutorial, *(_PerCrop(t) for t in voxel_augments(M))]
    elif name == "fastpipe_tutorial":
        chain = tutorial
    else:
        raise ValueError(f"unknown peer {name!r}; expected one of {PEERS}")
    ds = fp.CacheDataset(data, chain, num_workers=workers, progress=False)
    return fp.ThreadDataLoader(ds, batch_size=BATCH, shuffle=True), ds


class _Peer:
    def __init__(self, name: str, volumes: int, shape: tuple[int, int, int], workers: int) -> None:
        self.loader, ds = build_peer(name, make_volumes(volumes, shape), workers)
        self.ready_info = {"plan": ds.describe() if hasattr(ds, "describe") else None}

    def epoch(self) -> tuple[float, float, int]:
        return _epoch(self.loader)


def serve_peer(name: str, volumes: int, shape: tuple[int, int, int], workers: int) -> _Peer:
    """Build one peer (the factory :class:`benchmarks.peer_process.PeerProcess` calls in the child)."""
    return _Peer(name, volumes, tuple(shape), workers)


def ratios(med: dict[str, float]) -> dict[str, float]:
    """Speed-ups (higher is better) of ``fastpipe`` over the others, and what the two transforms cost it."""
    return {
        "vs_monai_best": med["monai_best"] / med["fastpipe"],
        "monai_compose_vs_monai_best": med["monai_best"] / med["monai_compose"],
        "vs_monai_voxel_per_crop": med["fastpipe_monai_voxel"] / med["fastpipe"],
        "voxel_augment_cost": med["fastpipe"] / med["fastpipe_tutorial"],
        "per_crop_voxel_augment_cost": med["fastpipe_monai_voxel"] / med["fastpipe_tutorial"],
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = epoch_parser(__doc__.splitlines()[0], "voxel-augment-epoch-cpu", "fill threads of every peer")
    p.set_defaults(epochs=24)
    p.add_argument(
        "--turn", type=int, default=TURN, help=f"epochs each peer runs in a row per round (default {TURN})"
    )
    args = p.parse_args(argv)
    machine = machine_info()  # the commit the epochs run on, taken before they start
    rows, info, _ = run_peers(
        "benchmarks.voxel_augment_epoch:serve_peer",
        PEERS,
        args.volumes,
        tuple(args.shape),
        args.epochs,
        args.warmup,
        args.workers,
        turn=args.turn,
    )
    for k, row in rows.items():
        row["plan"] = info[k]["plan"]
    result = {
        "benchmark": "benchmarks.voxel_augment_epoch",
        "config": {
            **epoch_config(args),
            "turn": args.turn,
            "suffix": "the tutorial's (RandFlipd x3 p=0.10, RandRotate90d p=0.10, RandShiftIntensityd p=0.50), "
            f"then RandGaussianNoised(image, p={PROB}) and RandAdjustContrastd(image, p={PROB}) at MONAI's defaults",
        },
        "peers": rows,
        "ratios": ratios({k: row["epoch_s"]["median"] for k, row in rows.items()}),
        "ratios_cpu_time": ratios({k: row["epoch_cpu_s"]["median"] for k, row in rows.items()}),
    }
    path = write_and_plot("voxel-augment-epoch-cpu", result, args.out, machine)
    _print(result, path)
    return result


def _print(result: dict[str, Any], path: Path) -> None:
    print(f"{'peer':<24}{'epoch median s':>16}{'ms/volume':>11}")
    for name, row in result["peers"].items():
        print(f"{name:<24}{row['epoch_s']['median']:>16.4f}{row['ms_per_volume']:>11.2f}")
    for k, v in result["ratios"].items():
        print(f"{k}: {v:.2f}x wall, {result['ratios_cpu_time'][k]:.2f}x CPU time")
    print(f"wrote {path} and {result['plot']}")


if __name__ == "__main__":
    main()
