"""Interleaved epochs of peers that each live in their own process, and the rows they give.

Used by every cached-epoch comparison (``benchmarks.cached_epoch``, ``tutorial_epoch``,
``voxel_augment_epoch``): :func:`run_peers` builds the peers one at a time, then times their epochs in
a seeded random order per round (:func:`_time_interleaved`); :func:`epoch_parser`/:func:`epoch_config`
are the options and config fields they share, :func:`write_and_plot` their JSON and PNG.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

import torch

from benchmarks import workload
from benchmarks.cached_epoch_peers import BATCH, NUM_SAMPLES, PATCH
from benchmarks.common import interleaved, spread, write_result
from benchmarks.measure import check_epoch_crops


def _time_interleaved(
    peers: dict[str, Any], epochs: int, warmup: int, turn: int = 1, expected_crops: int | None = None
) -> dict[str, Any]:
    """Rounds in a new random order each round, each peer running ``turn`` epochs in a row per round;
    wall and CPU samples after the warm-up rounds.

    Shuffled, not rotated: rotating a fixed list puts the same peer after MONAI defaults (whose
    1.6 GB of copies per epoch leave the VM's memory system busy for a while) in nearly every round.

    ``epochs`` is the number of timed epochs per peer (rounded up to whole turns). With ``turn`` 1
    every epoch follows another peer's. With ``turn`` >= 2 the first epoch of each turn (the one
    that follows another peer's, with this process's caches and threads cold) is kept apart as
    ``first_*``; ``wall``/``cpu`` hold the epochs that follow one of the same loader, as the epochs of
    a training run do.

    ``expected_crops``: every timed epoch of every peer must yield exactly this many crops, else
    ``RuntimeError`` (MONAI's ``ThreadDataLoader`` ends an epoch early when an item fails, and a short
    epoch would enter the median as a fast one); ``crops_min``/``crops_max`` record what was seen.
    """
    rounds = -(-epochs // turn)
    runs = interleaved(
        list(peers),
        lambda name: [peers[name].call("epoch") for _ in range(turn)],
        rounds,
        warmup,
        order="shuffle",
    )
    out = {}
    for k, turns in runs.items():
        firsts = [t[0] for t in turns] if turn > 1 else []
        rest = [e for t in turns for e in (t[1:] if turn > 1 else t)]
        counts = [c for t in turns for _, _, c in t]
        for c in counts:
            try:
                check_epoch_crops(c, expected_crops)
            except RuntimeError as err:
                raise RuntimeError(f"peer {k}: {err}") from None
        out[k] = {
            "wall": [w for w, _, _ in rest],
            "cpu": [c for _, c, _ in rest],
            "crops": rest[-1][2] if rest else 0,
            "crops_min": min(counts, default=0),
            "crops_max": max(counts, default=0),
        }
        if firsts:
            out[k]["first_wall"] = [w for w, _, _ in firsts]
    return out


def _epoch_row(smp: dict[str, Any], volumes: int) -> dict[str, Any]:
    wall, cpu = spread(smp["wall"]), spread(smp["cpu"])
    row = {
        "epoch_s": wall,
        "epoch_samples_s": smp["wall"],  # every timed epoch, in the order run (for the plot)
        "epoch_cpu_s": cpu,
        "ms_per_volume": 1e3 * wall["median"] / volumes,
        "cpu_ms_per_volume": 1e3 * cpu["median"] / volumes,
        "crops_per_epoch": smp["crops"],
        "crops_min": smp.get("crops_min"),  # over every timed epoch: each checked against volumes x 4
        "crops_max": smp.get("crops_max"),
    }
    if "first_wall" in smp:  # the first epoch of each turn, right after another peer's
        row["first_epoch_s"] = spread(smp["first_wall"])
        row["first_epoch_samples_s"] = smp["first_wall"]
    return row


def run_peers(
    factory: str,
    names: Any,
    volumes: int,
    shape: Any,
    epochs: int,
    warmup: int,
    workers: int,
    stats_of=None,
    turn: int = 1,
) -> tuple[dict[str, dict], dict[str, dict], Any]:
    """Build every peer in its own process (one fill at a time) with ``factory`` (``"module:function"``),
    then time interleaved epochs, ``turn`` in a row per peer and round (wall and CPU; see
    :func:`_time_interleaved`).

    Returns one row per peer, each peer's ``ready_info``, and ``stats_of``'s ``stats()`` (if named).
    """
    from benchmarks.peer_process import PeerProcess

    peers: dict[str, Any] = {}
    try:
        for name in names:
            kwargs = {"name": name, "volumes": volumes, "shape": shape, "workers": workers}
            peers[name] = PeerProcess(name, factory, kwargs)
        samples = _time_interleaved(
            peers, epochs, warmup, turn, expected_crops=volumes * workload.NUM_SAMPLES
        )
        stats = peers[stats_of].call("stats") if stats_of else None
        info = {k: p.ready_info for k, p in peers.items()}
    finally:
        for p in peers.values():
            p.close()
    return {k: _epoch_row(smp, volumes) for k, smp in samples.items()}, info, stats


def epoch_config(args: argparse.Namespace) -> dict[str, Any]:
    """The config fields every cached-epoch comparison records (from :func:`epoch_parser`'s options)."""
    return {
        "volumes": args.volumes,
        "shape": list(args.shape),
        "patch": list(PATCH),
        "num_samples": NUM_SAMPLES,
        "batch_volumes": BATCH,
        "epochs": args.epochs,
        "warmup": args.warmup,
        "fill_workers": args.workers,
        "torch_threads": torch.get_num_threads(),
    }


def epoch_parser(description: str, name: str, workers_help: str) -> argparse.ArgumentParser:
    """The options every cached-epoch comparison takes: volumes, shape, epochs, warm-up, workers, out."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--volumes", type=int, default=8)
    p.add_argument("--shape", type=int, nargs=3, default=(240, 210, 250))
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help=workers_help)
    p.add_argument("--out", default=None, help=f"result path (default benchmarks/results/{name}.json)")
    return p


def write_and_plot(name: str, result: dict[str, Any], out: str | None, machine: dict | None = None) -> Path:
    """Write ``result`` (with ``machine``, the metadata taken when the run started; default: now) and
    its PNG beside it; ``result["plot"]`` is the PNG."""
    from benchmarks.cached_epoch_plot import plot

    path = Path(write_result(name, result, out, machine))
    saved = json.loads(path.read_text())  # with the machine and commit, for the title
    result["plot"] = str(plot(saved, path.with_suffix(".png")))
    return path
