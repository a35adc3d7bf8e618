"""The GPU rows of ``make bench`` and the tutorial's training, capped (about 5 minutes): ``make gpu-bench``.

Two runs, each a subprocess with its own time limit:

1. ``benchmarks.spleen`` on the ``spleen-small`` look-alike data (generated when missing): row
   ``fastpipe-gpu-cache`` (cache and crops on the GPU) against the CPU rows ``fastpipe-cache`` and
   ``monai-cache`` (3 timed epochs, 1 with the stand-in step);
2. ``benchmarks.train --config tutorial``: the four arms (regular, monai-fast, fastpipe,
   fastpipe-smartcache) with the tutorial's UNet, 96^3 crops and target 0.94, each capped at
   ``--train-max-s`` seconds, so the timelines are partial unless the target comes first. The data
   is ``TRAIN_VOLUMES`` ``spleen-full`` look-alike volumes (generated when missing; ``TRAIN_VAL`` of
   them validate), or a real Task09 folder with ``--data`` (the tutorial's split: the last 9 validate).

Writes ``gpu-bench-spleen-<gpu>.json`` (plus its PNG), ``train-<gpu>.json`` with the Dice-over-time
and GPU-utilisation PNGs beside it, and ``gpu-bench-<gpu>.json`` with each run's exit status and
time, under ``benchmarks/results/`` or ``--out DIR``. Without a CUDA GPU it stops at once with
status 2. With ``--limit-s`` the whole command (wheels, data generation included) ends inside it:
the training's arms get a budget that fits what is left, a run past its limit is killed with its
subprocesses, and the summary is written after every run. ``--dry-run`` prints the plan and checks it (arguments, data split, time limits) without
a GPU and without running anything.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from benchmarks._gpu_meta import gpu_state
from benchmarks._gpu_procs import kill_tree
from benchmarks.gpu_check import REPO, ensure_wheels, require_gpu, slug

GPU_ROWS = "fastpipe-gpu-cache,fastpipe-cache,monai-cache"
TRAIN_VOLUMES = 16  # spleen-full look-alike volumes of the capped training run
TRAIN_VAL = 4  # of them held out for validation (sliding-window Dice after every pass)
TRAIN_DATA = REPO / "data" / f"spleen-full-{TRAIN_VOLUMES}"
ARM_MARGIN_S = 60.0  # per arm beyond its budget: interpreter start, imports, one epoch and validation past it
SPLEEN_LIMIT_S = 150.0
RESERVE_S = 20.0  # of --limit-s, kept for the summary, a cut training's charts and the exit
MIN_TRAIN_S = 20.0  # the least budget per arm a shortened training run gets


@dataclass(frozen=True)
class Run:
    """One benchmark subprocess: ``python -m <module> <argv>``, killed after ``timeout_s``."""

    name: str
    module: str
    argv: list[str]
    timeout_s: float


ONLY = ("all", "rows", "train")


def runs(
    out: Path, gpu: str, threads: int, train_s: float, data: Path | None = None, only: str = "all",
    arms: Sequence[str] | None = None,
) -> list[Run]:  # fmt: skip
    """The runs of ``make gpu-bench`` in order (``data``: a real Task09 folder for the training;
    ``only``: ``"rows"`` or ``"train"`` keeps that run alone; ``arms``: the training's arms, default
    the four published ones)."""
    from benchmarks.train_arms import PUBLISHED_ARMS

    arms = list(arms or PUBLISHED_ARMS)
    train_data = (
        ["--data", str(data)] if data else ["--data", str(TRAIN_DATA), "--val-volumes", str(TRAIN_VAL)]
    )
    arm_timeout_s = train_s + ARM_MARGIN_S
    plan = [
        Run("spleen_gpu_rows", "benchmarks.spleen",
            ["--preset", "spleen-small", "--threads", str(threads), "--rows", GPU_ROWS, "--epochs", "3",
             "--step-epochs", "1", "--out", str(out / f"gpu-bench-spleen-{gpu}.json")], SPLEEN_LIMIT_S),
        Run("train", "benchmarks.train",
            ["--config", "tutorial", *train_data, "--arms", ",".join(arms), "--threads", str(threads),
             "--max-s", str(train_s), "--arm-timeout-s", str(arm_timeout_s), "--out", str(out / f"train-{gpu}.json")],
            len(arms) * arm_timeout_s + 30.0),
    ]  # fmt: skip
    keep = {"all": ("spleen_gpu_rows", "train"), "rows": ("spleen_gpu_rows",), "train": ("train",)}[only]
    return [r for r in plan if r.name in keep]


def prepare_train_data(data: Path | None) -> Path:
    """The training run's data folder: ``data``, or the look-alike volumes, generated when missing."""
    if data is not None:
        return data
    if not (TRAIN_DATA / "dataset.json").exists():
        from fastpipe.datasets import synthesize

        print(
            f"gpu-bench: generating {TRAIN_VOLUMES} spleen-full look-alike volumes -> {TRAIN_DATA}",
            flush=True,
        )
        synthesize(TRAIN_DATA, preset="spleen-full", seed=0, progress=True, num_volumes=TRAIN_VOLUMES)
    return TRAIN_DATA


