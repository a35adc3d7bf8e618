"""Cached epoch on CPU: fastpipe vs MONAI 1.6 best practice vs MONAI defaults vs a plain copy.

MONAI's best practice is the issue's definition: ``CacheDataset(copy_cache=False)``, ``FgBgToIndicesd``
precomputed in the cached prefix, ``ThreadDataLoader``, MONAI's other settings at their defaults
(MetaTensors on, as ``LoadImaged`` gives them). A stricter MONAI peer also turns metadata tracking off
(``set_track_meta(False)``: plain tensors through the crop and the collate); its ratio is reported
next to the target, not instead of it.

Every peer gets the same synthetic spleen-like volumes (post-preprocessing size, HU image + organ
label, fed as tensors so no file decoding is timed), the same deterministic prefix
(``ScaleIntensityRanged`` then ``FgBgToIndicesd``, cached; labels kept in the dtype each library's
own chain caches them in: uint8 for fastpipe, float32 for MONAI, whose LoadImaged converts) and the
same random part: 4 pos/neg 96^3 crops per volume, batches of 2 volumes (8 crops), shuffled. Each peer
lives in its own spawned process (``benchmarks.peer_process``: one library's per-epoch gigabytes of
copies must not slow another's epochs through a shared heap), its cache filled while the others
wait. Epochs of the peers are then interleaved (in a seeded random order per round) after a
warm-up, so they share the machine's noise; the median and spread of the epoch times are reported,
and the cache fills separately. Then fastpipe's fill time per volume is
measured for ``num_workers`` = 1, 2, 4, ... and all cores, on at least two volumes per core (fewer
items than workers would cap the workers at the item count).

Run: ``python -m benchmarks.cached_epoch [--volumes 8 --shape 240 210 250 --epochs 10]``.
Writes ``benchmarks/results/cached-epoch-cpu.json`` and a PNG of it next to it
(``benchmarks.cached_epoch_plot``).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks import workload
from benchmarks.common import interleaved, spread, write_result
from benchmarks.measure import check_epoch_crops
from benchmarks.workload import make_volumes

PATCH, NUM_SAMPLES = workload.PATCH, workload.NUM_SAMPLES  # re-exported for gpu_copies and the tests
BATCH = 2
TARGETS = {"vs_monai_best": 4.0, "vs_monai_default": 15.0, "vs_plain_copy_max": 1.5}
MONAI_PEERS = {  # name: (copy_cache, track_meta)
    "monai_best": (False, True),
    "monai_best_no_meta": (False, False),
    "monai_default": (True, True),
}


def fastpipe_peer(data: list[dict], workers: int) -> tuple[Any, float]:
    import fastpipe as fp
    from fastpipe import transforms as T

    ds = fp.CacheDataset(
        data, [*workload.volume_prefix(T), workload.fastpipe_crop()], num_workers=workers, progress=False
    )
    return fp.ThreadDataLoader(ds, batch_size=BATCH, shuffle=True), ds.fill_report.seconds


def monai_peer(data: list[dict], workers: int, copy_cache: bool) -> tuple[Any, float]:
    from monai import transforms as M
    from monai.data import CacheDataset, ThreadDataLoader

    chain = M.Compose(
        [
            # MONAI's LoadImaged gives float32 (MetaTensors while track_meta is on) and its chain keeps
            # labels float32 from there (fastpipe keeps the file's uint8): each library caches the label
            # as its own chain does.
            M.EnsureTyped("label", dtype=torch.float32),
            *workload.volume_prefix(M),
            M.RandCropByPosNegLabeld(workload.KEYS, **workload.CROP),
        ]
    )
    t0 = time.perf_counter()
    ds = CacheDataset(data, chain, num_workers=workers, copy_cache=copy_cache, progress=False)
    fill = time.perf_counter() - t0
    return ThreadDataLoader(ds, batch_size=BATCH, shuffle=True, num_workers=0), fill


class PlainCopy:
    """The floor: copy the same crop bytes (4 windows of image and label per volume) into new batches.

    ``reuse_buffers`` writes every batch into the same preallocated tensors instead (a consumer that
    keeps a batch would see it overwritten: a floor, not a loader), so the copy pays no first-touch
    page faults for fresh memory.
    """

    def __init__(self, data: list[dict], seed: int = 0, reuse_buffers: bool = False) -> None:
        from fastpipe import transforms as T

        prefix = workload.volume_prefix(T)
        self.items = [_apply(prefix, d) for d in data]
        self.g = torch.Generator().manual_seed(seed)
        self.reuse_buffers = reuse_buffers
        self._kept: dict[int, dict[str, torch.Tensor]] = {}

    def _out(self, vols: list[dict], n: int) -> dict[str, torch.Tensor]:
        if self.reuse_buffers and n in self._kept:
            return self._kept[n]
        out = {k: torch.empty((n, 1, *PATCH), dtype=vols[0][k].dtype) for k in ("image", "label")}
        if self.reuse_buffers:
            self._kept[n] = out
        return out

    def __iter__(self):
        order = torch.randperm(len(self.items), generator=self.g).tolist()
        for b in range(0, len(order), BATCH):
            vols = [self.items[i] for i in order[b : b + BATCH]]
            n = len(vols) * NUM_SAMPLES
            out = self._out(vols, n)
            for j in range(n):
                src = vols[j // NUM_SAMPLES]
                x, y, z = (
                    int(torch.randint(0, s - p + 1, (1,), generator=self.g))
                    for s, p in zip(src["image"].shape[1:], PATCH, strict=True)
                )
                for k in out:
                    out[k][j].copy_(src[k][:, x : x + PATCH[0], y : y + PATCH[1], z : z + PATCH[2]])
            yield out


def _apply(chain: list[Any], d: dict) -> dict:
    for t in chain:
        d = t(d)
    return d


def _epoch(loader: Any) -> tuple[float, float, int]:
    """Wall seconds, process CPU seconds (all threads) and crops of one epoch."""
    t0, c0 = time.perf_counter(), time.process_time()
    crops = 0
    for batch in loader:
        crops += int(batch["image"].shape[0])
    return time.perf_counter() - t0, time.process_time() - c0, crops


def _epoch_in_thread(loader: Any) -> tuple[float, float, int]:
    """:func:`_epoch` run in a background thread, where every loader peer makes its batches.

    torch's intra-op threading differs between the main thread and other threads (on a busy machine the
    main thread's OpenMP team can be several times slower), so the floor runs where the peers run.
    """
    result: list[tuple[float, float, int]] = []
    worker = threading.Thread(target=lambda: result.append(_epoch(loader)), name="plain-copy")
    worker.start()
    worker.join()
    return result[0]


def _set_track_meta(on: bool) -> None:
    from monai.data import set_track_meta

    set_track_meta(on)


class _Peer:
    """One peer's loader, built (and its cache filled) in the peer's own process."""

    def __init__(self, name: str, volumes: int, shape: tuple[int, int, int], workers: int) -> None:
        data = make_volumes(volumes, shape)  # same seed in every process: the same volumes
        self.name = name
        if name == "fastpipe":
            self.loader, fill = fastpipe_peer(data, workers)
        elif name in MONAI_PEERS:
            copy_cache, track_meta = MONAI_PEERS[name]
            _set_track_meta(track_meta)  # this process's setting, for the fill and every epoch
            self.loader, fill = monai_peer(data, workers, copy_cache=copy_cache)
        elif name == "plain_copy":
            self.loader, fill = PlainCopy(data), None
        else:
            raise ValueError(
                f"unknown peer {name!r}; expected fastpipe, plain_copy or one of {list(MONAI_PEERS)}"
            )
        self.ready_info = {"fill_s": fill}

    def epoch(self) -> tuple[float, float, int]:
        return (_epoch_in_thread if self.name == "plain_copy" else _epoch)(self.loader)

    def stats(self) -> dict[str, Any]:
        """fastpipe's loader and cache counters (empty for the other peers)."""
        if self.name != "fastpipe":
            return {}
        cache = self.loader.dataset.stats()
        return {
            "cache": {k: v for k, v in cache.items() if k in ("items", "bytes", "hits")},
            "loader": {k: v for k, v in self.loader.stats().items() if k != "stages"},
        }


