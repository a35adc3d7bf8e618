"""Time to a foreground validation Dice for five data arms: ``python -m benchmarks.train`` (``make bench-train``).

Reproduces MONAI's fast-training experiment (and Clara Train's SmartCache arm) with MONAI's UNet,
DiceCE loss, Novograd and sliding-window validation; only how data reaches the model differs
between the arms (:mod:`benchmarks.train_arms`: the four published ones, and SmartCache over a
persistent cache). Each arm runs in its own subprocess, so its peak
memory is its own. Writes ``benchmarks/results/train-<machine>.json`` and two PNGs beside it.

``--config cpu`` (default without a GPU): look-alike ``spleen-train`` data, 32^3 crops, a small
MONAI UNet, target 0.85. ``--config tutorial`` (default with a GPU): ``spleen-full`` look-alike
data or a real Task09 folder (``--data``), the tutorial's UNet, 96^3 crops, target 0.94.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import RESULTS_DIR, machine_info, write_result
from benchmarks.train_arms import ARMS
from benchmarks.train_recipe import PUBLISHED, config, recipe_text

REPO = Path(__file__).resolve().parent.parent
INTERLEAVED = "interleaved"  # the worker name of benchmarks.train_interleaved's run


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.train", description=__doc__)
    p.add_argument("--config", default=None, help="cpu or tutorial (default: tutorial on a GPU, else cpu)")
    p.add_argument("--data", type=Path, default=None, help="an MSD folder (e.g. a real Task09_Spleen)")
    p.add_argument("--preset", default=None, help="look-alike preset instead of the config's")
    p.add_argument("--num-volumes", type=int, default=None, help="use only the first N volumes")
    p.add_argument("--arms", default=",".join(ARMS), help="comma-separated arms")
    p.add_argument("--target", type=float, default=None, help="foreground Dice target")
    p.add_argument("--max-s", type=float, default=None, help="time budget per arm (s)")
    p.add_argument("--max-epochs", type=int, default=None, help="epoch budget per arm")
    p.add_argument(
        "--arm-timeout-s",
        type=float,
        default=None,
        help="kill an arm's process after this long (default 3x --max-s); the arm is then an error",
    )
    p.add_argument("--threads", type=int, default=None, help="loader workers/threads per arm")
    p.add_argument("--val-volumes", type=int, default=None, help="volumes held out for validation")
    p.add_argument("--seed", type=int, default=None, help="seed of the weights and the random suffix (0)")
    p.add_argument(
        "--interleaved-rounds",
        type=int,
        default=None,
        help="then rounds of the arms' epochs interleaved in one process (cpu: 6, else 0)",
    )
    p.add_argument("--out", type=Path, default=None, help="result JSON (default results/train-<host>.json)")
    p.add_argument("--no-plot", action="store_true")
    p.add_argument("--in-process", action="store_true", help="run the arms in this process (tests)")
    p.add_argument("--worker-arm", default=None, help=argparse.SUPPRESS)
    p.add_argument("--worker-out", default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def _config(args: argparse.Namespace):
    name = args.config or ("tutorial" if torch.cuda.is_available() else "cpu")
    return config(
        name,
        target=args.target,
        max_s=args.max_s,
        max_epochs=args.max_epochs,
        threads=args.threads,
        val_volumes=args.val_volumes,
        preset=args.preset,
        seed=args.seed,
        interleaved_rounds=args.interleaved_rounds,
    )


def load_split(args: argparse.Namespace, cfg) -> tuple[list[dict], list[dict], Path]:
    """(train, val, root): the last ``cfg.val_volumes`` volumes validate, as the tutorial's split."""
    from fastpipe.datasets import load_decathlon_datalist, synthesize

    root = args.data or REPO / "data" / cfg.preset
    if args.data is None and not (root / "dataset.json").exists():
        print(f"generating look-alike data: {cfg.preset} -> {root}", flush=True)
        synthesize(root, preset=cfg.preset, seed=0, progress=True)
    data = load_decathlon_datalist(root)
    data = data[: args.num_volumes] if args.num_volumes else data
    if len(data) <= cfg.val_volumes:
        raise ValueError(f"{root}: {len(data)} volumes, need more than the {cfg.val_volumes} for validation")
    return data[: -cfg.val_volumes], data[-cfg.val_volumes :], root


