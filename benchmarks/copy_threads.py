"""The CPU crop copies of a batch made on a loader thread: torch's OpenMP team vs the copy split.

    python -m benchmarks.copy_threads [--shape 240 210 250 --rounds 15 --reps 20]

``RandCropByPosNegLabeld.batch_call`` (2 volumes x 4 crops of 96^3, float32 image + uint8 label) runs
on a background thread, as in ``ThreadDataLoader``, with the copies split over helper threads
(``fastpipe.runtime._copy_threads``) or not (``FASTPIPE_COPY_THREADS=0``: torch's own team), the two
interleaved round by round in one process. Two processes: one whose main thread has an OpenMP team
of its own (it ran a parallel torch op first, as any CPU training loop does) and one whose main
thread never ran one. Writes ``benchmarks/results/copy-threads-cpu.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from typing import Any

import torch

from benchmarks.common import interleaved, machine_info, spread, write_result
from fastpipe.runtime._env import COPY_THREADS as ENV


def _measure(shape: tuple[int, int, int], rounds: int, reps: int) -> dict[str, Any]:
    """On this (non-main) thread: seconds per batch, split and not, interleaved."""
    from benchmarks.workload import make_volumes, volume_prefix
    from fastpipe import transforms as T
    from fastpipe.transforms import RandCropByPosNegLabeld

    prefix = volume_prefix(T)
    items = []
    for d in make_volumes(2, shape):
        for t in prefix:
            d = t(d)
        items.append(d)
    crop = RandCropByPosNegLabeld(
        ["image", "label"],
        "label",
        96,
        num_samples=4,
        fg_indices_key="label_fg_indices",
        bg_indices_key="label_bg_indices",
    )
    crop.set_random_state(0)

    def seconds_per_batch(mode: str) -> float:
        os.environ[ENV] = "" if mode == "split" else "0"
        crop.batch_call(items)  # warm
        t0 = time.perf_counter()
        for _ in range(reps):
            crop.batch_call(items)
        return (time.perf_counter() - t0) / reps

    samples = interleaved(["split", "torch_team"], seconds_per_batch, rounds, order="alternate")
    os.environ.pop(ENV, None)
    return samples


def child(main_team: bool, shape: tuple[int, int, int], rounds: int, reps: int) -> dict[str, Any]:
    if main_team:
        torch.rand(1 << 22).sum()  # the main thread now owns an OpenMP team
    out: list = []
    t = threading.Thread(target=lambda: out.append(_measure(shape, rounds, reps)), name="loader")
    t.start()
    t.join()
    return out[0]


def run_child(main_team: bool, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "benchmarks.copy_threads", "--child", "team" if main_team else "none"]
    cmd += ["--shape", *map(str, args.shape), "--rounds", str(args.rounds), "--reps", str(args.reps)]
    env = {k: v for k, v in os.environ.items() if k != ENV}
    proc = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env)
    samples = json.loads(proc.stdout.strip().splitlines()[-1])
    med = {k: statistics.median(v) for k, v in samples.items()}
    return {
        "ms_per_batch": {k: spread([1e3 * x for x in v]) for k, v in samples.items()},
        "split_speedup": med["torch_team"] / med["split"],
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    machine = machine_info()  # the commit the run starts on (the result may be written minutes later)
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shape", type=int, nargs=3, default=(240, 210, 250))
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--child", choices=["team", "none"], default=None, help=argparse.SUPPRESS)
    p.add_argument(
        "--out", default=None, help="result path (default benchmarks/results/copy-threads-cpu.json)"
    )
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child == "team", tuple(args.shape), args.rounds, args.reps)))
        return {}
    result = {
        "config": {
            "shape": list(args.shape),
            "rounds": args.rounds,
            "reps": args.reps,
            "crops": "2 volumes x 4",
        },
        "main_thread_has_team": run_child(True, args),
        "main_thread_no_team": run_child(False, args),
    }
    path = write_result("copy-threads-cpu", result, args.out, machine=machine)
    for k in ("main_thread_has_team", "main_thread_no_team"):
        r = result[k]
        ms = {m: round(v["median"], 2) for m, v in r["ms_per_batch"].items()}
        print(f"{k}: ms per batch {ms}, split {r['split_speedup']:.2f}x torch's team")
    print(f"wrote {path}")
    return result


if __name__ == "__main__":
    main()