def check_plan(plan: list[Run], data: Path | None, limit_s: float | None = None) -> list[str]:
    """Problems a run would hit before doing any work: bad arguments, a split without training volumes,
    a worst case over ``limit_s`` (the time one command may take, when given)."""
    from benchmarks import spleen, train

    problems = []
    worst = sum(run.timeout_s for run in plan)
    if limit_s is not None and worst > limit_s:
        problems.append(
            f"the worst case, {worst:.0f} s (each training arm {ARM_MARGIN_S:.0f} s past its budget), is over "
            f"the limit of {limit_s:.0f} s: lower --train-max-s, train fewer --arms, or run --only train"
        )
    for run in plan:
        parser = {"benchmarks.spleen": spleen.parse_args, "benchmarks.train": train.parse_args}[run.module]
        try:
            args = parser(run.argv)
        except SystemExit:
            problems.append(f"{run.name}: {run.module} rejects its arguments {run.argv}")
            continue
        if run.module == "benchmarks.train":
            from benchmarks.train_arms import ARMS

            unknown = [a for a in args.arms.split(",") if a not in ARMS]
            if unknown:
                problems.append(f"{run.name}: unknown arms {unknown}; expected some of {list(ARMS)}")
            cfg = train._config(args)
            volumes = None if data else TRAIN_VOLUMES
            if volumes is not None and volumes <= cfg.val_volumes:
                problems.append(
                    f"{run.name}: {volumes} volumes leave none for training after {cfg.val_volumes} validate"
                )
            if args.arm_timeout_s is None or args.arm_timeout_s <= cfg.max_s:
                problems.append(f"{run.name}: an arm's time limit must exceed its budget of {cfg.max_s} s")
    return problems


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="gpu-bench", description=__doc__.splitlines()[0])
    p.add_argument("--out", default=None, help="result folder (default benchmarks/results)")
    p.add_argument("--threads", type=int, default=8)
    p.add_argument(
        "--train-max-s", type=float, default=40.0, help="time budget per training arm (default 40)"
    )
    p.add_argument("--data", type=Path, default=None, help="a real Task09_Spleen folder for the training")
    p.add_argument("--only", choices=ONLY, default="all", help="run only the GPU rows or only the training")
    p.add_argument("--arms", default=None, help="comma-separated training arms (default: the four published)")
    p.add_argument(
        "--limit-s", type=float, default=None, help="refuse a plan whose worst case takes longer (seconds)"
    )
    p.add_argument("--dry-run", action="store_true", help="print and check the plan; run nothing")
    return p.parse_args(argv)


def _plan(args: argparse.Namespace, out: Path, gpu: str) -> list[Run]:
    arms = args.arms.split(",") if args.arms else None
    return runs(out, gpu, args.threads, args.train_max_s, args.data, args.only, arms)


def fit_train(run: Run, left_s: float) -> Run:
    """``run`` (the training) with its arms' budget lowered so that every arm, at its own limit, ends
    within ``left_s`` (each arm still validates at least once; at least ``MIN_TRAIN_S`` each)."""
    args = train_args(run)
    n = len(args.arms.split(","))
    budget = min(args.max_s, max(MIN_TRAIN_S, (left_s - 30.0) / n - ARM_MARGIN_S))
    if budget >= args.max_s:
        return run
    argv = list(run.argv)
    for flag, value in (("--max-s", budget), ("--arm-timeout-s", budget + ARM_MARGIN_S)):
        argv[argv.index(flag) + 1] = str(round(value, 1))
    return Run(run.name, run.module, argv, n * (budget + ARM_MARGIN_S) + 30.0)


def train_args(run: Run) -> argparse.Namespace:
    from benchmarks import train

    return train.parse_args(run.argv)


def execute(run: Run, timeout_s: float) -> int | str:
    """``python -m <module>``; at ``timeout_s`` it is killed with every process under it (the training's
    arm subprocesses, which would otherwise keep the GPU busy). It stays in this process group, so a
    kill of the whole command (the device's time limit) still reaches all of them."""
    proc = subprocess.Popen([sys.executable, "-m", run.module, *run.argv], cwd=REPO)
    try:
        return proc.wait(timeout=max(1.0, timeout_s))
    except subprocess.TimeoutExpired:
        return f"timed out after {timeout_s:.0f} s"
    finally:
        if proc.poll() is None:
            kill_tree(proc.pid)
            proc.wait()