def _run_worker(args: argparse.Namespace) -> int:
    cfg = _config(args)
    train, val, _ = load_split(args, cfg)
    torch.set_num_threads(cfg.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    partial = _partial_path(Path(args.worker_out))

    def keep(progress: dict) -> None:  # replaced whole, so a kill never leaves half a file
        tmp = partial.with_suffix(".tmp")
        tmp.write_text(json.dumps(progress, default=str))
        tmp.replace(partial)

    res = _in_process(args.worker_arm, train, val, cfg, device, _interleaved_arms(args.arms), keep)
    Path(args.worker_out).write_text(json.dumps(res, default=str))
    return 0


def _partial_path(out: Path) -> Path:
    """Where a worker keeps its arm's timeline so far (see ``train_arm``'s ``on_validation``)."""
    return out.with_name(out.name + ".partial")


def _run_arm(arm: str, argv: list[str], timeout_s: float) -> dict[str, Any]:
    """One arm in a fresh interpreter; a crash becomes a published error, not a lost arm."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        out = Path(f.name)
    cmd = [sys.executable, "-m", "benchmarks.train", *argv, "--worker-arm", arm, "--worker-out", str(out)]
    partial = _partial_path(out)
    try:
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout_s)
        if proc.returncode != 0 or not out.stat().st_size:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
            return _with_partial({"arm": arm, "error": " | ".join(tail)}, partial)
        return json.loads(out.read_text())
    except subprocess.TimeoutExpired:
        return _with_partial({"arm": arm, "error": f"timed out after {timeout_s:.0f} s"}, partial)
    finally:
        partial.unlink(missing_ok=True)


def _with_partial(failed: dict[str, Any], partial: Path) -> dict[str, Any]:
    """A failed arm with the validations it made before it was killed or crashed (a partial timeline)."""
    if partial.exists():
        failed["partial"] = json.loads(partial.read_text())
    return failed


def ratios(arms: list[dict], key: str = "time_to_target_s") -> dict[str, dict[str, float]]:
    """``regular``'s and ``monai-fast``'s ``key`` over each arm's (``time_to_target_s``: arms that reached it).

    With ``key="per_pass_s"`` the medians of the epoch times per pass over the training volumes are
    compared (a SmartCache epoch covers its window only, half the volumes): the data side alone, free
    of how many epochs each arm's random crops happened to need.
    """
    value = (lambda a: a[key]["median"]) if key == "per_pass_s" else (lambda a: a[key])
    by = {a["arm"]: a for a in arms if "error" not in a and (key == "per_pass_s" or a.get("reached"))}
    out: dict[str, dict[str, float]] = {}
    for base in ("regular", "monai-fast"):
        if base in by:
            out[f"vs_{base}"] = {name: value(by[base]) / value(a) for name, a in by.items()}
    return out


def _document(cfg, device, root, train, val, results, arms) -> dict[str, Any]:
    done = {r["arm"] for r in results}
    return {
        "config": {**asdict(cfg), "device": str(device), "amp": device.type == "cuda"},
        "dataset": str(root),
        "split": {"train": len(train), "val": len(val)},
        "recipe": recipe_text(cfg),
        "arms": results,
        "arms_not_run": [a for a in arms if a not in done],
        "ratios_time_to_target": ratios(results),
        "ratios_epoch_s": ratios(results, "per_pass_s"),  # per pass: a SmartCache epoch is half of one
        "published": PUBLISHED,
    }


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.worker_arm:
        return _run_worker(args)
    arms = [a for a in args.arms.split(",") if a]
    unknown = sorted(set(arms) - set(ARMS))
    if unknown:
        raise SystemExit(f"unknown arms {unknown}; choose from {list(ARMS)}")
    cfg = _config(args)
    train, val, root = load_split(args, cfg)
    machine = (
        machine_info()
    )  # the commit the arms start from: a commit or edit during the run must not relabel
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    child = [*argv, *([] if args.data else ["--data", str(root)])]
    arm_timeout_s = args.arm_timeout_s or cfg.max_s * 3
    out = args.out or RESULTS_DIR / f"train-{machine['host']}.json"
    results: list[dict[str, Any]] = []
    for i, arm in enumerate(arms, 1):
        print(f"[{i}/{len(arms)}] {arm} ...", flush=True)
        res = (
            _in_process(arm, train, val, cfg, device)
            if args.in_process
            else _run_arm(arm, child, arm_timeout_s)
        )
        results.append(res)
        print("    " + _one_line(res), flush=True)
        # written after every arm: a run cut short (a time limit around the whole command) keeps the
        # arms it finished, and says which ones it did not reach
        write_result("train", _document(cfg, device, root, train, val, results, arms), out, machine)
    chosen = _interleaved_arms(args.arms)
    if cfg.interleaved_rounds and len(chosen) >= 2:
        print(f"interleaved epochs ({cfg.interleaved_rounds} rounds) ...", flush=True)
        inter = (
            _in_process(INTERLEAVED, train, val, cfg, device, chosen)
            if args.in_process
            else _run_arm(INTERLEAVED, child, arm_timeout_s)
        )
        print("    " + _interleaved_line(inter), flush=True)
        doc = _document(cfg, device, root, train, val, results, arms)
        write_result("train", {**doc, "interleaved": inter}, out, machine)
    if not args.no_plot:
        from benchmarks.train_plot import plot_all

        for png in plot_all(json.loads(out.read_text()), out):
            print(f"chart: {png}")
    print(f"results: {out}")
    return 0


def train_from_matrix(root: Path, args: argparse.Namespace, out: Path) -> str:
    """``benchmarks.spleen --train``: run this experiment on the matrix's data; the result's path."""
    argv = ["--data", str(root), "--out", str(out), "--threads", str(args.threads)]
    for flag, value in (("--max-epochs", args.train_epochs), ("--max-s", args.train_max_s)):
        argv += [flag, str(value)] if value is not None else []
    argv += ["--target", str(args.dice_target)] if args.dice_target is not None else []
    from fastpipe.datasets import load_decathlon_datalist

    volumes = len(load_decathlon_datalist(root))
    if volumes <= _config(parse_args(argv)).val_volumes:  # spleen-small's 8 against the tutorial's 9
        argv += ["--val-volumes", str(max(1, volumes // 4))]  # a quarter validates, as in gpu-bench
    main(argv + (["--no-plot"] if args.no_plot else []))
    return str(out)


def _in_process(name, train, val, cfg, device, interleaved_arms=(), on_validation=None) -> dict[str, Any]:
    """Arm ``name`` trained in this process, or (``name`` = ``INTERLEAVED``) the interleaved epochs."""
    if name == INTERLEAVED:
        from benchmarks.train_interleaved import interleaved_epochs

        return interleaved_epochs(train, val, cfg, device, cfg.interleaved_rounds, interleaved_arms)
    from benchmarks.train_loop import train_arm

    return train_arm(name, train, val, cfg, device, on_validation)


def _interleaved_arms(arms: str) -> tuple[str, ...]:
    """The arms among ``--arms``, in :data:`benchmarks.train_arms.ARMS`'s order."""
    chosen = set(arms.split(","))
    return tuple(a for a in ARMS if a in chosen)


def _interleaved_line(res: dict) -> str:
    if "error" in res:
        return f"ERROR: {res['error']}"
    rows = ", ".join(f"{a} {r['per_pass_s']['median']:.2f} s" for a, r in res["arms"].items())
    vs = res["ratios_per_pass"].get("vs_monai-fast", {})
    faster = ", ".join(f"{a} {vs[a]:.2f}x" for a in vs if a.startswith("fastpipe"))
    return f"median per pass {rows}; vs monai-fast: {faster}"


def _one_line(res: dict) -> str:
    if "error" in res:
        return f"ERROR: {res['error']}"
    t, best = res["time_to_target_s"], res["best_dice"]
    reached = (
        f"target at {t:.1f} s (epoch {res['epochs_to_target']}, pass {res['passes_to_target']:g})"
        if res["reached"]
        else "target NOT reached"
    )
    return (
        f"{reached}, best Dice {best if best is None else round(best, 3)}, epoch {res['epoch_s']['median']:.2f} s, "
        f"data wait {100 * res['data_wait_fraction']:.0f}%, build {res['build_s']:.1f} s"
    )


if __name__ == "__main__":
    raise SystemExit(main())
