"""The spleen fast-training experiment matrix: ``python -m benchmarks.spleen`` (``make bench``).

Every row runs in its own subprocess (so peak memory is its own) on the same volumes, the same
chain, the same crops and the same thread count; the parent prints the table and writes
``bench-out/<date>-<host>.json`` plus a PNG chart (``--save``: under ``benchmarks/results/``, the
tracked folder the README's figures come from). Each row reports the median and spread over its
timed epochs, each matched ratio its range, and rows whose epochs spread too widely are flagged as
too noisy to trust.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from datetime import date
from pathlib import Path

from benchmarks.common import git_commit, machine_info, out_dir
from benchmarks.report import format_table, noise_note, speedups
from benchmarks.row_types import Config, RowSkipped
from benchmarks.rows import ROWS
from benchmarks.spleen_plot import plot_rows
from benchmarks.workload import REPO, dataset_root, load_data
from fastpipe.datasets.synth import PRESETS

DEFAULT_ROWS = [
    "regular",
    "monai-cache",
    "monai-cache-default",
    "monai-smartcache",
    "dali",
    "fastpipe-cache",
    "fastpipe-cache-per-item",
    "fastpipe-smartcache",
    "fastpipe-gpu-cache",
    "monai-cache-crop-only",  # the chain stopped at the crop, labelled as such
    "fastpipe-cache-crop-only",
]


def _at_least(low: int):
    """An argparse type: an int of at least ``low`` (``--epochs 0`` failed every row with an IndexError)."""

    def parse(text: str) -> int:
        value = int(text)
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        return value

    parse.__name__ = "int"  # argparse names the type in "invalid int value: 'x'"
    return parse


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="fastpipe bench", description=__doc__)
    p.add_argument(
        "--preset",
        default="spleen-small",
        choices=sorted(PRESETS),
        help="look-alike data preset (default spleen-small)",
    )
    p.add_argument("--data", type=Path, default=None, help="an MSD folder (e.g. a real Task09_Spleen)")
    p.add_argument("--num-volumes", type=_at_least(1), default=None, help="use only the first N volumes")
    p.add_argument("--rows", default=",".join(DEFAULT_ROWS), help="comma-separated rows to run")
    p.add_argument("--epochs", type=_at_least(1), default=10, help="timed epochs per row (after one warm-up)")
    p.add_argument(
        "--step-epochs", type=_at_least(0), default=3, help="epochs with the stand-in training step"
    )
    p.add_argument(
        "--step-ms-per-volume",
        type=float,
        default=50.0,
        help="stand-in training step per volume of a batch (0.2 s per 4 volumes ~ an A100 UNet step)",
    )
    p.add_argument("--batch-size", type=_at_least(1), default=2, help="volumes per batch (x4 crops)")
    p.add_argument(
        "--threads",
        type=_at_least(1),
        default=min(os.cpu_count() or 2, 8),
        help="threads/workers for every row",
    )
    p.add_argument(
        "--device",
        default="cuda",
        help="device of the GPU rows (default cuda); the other rows run on the CPU",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="result JSON path (default bench-out/<date>-<host>.json; with --save benchmarks/results/)",
    )
    p.add_argument(
        "--save",
        action="store_true",
        help="write under the tracked benchmarks/results/ instead of bench-out/",
    )
    p.add_argument("--no-plot", action="store_true")
    p.add_argument(
        "--train", action="store_true", help="also run the time-to-Dice experiment (benchmarks.train)"
    )
    p.add_argument("--train-epochs", type=int, default=None, help="train mode epoch budget")
    p.add_argument("--train-max-s", type=float, default=None, help="train mode time budget per arm")
    p.add_argument("--dice-target", type=float, default=None, help="validation foreground Dice target (0.94)")
    p.add_argument("--nproc", type=int, default=1, help="ranks for --distributed (via torchrun)")
    p.add_argument("--distributed", action="store_true", help="run under torch.distributed (torchrun)")
    p.add_argument("--worker-row", default=None, help=argparse.SUPPRESS)
    p.add_argument("--worker-out", default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def config(args: argparse.Namespace) -> Config:
    """The rows' shared settings: CPU rows on the CPU, GPU rows on ``--device``, so a GPU row is measured against CPU pipelines."""
    return Config(
        batch_size=args.batch_size,
        threads=args.threads,
        device="cpu",
        gpu_device=args.device or "cuda",
        workdir=tempfile.mkdtemp(prefix="fastpipe-bench-"),
    )


def run_worker(args: argparse.Namespace) -> int:
    """Inside the subprocess: measure one row and write its figures as JSON."""
    from benchmarks.measure import measure_row

    data = load_data(args)
    cfg = config(args)
    step_s = args.step_ms_per_volume * args.batch_size / 1000.0
    try:
        res = measure_row(args.worker_row, data, cfg, args.epochs, args.step_epochs, step_s)
    except RowSkipped as err:
        res = {"row": args.worker_row, "skipped": str(err)}
    finally:  # the row's scratch files (the dali row's .npy volumes: GBs on spleen-full)
        shutil.rmtree(cfg.workdir, ignore_errors=True)
    Path(args.worker_out).write_text(json.dumps(res, default=str))
    return 0


