"""PyTorch profiler (Chrome trace) of a few ThreadDataLoader iterations of the spleen pipeline.

The PyTorch profiler is the successor of DLProf for PyTorch: it records every aten op (CPU and,
on a GPU, the CUDA kernels they launch) with its thread, so loader work and the training step
show up side by side. Open the trace in https://ui.perfetto.dev or chrome://tracing.

Usage:
    python profiling/torch_profile.py [--data data/spleen-small] [--iters 5] [--out profiling/out]

The data folder is synthesised (``fastpipe synth``) when it does not exist yet.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from a source checkout
    sys.path.insert(0, str(ROOT))

from fastpipe import CacheDataset, ThreadDataLoader  # noqa: E402
from fastpipe.datasets import load_decathlon_datalist, synthesize  # noqa: E402
from fastpipe.profiling.profile_run import build_chain, make_step, run_loop  # noqa: E402


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="data/spleen-small", help="MSD folder (synthesised when missing)")
    p.add_argument("--preset", default="spleen-small", help="synth preset used when --data is missing")
    p.add_argument("--iters", type=int, default=5, help="profiled iterations (default 5)")
    p.add_argument("--warmup", type=int, default=2, help="iterations before recording (default 2)")
    p.add_argument(
        "--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu"
    )
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--num-samples", type=int, default=4)
    p.add_argument("--roi", type=int, default=96)
    p.add_argument("--limit", type=int, default=None, help="use only the first N volumes")
    p.add_argument(
        "--step-ms", type=float, default=20.0, help="sleep this long as the step (without --model)"
    )
    p.add_argument(
        "--model",
        choices=["tiny-unet", "none"],
        default="tiny-unet" if torch.cuda.is_available() else "none",
        help="training step model (default tiny-unet on a GPU; none = sleep: 3D conv backward is slow on CPU)",
    )
    p.add_argument("--out", default="profiling/out")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    data_dir = Path(args.data)
    if not (data_dir / "dataset.json").is_file():
        print(f"{data_dir} has no dataset.json: synthesising preset {args.preset} there")
        synthesize(data_dir, args.preset, progress=False)
    device = torch.device(args.device)
    data = load_decathlon_datalist(data_dir)[: args.limit]
    chain = build_chain(str(device), [args.roi] * 3, args.num_samples)
    ds = CacheDataset(data, chain, progress=False)
    loader = ThreadDataLoader(ds, batch_size=args.batch_size, shuffle=True)
    step = make_step(args.step_ms, None if args.model == "none" else args.model, device)
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    schedule = torch.profiler.schedule(wait=0, warmup=args.warmup, active=args.iters, repeat=1)
    # the loader's producer thread does the crops: record every thread, not only this one
    all_threads = torch._C._profiler._ExperimentalConfig(profile_all_threads=True)
    with torch.profiler.profile(
        activities=activities, schedule=schedule, experimental_config=all_threads
    ) as prof:

        def step_and_tick(batch: dict) -> None:
            with torch.profiler.record_function("train_step"):
                step(batch)
            prof.step()

        run_loop(loader, args.warmup + args.iters, step_and_tick)
    loader.close()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    trace = out / "torch_trace.json"
    prof.export_chrome_trace(str(trace))
    sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    print(prof.key_averages().table(sort_by=sort, row_limit=20))
    print(f"wrote {trace} (open in https://ui.perfetto.dev or chrome://tracing)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
