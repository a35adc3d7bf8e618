"""A CPU training step beside an idle thread that owns an OpenMP team, and beside one that does not.

    python -m benchmarks.omp_teams [--rounds 5 --steps 20]

torch runs a parallel CPU op on an OpenMP team owned by the calling thread. A thread that has run
one keeps its team (asleep) for as long as it lives. libgomp, now counting more threads than CPUs,
cuts the spin-waits of every team short, so the training loop's own parallel regions pay futex
wake-ups from then on. SmartCache's replacement workers live as long as the dataset and run the
prefix's torch ops; this measures what such a thread's OpenMP count costs the training step.

Each case runs in a process of its own (a team, once made, stays), the cases in a seeded random order
per round, ``--rounds`` rounds. In every process the main thread takes training steps of the CPU
preset of ``make bench-train`` (MONAI's UNet, DiceCE, 8 crops): first 5 dropped, then the median
of ``--steps``. Cases:

- ``alone``: no other thread;
- ``idle_team``: beside a thread that ran one parallel op with torch's thread count, then waits;
- ``idle_one_thread``: the same thread with OpenMP set to 1 for itself.

Replacement workers on one OpenMP thread each were tried on this evidence and reverted: over ten
seeds of ``make bench-train`` the SmartCache arms' pass did not change (``docs/train.md``).

Writes ``benchmarks/results/omp-teams-cpu.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import threading
import time
from typing import Any

import torch

from benchmarks.common import machine_info, round_orders, spread, write_result

CASES = ("alone", "idle_team", "idle_one_thread")
WARMUP_STEPS = 5


def _idle_thread(omp_threads: int | None, stop: threading.Event) -> threading.Thread:
    """A thread that runs one parallel torch op (``omp_threads`` OpenMP threads, ``None``: torch's
    count), then waits for ``stop``; returned once the op is done."""
    from fastpipe.runtime import _openmp

    ready = threading.Event()

    def body() -> None:
        if omp_threads is not None:
            _openmp.set_this_thread(omp_threads)
        (torch.rand(1 << 22) * 2).sum()  # large enough for torch to run it in parallel
        ready.set()
        stop.wait()

    t = threading.Thread(target=body, name="idle-worker", daemon=True)
    t.start()
    ready.wait()
    return t


def child(case: str, steps: int) -> dict[str, Any]:
    """In this process: the median training step (ms) of the CPU preset in ``case``."""
    from benchmarks.train_recipe import TrainConfig, make_loss, make_model
    from fastpipe.runtime import _openmp

    cfg = TrainConfig()
    torch.manual_seed(0)
    model = make_model(cfg)
    loss_fn = make_loss()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    n = cfg.batch_size * cfg.num_samples
    x = torch.rand(n, 1, *cfg.patch)
    y = (torch.rand(n, 1, *cfg.patch) > 0.8).float()
    stop = threading.Event()
    if case != "alone":
        _idle_thread(1 if case == "idle_one_thread" else None, stop)
    times = []
    for i in range(WARMUP_STEPS + steps):
        t0 = time.perf_counter()
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        float(loss.detach())
        if i >= WARMUP_STEPS:
            times.append(time.perf_counter() - t0)
    stop.set()
    return {
        "step_ms": 1e3 * statistics.median(times),
        "torch_threads": torch.get_num_threads(),
        "per_thread_openmp": _openmp.available(),
    }


def _run_child(case: str, steps: int) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "benchmarks.omp_teams", "--child", case, "--steps", str(steps)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> dict[str, Any]:
    machine = machine_info()  # the commit the run starts on (the result may be written minutes later)
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--child", choices=CASES, default=None, help=argparse.SUPPRESS)
    p.add_argument("--out", default=None, help="result path (default benchmarks/results/omp-teams-cpu.json)")
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.steps)))
        return {}
    samples: dict[str, list[dict[str, Any]]] = {c: [] for c in CASES}
    for order in round_orders(list(CASES), args.rounds, order="shuffle", seed=0):
        for case in order:
            samples[case].append(_run_child(case, args.steps))
    step_ms = {c: [s["step_ms"] for s in v] for c, v in samples.items()}
    med = {c: statistics.median(v) for c, v in step_ms.items()}
    result = {
        "config": {
            "rounds": args.rounds,
            "steps": args.steps,
            "warmup_steps": WARMUP_STEPS,
            "model": "benchmarks.train_recipe cpu preset",
            "process_per_case": True,
        },  # fmt: skip
        "torch_threads": samples["alone"][0]["torch_threads"],
        "per_thread_openmp": samples["alone"][0]["per_thread_openmp"],
        "step_ms": {c: spread(v) for c, v in step_ms.items()},
        "ratios": {
            "idle_team_vs_alone": med["idle_team"] / med["alone"],
            "idle_one_thread_vs_alone": med["idle_one_thread"] / med["alone"],
        },
    }
    path = write_result("omp-teams-cpu", result, args.out, machine=machine)
    print("median ms per step:", {c: round(m, 1) for c, m in med.items()})
    print({k: round(v, 2) for k, v in result["ratios"].items()})
    print(f"wrote {path}")
    return result


if __name__ == "__main__":
    main()
