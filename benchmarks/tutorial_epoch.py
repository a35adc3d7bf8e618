"""Cached epoch with the tutorial suffix: fastpipe vs the MONAI Compose handed to fp.CacheDataset vs
MONAI 1.6 best practice vs a plain copy of the crop bytes.

The random part is MONAI's spleen fast-training tutorial's (DESIGN.md steps 9-12, written once in
``benchmarks.workload``): 4 pos/neg 96^3 crops per volume, ``RandFlipd`` on each spatial axis
(prob 0.10), ``RandRotate90d`` (prob 0.10, max_k 3), ``RandShiftIntensityd("image", offsets=0.10,
prob=0.50)``; batches of 2 volumes (8 crops), shuffled. The cached prefix and the volumes are
``benchmarks.cached_epoch``'s (spleen-sized synthetic tensors, no file decoding timed).

Peers, each in its own spawned process, take turns in a seeded random order per round; each turn
runs ``--turn`` epochs (default 4) of one peer in a row. The verdicts judge the epochs that follow one
of the same loader, as a training run's epochs do; the first epoch of each turn follows another peer's
(its process's caches, threads and the VM's cores gone cold) and is reported apart
(``first_epoch_s``, ``ratios_first_epoch``). ``--turn 1`` interleaves every epoch, as earlier runs did.

- ``fastpipe``: ``fp.CacheDataset`` + ``fp.ThreadDataLoader``, the chain written with fastpipe's
  transforms (MONAI's names, fused into the crop);
- ``fastpipe_crop_only``: the same without the suffix (what the fused flips, turns and shifts cost);
- ``monai_compose``: the MONAI ``Compose`` handed to ``fp.CacheDataset`` as it is, ``fp.ThreadDataLoader``;
- ``monai_compose_monai_loader``: the same dataset read by MONAI's ``ThreadDataLoader`` (only the
  dataset line of a MONAI script changed);
- ``monai_best``: MONAI's ``CacheDataset(copy_cache=False)``, ``set_track_meta(False)``, indices
  precomputed, its ``ThreadDataLoader``, the same suffix;
- ``plain_copy``: a plain copy of the same crop bytes into new batches (the floor);
- ``plain_copy_reused``: the same copy into the same preallocated batch every time (no first-touch
  page faults; the lower floor). The <= 1.5x target is judged against the faster of the two.

Run: ``python -m benchmarks.tutorial_epoch [--volumes 8 --shape 240 210 250 --epochs 24 --turn 4]``.
Writes ``benchmarks/results/tutorial-epoch-cpu.json`` and a PNG next to it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from benchmarks import workload as chains
from benchmarks.cached_epoch_peers import BATCH, PlainCopy, _epoch, _epoch_in_thread, _set_track_meta
from benchmarks.common import machine_info
from benchmarks.peer_epochs import epoch_config, epoch_parser, run_peers, write_and_plot
from benchmarks.workload import make_volumes, volume_prefix

PEERS = (
    "fastpipe",
    "fastpipe_crop_only",
    "monai_compose",
    "monai_compose_monai_loader",
    "monai_best",
    "monai_best_uint8",
    "plain_copy",
    "plain_copy_reused",
)
FLOORS = ("plain_copy", "plain_copy_reused")
TURN = 4  # epochs per peer and round: the first of a turn follows another peer's, the rest their own
# the peers each verdict compares (a noisy one makes the verdict one that may flip between runs);
# "floor" is the faster of the floors measured, the one vs_plain_copy divides by
VERDICT_PEERS = {
    "vs_monai_best": ("fastpipe", "monai_best"),
    "monai_compose_vs_monai_best": ("monai_compose", "monai_best"),
    "vs_plain_copy": ("fastpipe", "floor"),
}
TARGETS = {"vs_monai_best": 4.0, "monai_compose_vs_monai_best": 3.0, "vs_plain_copy_max": 1.5}


def monai_compose(label_float: bool = False) -> Any:
    """The tutorial's random part after the cached prefix, as one MONAI ``Compose``.

    ``label_float`` casts the label to float32 first, as MONAI's ``LoadImaged`` would have (the
    best-practice peer); the Compose handed to fastpipe leaves it out, as a chain starting with
    ``LoadImaged`` (translated, integer labels kept through ``nearest``) caches uint8 labels.
    """
    import monai.transforms as M

    head = [M.EnsureTyped("label", dtype=torch.float32)] if label_float else []
    return M.Compose(
        [
            *head,
            M.ScaleIntensityRanged("image", a_min=-57, a_max=164, b_min=0.0, b_max=1.0, clip=True),
            M.FgBgToIndicesd("label"),
            M.RandCropByPosNegLabeld(chains.KEYS, **chains.CROP),
            *chains.tutorial_suffix(M),
        ]
    )


def build_peer(name: str, data: list[dict], workers: int) -> tuple[Any, Any]:
    """``(loader, dataset or None)`` of peer ``name``, its cache filled."""
    import fastpipe as fp

    if name in FLOORS:
        return PlainCopy(data, reuse_buffers=name == "plain_copy_reused"), None
    if name in ("monai_best", "monai_best_uint8"):
        from monai.data import CacheDataset, ThreadDataLoader

        _set_track_meta(False)  # this process's setting, for the fill and every epoch
        # monai_best: float32 labels, as MONAI's LoadImaged makes them; monai_best_uint8: the labels
        # kept uint8 as fastpipe keeps them, to show how much of the ratio is the label's bytes
        chain = monai_compose(label_float=name == "monai_best")
        ds = CacheDataset(data, chain, num_workers=workers, progress=False, copy_cache=False)
        return ThreadDataLoader(ds, batch_size=BATCH, shuffle=True, num_workers=0), ds
    if name == "fastpipe":
        chain = [*volume_prefix(fp.transforms), *chains.fastpipe_random()]
    elif name == "fastpipe_crop_only":  # what the fused suffix costs: the same chain without it
        chain = [
            *volume_prefix(fp.transforms),
            fp.transforms.RandCropByPosNegLabeld(chains.KEYS, **chains.CROP),
        ]
    elif name in ("monai_compose", "monai_compose_monai_loader"):
        chain = monai_compose()
    else:
        raise ValueError(f"unknown peer {name!r}; expected one of {PEERS}")
    ds = fp.CacheDataset(data, chain, num_workers=workers, progress=False)
    if name == "monai_compose_monai_loader":
        from monai.data import ThreadDataLoader

        return ThreadDataLoader(ds, batch_size=BATCH, shuffle=True, num_workers=0), ds
    return fp.ThreadDataLoader(ds, batch_size=BATCH, shuffle=True), ds


class _Peer:
    """One peer's loader, built (and its cache filled) in the peer's own process."""

    def __init__(self, name: str, volumes: int, shape: tuple[int, int, int], workers: int) -> None:
        import time

        data = make_volumes(volumes, shape)  # same seed in every process: the same volumes
        self.name = name
        t0 = time.perf_counter()
        self.loader, ds = build_peer(name, data, workers)
        plan = ds.describe() if hasattr(ds, "describe") else None
        self.ready_info = {"fill_s": None if ds is None else time.perf_counter() - t0, "plan": plan}

    def epoch(self) -> tuple[float, float, int]:
        return (_epoch_in_thread if self.name in FLOORS else _epoch)(self.loader)


def serve_peer(name: str, volumes: int, shape: tuple[int, int, int], workers: int) -> _Peer:
    """Build one peer (the factory :class:`benchmarks.peer_process.PeerProcess` calls in the child)."""
    return _Peer(name, volumes, tuple(shape), workers)


def ratios(med: dict[str, float]) -> dict[str, float]:
    """Speed-ups over MONAI best practice (higher is better) and fastpipe's time over each plain copy.

    ``vs_plain_copy`` is over the faster floor (of those measured); ``floor_vs_monai_best`` says how
    far above MONAI best practice that floor itself is (no loader can beat it by much).
    """
    floors = {k: med[k] for k in FLOORS if k in med}
    floor = min(floors.values())
    out = {
        "vs_monai_best": med["monai_best"] / med["fastpipe"],
        "monai_compose_vs_monai_best": med["monai_best"] / med["monai_compose"],
        "monai_compose_monai_loader_vs_monai_best": med["monai_best"] / med["monai_compose_monai_loader"],
        "vs_plain_copy": med["fastpipe"] / floor,
        "floor_vs_monai_best": med["monai_best"] / floor,
    }
    if "monai_best_uint8" in med:  # MONAI best practice with fastpipe's uint8 labels: the dtype's share
        out["vs_monai_best_uint8_labels"] = med["monai_best_uint8"] / med["fastpipe"]
        out["monai_best_float32_over_uint8_labels"] = med["monai_best"] / med["monai_best_uint8"]
    if "fastpipe_crop_only" in med:
        out["suffix_cost"] = med["fastpipe"] / med["fastpipe_crop_only"]
        out["crop_only_vs_plain_copy"] = med["fastpipe_crop_only"] / floor
    for k, v in floors.items():  # each floor on its own: new batches ("fresh") and one reused batch
        out["vs_plain_copy_fresh" if k == "plain_copy" else f"vs_{k}"] = med["fastpipe"] / v
    return out


def noisy_verdicts(rows: dict[str, dict]) -> dict[str, list[str]]:
    """Per verdict, the peers it compares whose epochs spread by more than ``NOISY_IQR`` of their median
    (``benchmarks.report``'s threshold); an empty list where none did."""
    from benchmarks.report import NOISY_IQR

    floors = [k for k in FLOORS if k in rows]
    floor = min(floors, key=lambda k: rows[k]["epoch_s"]["median"]) if floors else None

    def noisy(name: str) -> bool:
        e = rows[name]["epoch_s"]
        return e["median"] > 0 and e["iqr"] / e["median"] > NOISY_IQR

    out = {}
    for verdict, peers in VERDICT_PEERS.items():
        names = [floor if p == "floor" else p for p in peers]
        out[verdict] = [p for p in names if p is not None and p in rows and noisy(p)]
    return out


def compare(
    volumes: int, shape: tuple[int, int, int], epochs: int, warmup: int, workers: int, turn: int = TURN
) -> dict[str, Any]:
    """Every peer in its own process (one fill at a time), then interleaved turns of ``turn`` epochs;
    medians, ratios, verdicts.

    The verdicts judge the epochs that follow one of the same loader (a training run's epochs);
    ``ratios_first_epoch`` gives the same ratios over the first epoch of each turn, right after
    another peer's (``None`` with ``turn`` 1).
    """
    rows, info, _ = run_peers(
        "benchmarks.tutorial_epoch:serve_peer", PEERS, volumes, shape, epochs, warmup, workers, turn=turn
    )
    for k, row in rows.items():
        row["fill_s"], row["plan"] = info[k]["fill_s"], info[k]["plan"]
    r = ratios({k: row["epoch_s"]["median"] for k, row in rows.items()})
    passed = {
        "vs_monai_best": r["vs_monai_best"] >= TARGETS["vs_monai_best"],
        "monai_compose_vs_monai_best": r["monai_compose_vs_monai_best"]
        >= TARGETS["monai_compose_vs_monai_best"],
        "vs_plain_copy": r["vs_plain_copy"] <= TARGETS["vs_plain_copy_max"],
    }
    cpu_r = ratios({k: row["epoch_cpu_s"]["median"] for k, row in rows.items()})
    first = (
        ratios({k: row["first_epoch_s"]["median"] for k, row in rows.items()})
        if all("first_epoch_s" in row for row in rows.values())
        else None
    )
    return {
        "peers": rows,
        "ratios": r,
        "ratios_cpu_time": cpu_r,
        "ratios_first_epoch": first,
        "targets": TARGETS,
        "passed": passed,
        "noisy": noisy_verdicts(rows),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = epoch_parser(__doc__.splitlines()[0], "tutorial-epoch-cpu", "fill threads of every peer")
    p.set_defaults(epochs=24)
    p.add_argument(
        "--turn",
        type=int,
        default=TURN,
        help="epochs each peer runs in a row per round; the first of each turn is reported apart "
        f"(default {TURN}; 1 interleaves every epoch)",
    )
    args = p.parse_args(argv)
    if args.turn < 1:
        p.error(f"--turn must be at least 1, got {args.turn}")
    machine = machine_info()  # the commit the epochs run on, taken before they start
    result = {
        "benchmark": "benchmarks.tutorial_epoch",
        "config": {
            **epoch_config(args),
            "turn": args.turn,
            "suffix": "RandFlipd x3 (each axis, p=0.10), RandRotate90d (p=0.10, max_k=3), RandShiftIntensityd (0.10, p=0.50)",
            "fastpipe_suffix": "MONAI names, fused into the crop",
            "label_dtype": {
                "fastpipe": "uint8",
                "monai_compose": "uint8",
                "monai_best": "float32",
                "monai_best_uint8": "uint8",
            },
        },  # fmt: skip
        "peer_processes": (
            f"each peer in its own spawned process; rounds in a seeded random order, {args.turn} epochs in a "
            "row per peer and round; epoch_s: the epochs after the first of each turn; first_epoch_s: "
            "the first, right after another peer's"
        ),
        **compare(args.volumes, tuple(args.shape), args.epochs, args.warmup, args.workers, args.turn),
    }
    path = write_and_plot("tutorial-epoch-cpu", result, args.out, machine)
    _print(result, path)
    return result


def _print(result: dict[str, Any], path: Path) -> None:
    print(f"{'peer':<28}{'epoch median s':>16}{'ms/volume':>11}{'fill s':>9}")
    for name, row in result["peers"].items():
        fill = row["fill_s"] if row["fill_s"] is not None else float("nan")
        print(f"{name:<28}{row['epoch_s']['median']:>16.4f}{row['ms_per_volume']:>11.2f}{fill:>9.2f}")
    first = result.get("ratios_first_epoch") or {}
    noisy = result.get("noisy") or {}
    for k, v in result["ratios"].items():
        verdict = {True: "pass", False: "FAIL", None: "no target"}[result["passed"].get(k)]
        if noisy.get(k):
            verdict += f"; noisy: {', '.join(noisy[k])} spread by more than a quarter of the median"
        after = f", {first[k]:.2f}x on a turn's first epoch" if k in first else ""
        print(f"{k}: {v:.2f}x wall ({verdict}), {result['ratios_cpu_time'][k]:.2f}x CPU time{after}")
    print(f"fastpipe suffix: {result['config']['fastpipe_suffix']}")
    print(f"wrote {path} and {result['plot']}")


if __name__ == "__main__":
    main()