def serve_peer(name: str, volumes: int, shape: tuple[int, int, int], workers: int) -> _Peer:
    """Build one peer (the factory :class:`benchmarks.peer_process.PeerProcess` calls in the child)."""
    return _Peer(name, volumes, tuple(shape), workers)


PEERS = ("fastpipe", *MONAI_PEERS, "plain_copy")


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


def _ratios(med: dict[str, float]) -> dict[str, float]:
    return {
        "vs_monai_best": med["monai_best"] / med["fastpipe"],
        "vs_monai_best_no_meta": med["monai_best_no_meta"] / med["fastpipe"],
        "vs_monai_default": med["monai_default"] / med["fastpipe"],
        "vs_plain_copy": med["fastpipe"] / med["plain_copy"],
    }


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


def compare(
    volumes: int, shape: tuple[int, int, int], epochs: int, warmup: int, workers: int
) -> dict[str, Any]:
    """Build every peer in its own process (one fill at a time), then time interleaved epochs (wall and CPU)."""
    rows, info, fp_stats = run_peers(
        "benchmarks.cached_epoch:serve_peer", PEERS, volumes, shape, epochs, warmup, workers, "fastpipe"
    )
    for k, row in rows.items():
        fill = info[k]["fill_s"]
        if fill is not None:
            row["fill_s"], row["fill_ms_per_volume"] = fill, 1e3 * fill / volumes
    ratios = _ratios({k: r["epoch_s"]["median"] for k, r in rows.items()})
    passed = {
        "vs_monai_best": ratios["vs_monai_best"] >= TARGETS["vs_monai_best"],
        "vs_monai_default": ratios["vs_monai_default"] >= TARGETS["vs_monai_default"],
        "vs_plain_copy": ratios["vs_plain_copy"] <= TARGETS["vs_plain_copy_max"],
    }
    return {
        "peers": rows,
        "ratios": ratios,
        "ratios_cpu_time": _ratios({k: r["epoch_cpu_s"]["median"] for k, r in rows.items()}),
        "targets": TARGETS,
        "passed": passed,
        "fastpipe_cache": fp_stats["cache"],
        "fastpipe_loader": fp_stats["loader"],
    }