def run_row(name: str, argv: list[str], timeout_s: float = 1800) -> dict:
    """Measure one row in a fresh interpreter; a crash becomes a published error, not a lost row."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        out = f.name
    cmd = [sys.executable, "-m", "benchmarks.spleen", *argv, "--worker-row", name, "--worker-out", out]
    try:
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout_s)
        if proc.returncode != 0 or not Path(out).stat().st_size:
            return {"row": name, **_failure(proc)}
        return json.loads(Path(out).read_text())
    except subprocess.TimeoutExpired:  # a hung row is published as such; the other rows still run
        return {"row": name, "error": f"no result within {timeout_s:g} s: the row's process was killed"}
    finally:
        Path(out).unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.worker_row:
        return run_worker(args)
    if args.distributed or args.nproc > 1:
        from benchmarks import distributed_bench

        return distributed_bench.launch(args)
    rows = [r for r in args.rows.split(",") if r]
    problem = _bad_input(args, rows)
    if problem:
        print(f"fastpipe bench: {problem}", file=sys.stderr)
        return 2
    root = dataset_root(args)
    child_argv = _without_train_flags(argv)
    if args.data is None:
        child_argv += ["--data", str(root)]
    machine = machine_info()  # commit and -dirty as the rows found them: a later edit must not relabel
    results, probes = [], []
    for i, name in enumerate(rows, 1):
        print(f"[{i}/{len(rows)}] {name} ...", flush=True)
        probes.append(speed_probe_s())
        res = run_row(name, child_argv)
        res["probe_s"] = probes[-1]
        results.append(res)
        print("    " + _one_line(res), flush=True)
    probes.append(speed_probe_s())
    speedups(results)
    doc = {
        "config": {k: str(v) for k, v in vars(args).items() if not k.startswith("worker")},
        "dataset": str(root),
        "rows": results,
        "probe_s": probes,
        "machine_drift": max(probes) / min(probes),
    }
    out = args.out or out_dir(args.save) / f"{date.today().isoformat()}-{machine['host']}.json"
    if args.train:
        from benchmarks.train import train_from_matrix

        doc["train"] = train_from_matrix(root, args, out.with_name(f"train-{out.stem}.json"))
    out.parent.mkdir(parents=True, exist_ok=True)
    end_commit = git_commit()
    if end_commit != machine["commit"]:  # committed or edited while the rows ran: say so
        doc["commit_at_end"] = end_commit
    doc = {"benchmark": "spleen", "machine": machine, **doc}
    out.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    print()
    print(format_table(results))
    note = noise_note(results, doc["machine_drift"])
    if note:
        print(note)
    if not args.no_plot:
        png = plot_rows(results, out.with_suffix(".png"), doc)
        print(f"chart: {png}")
    print(f"results: {out}")
    failed = [r["row"] for r in results if "error" in r]
    if failed:
        print(
            f"fastpipe bench: {len(failed)} of {len(results)} rows failed: {', '.join(failed)}",
            file=sys.stderr,
        )
    return 1 if failed else 0


def _bad_input(args: argparse.Namespace, rows: list[str]) -> str | None:
    """What is wrong with the rows or ``--data`` (checked before any row runs), else ``None``."""
    unknown = sorted(set(rows) - set(ROWS))
    if unknown or not rows:
        return (
            f"unknown rows {unknown or args.rows!r}; valid rows: {', '.join(sorted(ROWS))} "
            f"(default: {','.join(DEFAULT_ROWS)})"
        )
    if args.data is not None:
        from fastpipe.datasets import load_decathlon_datalist

        try:
            if not load_decathlon_datalist(args.data):
                return f"--data {args.data}: its dataset.json lists no training items"
        except (OSError, ValueError) as err:
            return f"--data {args.data}: {err}"
    return None


def speed_probe_s(repeats: int = 5) -> float:
    """Median seconds of a fixed copy + matmul workload: how fast this machine is right now.

    Timed before every row and after the last; their spread says whether the machine's speed drifted
    while the rows ran one after the other (``machine_drift`` in the JSON).
    """
    import time

    import torch

    src, a = torch.ones(8 * 2**20), torch.ones(256, 256)
    dst = torch.empty_like(src)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(4):
            dst.copy_(src)
            a @ a
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def _failure(proc: subprocess.CompletedProcess) -> dict[str, str]:
    """A failed row's ``error`` (the exception's line first: the table shows only its start) and the
    end of its output (``stderr_tail``)."""
    tail = (proc.stderr or proc.stdout or "").strip().splitlines()[-5:]
    why = tail[-1] if tail else "no output"
    if proc.returncode == 0:
        why = f"no result written ({why})"
    return {"error": f"{why} (exit code {proc.returncode})", "stderr_tail": " | ".join(tail)}


def _without_train_flags(argv: list[str]) -> list[str]:
    """The row workers' argv: train-mode options stay with the parent."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--train":
            continue
        elif a in ("--train-epochs", "--train-max-s", "--dice-target"):
            skip = True
        else:
            out.append(a)
    return out


def _one_line(res: dict) -> str:
    if "skipped" in res:
        return f"skipped: {res['skipped']}"
    if "error" in res:
        return f"ERROR: {res['error']}"
    return (
        f"fill {res['fill_s']:.1f} s, epoch {res['epoch_s']['median']:.2f} s, "
        f"{res['crops_per_s']['median']:.1f} crops/s, wait {100 * res['data_wait_fraction']['median']:.0f}%"
    )


if __name__ == "__main__":
    raise SystemExit(main())
