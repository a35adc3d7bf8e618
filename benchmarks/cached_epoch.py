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

import gc
import os
from typing import Any

from benchmarks import workload
from benchmarks.cached_epoch_peers import NUM_SAMPLES, PATCH, PEERS, serve_peer
from benchmarks.common import interleaved, machine_info, spread
from benchmarks.peer_epochs import epoch_config, epoch_parser, run_peers, write_and_plot
from benchmarks.workload import make_volumes

__all__ = ["NUM_SAMPLES", "PATCH", "PEERS", "serve_peer", "main"]  # serve_peer: the peers' factory
TARGETS = {"vs_monai_best": 4.0, "vs_monai_default": 15.0, "vs_plain_copy_max": 1.5}


def _ratios(med: dict[str, float]) -> dict[str, float]:
    return {
        "vs_monai_best": med["monai_best"] / med["fastpipe"],
        "vs_monai_best_no_meta": med["monai_best_no_meta"] / med["fastpipe"],
        "vs_monai_default": med["monai_default"] / med["fastpipe"],
        "vs_plain_copy": med["fastpipe"] / med["plain_copy"],
    }


def compare(
    volumes: int, shape: tuple[int, int, int], epochs: int, warmup: int, workers: int
) -> dict[str, Any]:
    """Build every peer in its own process (one fill at a time), then time interleaved epochs (wall and CPU)."""
    rows, info, fp_stats = run_peers(
        "benchmarks.cached_epoch_peers:serve_peer", PEERS, volumes, shape, epochs, warmup, workers, "fastpipe"
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
    machine = machine_info()  # the commit the epochs run on, taken before they start
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
    path = write_and_plot("cached-epoch-cpu", result, args.out, machine)
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