def chart_partial(run: Run) -> list[str]:
    """The Dice and utilisation charts of a training run that was cut short, from the arms it wrote."""
    from benchmarks.train_plot import plot_all

    out = train_args(run).out
    if out is None or not out.exists():
        return []
    return [str(p) for p in plot_all(json.loads(out.read_text()), out)]


def main(argv: list[str] | None = None) -> int:
    t_start = time.monotonic()
    args = parse_args(argv)
    out = Path(args.out) if args.out else REPO / "benchmarks" / "results"
    if args.dry_run:
        plan = _plan(args, out, "GPU")
        for run in plan:
            print(f"{run.name} (limit {run.timeout_s:.0f} s): python -m {run.module} {' '.join(run.argv)}")
        total = sum(run.timeout_s for run in plan)
        problems = check_plan(plan, args.data, args.limit_s)
        print(f"worst case {total:.0f} s; " + ("; ".join(problems) if problems else "plan OK"))
        return 1 if problems else 0
    require_gpu("gpu-bench")
    wheels = ensure_wheels()
    if wheels.get("still_missing"):  # every run imports fastpipe
        raise SystemExit(f"gpu-bench: missing {wheels['still_missing']}: {wheels.get('why')}")
    import torch

    gpu = slug(torch.cuda.get_device_name())
    plan = _plan(args, out, gpu)
    problems = check_plan(plan, args.data, args.limit_s)
    if problems:
        raise SystemExit("gpu-bench: " + "; ".join(problems))
    summary = {"device": torch.cuda.get_device_name(), "wheels": wheels, "status": "running", "runs": {}}
    save = _saver(summary, out / f"gpu-bench-{gpu}.json")
    deadline = t_start + args.limit_s - RESERVE_S if args.limit_s else float("inf")
    before = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        for run in plan:
            if not _one_run(run, deadline, args, save, summary):
                break
    finally:
        signal.signal(signal.SIGTERM, before)
    ok = all(r["status"] == 0 for r in summary["runs"].values())
    if summary["status"] == "running":  # else: "terminated during <run>"
        summary["status"] = "complete"
    summary["gpu_state"]["end"] = gpu_state()
    save()
    print(f"gpu-bench: {'done' if ok else 'some runs failed'} -> {out / f'gpu-bench-{gpu}.json'}")
    return 0 if ok else 1


class Terminated(Exception):
    """SIGTERM reached gpu-bench: a time limit around the whole command (``timeout``, a scheduler)."""


def _on_sigterm(signum: int, frame: Any) -> None:
    raise Terminated("SIGTERM: the command's own time limit was reached")


def _saver(summary: dict, path: Path) -> Any:
    """``save()``: write ``summary`` to ``path`` with the machine metadata and the GPU's state taken
    now, at the start (commit, versions, clocks, other processes), not when a run ends or dies."""
    from benchmarks.common import machine_info, write_result

    machine = machine_info()
    summary["gpu_state"] = {"start": gpu_state()}

    def save() -> None:
        summary["updated"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        write_result("gpu-bench", summary, path, machine)

    save()  # at once: a command killed during its first run still leaves a valid JSON naming it
    return save


def _one_run(run: Run, deadline: float, args, save: Any, summary: dict) -> bool:
    """Run one benchmark within what is left before ``deadline``; the summary is written before it
    (naming it under ``running``) and after it (and a cut training's charts drawn). False when
    gpu-bench was terminated: no further run."""
    t0, entry, go_on = time.perf_counter(), {}, True
    summary["running"] = run.name
    save()
    try:
        if run.module == "benchmarks.train":
            prepare_train_data(args.data)  # inside the deadline: the arms get what is left after it
            run = fit_train(run, deadline - time.monotonic())
        limit = min(run.timeout_s, deadline - time.monotonic())
        print(f"gpu-bench: {run.name} (limit {limit:.0f} s)", flush=True)
        entry["status"] = execute(run, limit) if limit >= 1 else "skipped: --limit-s was reached"
    except Terminated as err:
        entry["status"], go_on = str(err), False
    except Exception as err:  # e.g. the data could not be generated: the other runs still go
        entry["status"] = f"{type(err).__name__}: {err}"
    entry |= {"seconds": round(time.perf_counter() - t0, 1), "argv": [run.module, *run.argv]}
    summary["runs"][run.name] = entry
    summary.pop("running")
    if not go_on:
        summary["status"] = f"terminated during {run.name}"
    save()  # after every run, first: a kill keeps it
    if run.module == "benchmarks.train" and entry["status"] != 0:
        try:
            entry["partial_charts"] = chart_partial(run)
        except Exception as err:  # noqa: BLE001 - recorded; the summary is what matters
            entry["partial_charts"] = f"{type(err).__name__}: {err}"
        save()
    return go_on


if __name__ == "__main__":
    raise SystemExit(main())
