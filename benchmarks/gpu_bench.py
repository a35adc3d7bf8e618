"""The GPU rows of ``make bench`` and a short ``--train``, in under 6 minutes: ``make gpu-bench``.

Runs ``benchmarks.spleen`` twice on the ``spleen-small`` look-alike data (generated when missing):

1. rows ``fastpipe-gpu-cache`` (cache and crops on the GPU) against the CPU rows ``fastpipe-cache``
   and ``monai-cache`` (3 timed epochs, 1 with the stand-in step);
2. ``--train`` with a short time budget per arm (UNet, the regular against the fast pipeline).

Writes ``gpu-bench-spleen-<gpu>.json`` / ``gpu-bench-train-<gpu>.json`` (plus the spleen PNG) under
``benchmarks/results/`` or ``--out DIR``, and ``gpu-bench-<gpu>.json`` with each run's exit status
and time. Without a CUDA GPU it stops at once with status 2.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.gpu_check import REPO, ensure_wheels, require_gpu, slug

GPU_ROWS = "fastpipe-gpu-cache,fastpipe-cache,monai-cache"


def runs(out: Path, gpu: str, threads: int, train_s: float) -> list[tuple[str, list[str], float]]:
    """``(name, argv, timeout_s)`` of each benchmark run."""
    common = ["--preset", "spleen-small", "--threads", str(threads)]
    return [
        ("spleen_gpu_rows", [*common, "--rows", GPU_ROWS, "--epochs", "3", "--step-epochs", "1",
                             "--out", str(out / f"gpu-bench-spleen-{gpu}.json")], 190.0),
        ("train", [*common, "--rows", "fastpipe-gpu-cache", "--epochs", "1", "--step-epochs", "1", "--no-plot",
                   "--train", "--train-max-s", str(train_s), "--out", str(out / f"gpu-bench-train-{gpu}.json")],
         2 * train_s + 80.0),
    ]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="gpu-bench", description=__doc__.splitlines()[0])
    p.add_argument("--out", default=None, help="result folder (default benchmarks/results)")
    p.add_argument("--threads", type=int, default=8)
    p.add_argument(
        "--train-max-s", type=float, default=45.0, help="time budget per training arm (default 45)"
    )
    args = p.parse_args(argv)
    require_gpu("gpu-bench")
    wheels = ensure_wheels()
    import torch

    from benchmarks.common import write_result

    out = Path(args.out) if args.out else REPO / "benchmarks" / "results"
    gpu = slug(torch.cuda.get_device_name())
    summary = {"device": torch.cuda.get_device_name(), "wheels": wheels, "runs": {}}
    for name, argv_run, timeout_s in runs(out, gpu, args.threads, args.train_max_s):
        print(f"gpu-bench: {name} (limit {timeout_s:.0f} s)", flush=True)
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(
                [sys.executable, "-m", "benchmarks.spleen", *argv_run], cwd=REPO, timeout=timeout_s
            )
            status = proc.returncode
        except subprocess.TimeoutExpired:
            status = f"timed out after {timeout_s:.0f} s"
        summary["runs"][name] = {
            "status": status,
            "seconds": round(time.perf_counter() - t0, 1),
            "argv": argv_run,
        }
    path = write_result("gpu-bench", summary, out / f"gpu-bench-{gpu}.json")
    ok = all(r["status"] == 0 for r in summary["runs"].values())
    print(f"gpu-bench: {'done' if ok else 'some runs failed'} -> {path}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