def fill_counts(cores: int) -> list[int]:
    """Worker counts for the fill-scaling curve: 1, 2, 4, ... up to ``cores``, and ``cores`` itself."""
    counts, w = {1, cores}, 2
    while w < cores:
        counts.add(w)
        w *= 2
    return sorted(counts)


def fill_volume_count(volumes: int, cores: int) -> int:
    """Volumes the fill-scaling part fills: at least two per worker at ``cores`` workers.

    With fewer items than workers a fill uses one worker per item (``default_workers``), and with one
    item per worker the slowest item sets the time: 8 volumes on 16 cores could not show 16 workers.
    """
    return max(volumes, 2 * cores)


def fill_scaling(data: list[dict], repeats: int) -> dict[str, Any]:
    """fastpipe's fill time per volume for num_workers = 1, 2, 4, ... all cores (median of ``repeats``, interleaved)."""
    import fastpipe as fp
    from fastpipe import transforms as T

    prefix = workload.volume_prefix(T)
    counts = fill_counts(os.cpu_count() or 1)

    def fill_s_per_volume(w: int) -> float:
        ds = fp.CacheDataset(data, prefix, num_workers=w, progress=False)
        seconds = ds.fill_report.seconds / len(data)
        ds.close()
        del ds
        gc.collect()
        return seconds

    # the worker counts interleaved, so the VM's drift hits them alike
    samples = interleaved(counts, fill_s_per_volume, repeats, order="alternate")
    out = {
        str(w): {
            "fill_s_per_volume": spread(samples[w]),
            "samples_s": samples[w],
            "threads": min(w, len(data)),  # a fill never runs more workers than items
            "volumes": len(data),
        }
        for w in counts
    }
    base = out["1"]["fill_s_per_volume"]["median"]
    for w in out:
        out[w]["speedup_vs_1"] = base / out[w]["fill_s_per_volume"]["median"]
    return out


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


def write_and_plot(name: str, result: dict[str, Any], out: str | None) -> Path:
    """Write ``result`` (with machine metadata) and its PNG beside it; ``result["plot"]`` is the PNG."""
    from benchmarks.cached_epoch_plot import plot

    path = Path(write_result(name, result, out))
    saved = json.loads(path.read_text())  # with the machine and commit, for the title
    result["plot"] = str(plot(saved, path.with_suffix(".png")))
    return path


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = epoch_parser(__doc__.splitlines()[0], "cached-epoch-cpu", "fill threads of the compared peers")
    p.add_argument("--fill-repeats", type=int, default=5)
    p.add_argument(
        "--fill-volumes",
        type=int,
        default=None,
        help="volumes of the fill-scaling part (default: --volumes, at least 2 per core)",
    )
    args = p.parse_args(argv)
    fill_volumes = args.fill_volumes or fill_volume_count(args.volumes, os.cpu_count() or 1)
    result = {
        "config": {
            **epoch_config(args),
            "fill_scaling_volumes": fill_volumes,
            "label_dtype": {"file": "uint8", "fastpipe_cache": "uint8", "monai_cache": "float32"},
            "image_input_dtype": "int16",
        },
        "peer_processes": "each peer in its own spawned process; epochs interleaved, a seeded random order per round",
        **compare(args.volumes, tuple(args.shape), args.epochs, args.warmup, args.workers),
        "fill_scaling": fill_scaling(make_volumes(fill_volumes, tuple(args.shape)), args.fill_repeats),
    }
    path = write_and_plot("cached-epoch-cpu", result, args.out)
    _print(result, path)
    return result


def _print(result: dict[str, Any], path: Any) -> None:
    print(f"{'peer':<14}{'epoch median s':>16}{'IQR s':>9}{'ms/volume':>11}{'CPU ms/vol':>11}{'fill s':>9}")
    for name, row in result["peers"].items():
        e, fill = row["epoch_s"], row.get("fill_s", float("nan"))
        print(
            f"{name:<14}{e['median']:>16.4f}{e['iqr']:>9.4f}{row['ms_per_volume']:>11.2f}"
            f"{row['cpu_ms_per_volume']:>11.2f}{fill:>9.2f}"
        )
    for k, v in result["ratios"].items():
        cpu = result["ratios_cpu_time"][k]
        verdict = {True: "pass", False: "FAIL", None: "no target"}[result["passed"].get(k)]
        print(f"{k}: {v:.2f}x wall ({verdict}), {cpu:.2f}x CPU time")
    for w, row in result["fill_scaling"].items():
        print(
            f"fill num_workers={w}: {1e3 * row['fill_s_per_volume']['median']:.1f} ms/volume ({row['speedup_vs_1']:.2f}x)"
        )
    print(f"wrote {path} and {result['plot']}")


if __name__ == "__main__":
    main()
