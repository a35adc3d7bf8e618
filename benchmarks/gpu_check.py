"""The GPU proof in one command: ``make gpu-check`` (``python -m benchmarks.gpu_check [--out DIR]``).

On any machine with an NVIDIA GPU and the packages installed (no network needed), in under 5
minutes on an H100, it runs every section below and writes ``gpu-check-<gpu>.json`` and ``.png``
under ``benchmarks/results/`` (or ``--out DIR``):

- ``device``: the GPU, torch/CUDA/CuPy versions and the CuPy extra that matches torch;
- ``pytest_gpu``: ``{passed, failed, skipped, errors}`` of ``pytest -m gpu tests``;
- ``cuda_matches_torch``: ``fastpipe.ops.crop_batch(backend="cuda")`` bit for bit equal to
  ``backend="torch"`` on 512x512x200 volumes, 96^3 windows at every border, flips, rotations where
  supported, intensity, f32/f16/bf16/u8/i16, denormals, and a volume past 2^31 voxels;
- ``crop_kernel_gbps`` / ``d2d_copy_gbps``: crop bytes moved per second against a device copy of as
  many bytes, both timed with CUDA events;
- ``cached_epoch_h2d_bytes``: host-to-device bytes the driver records over one GPU-cached epoch;
- ``gpu_vs_cpu_crop_speedup``: one RandCropByPosNegLabeld batch, CPU time over GPU time;
- ``nvml_samples``: samples ``GpuMonitor`` took during the check;
- ``compute_sanitizer``: memcheck of the crop and sampler kernels (``"not found"`` without it).

A section that fails records its error under ``errors`` and the others still run; each has a time
limit inside an overall one (``--timeout-s``). Exit status: 0 when every goal is met, 1 otherwise,
2 when there is no CUDA GPU (checked first, before anything else runs). Missing wheels are installed
from ``.whl/`` (``make gpu-wheels``) without the network when that folder exists.

The machine metadata and the GPU's state (clocks, temperature, other processes) are taken at the
start, and the JSON is written then and around every section (``status`` ``"running"``, the section
under ``running``), so a check killed at a time limit leaves a valid JSON naming what ran; at the end
``gpu_state`` holds the end values beside the start ones (SIGTERM: ``status`` says so).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from benchmarks._gpu_procs import descendants, kill_tree
from benchmarks._gpu_tools import junit_counts, run_pytest_gpu, run_sanitizer  # noqa: F401 (junit_counts: re-exported)

REPO = Path(__file__).resolve().parent.parent
NO_GPU = "no CUDA GPU on this machine (torch.cuda.is_available() is False): nothing was checked"
WHEEL_MODULES = {"nibabel": "nibabel", "nvtx": "nvtx", "isal": "isal", "monai": "monai"}
GOALS = {
    "cuda_matches_torch": "the CUDA crop equals the torch crop bit for bit in every case",
    "kernel_at_least_70pct_of_copy": "crop kernel >= 70% of device-to-device copy bandwidth",
    "no_volume_bytes_h2d": "a GPU-cached epoch copies no volume data host-to-device",
    "gpu_tests_green": "every GPU test passes (none failed, at least one ran)",
    "sanitizer_clean": "compute-sanitizer memcheck finds no error in the crop and sampler kernels",
    "nvml_sampled": "GpuMonitor took NVML samples during the check",
}


def require_gpu(name: str) -> None:
    """Exit with status 2 and a clear message unless a CUDA GPU is visible to torch."""
    import torch

    if not torch.cuda.is_available():
        print(f"{name}: {NO_GPU}", file=sys.stderr)
        raise SystemExit(2)


def ensure_wheels(repo: Path = REPO) -> dict[str, Any]:
    """Install the modules fastpipe needs from ``repo/.whl`` (offline) when they are missing;
    ``still_missing`` names those that cannot be imported after it (with ``why``)."""
    missing = _missing()
    wheels = repo / ".whl"
    if not missing or not wheels.is_dir():
        why = f"no {wheels} folder: run `make gpu-wheels` where there is network and carry .whl/ over"
        return {"missing": missing, "installed_from": None, "still_missing": missing} | (
            {"why": why} if missing else {}
        )
    target = wheels / "site"
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
           "--find-links", str(wheels), "--target", str(target), *missing]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    sys.path.insert(0, str(target))
    os.environ["PYTHONPATH"] = os.pathsep.join([str(target), str(repo), os.environ.get("PYTHONPATH", "")])
    importlib.invalidate_caches()
    still = _missing()
    py = f"Python {sys.version_info.major}.{sys.version_info.minor} ({sys.executable})"
    return {
        "missing": missing,
        "installed_from": str(wheels),
        "pip_rc": proc.returncode,
        "pip_err": proc.stderr[-500:],
        "still_missing": still,
    } | ({"why": f"pip could not install them from {wheels} for {py}: {proc.stderr[-300:]}"} if still else {})


def _missing() -> list[str]:
    return [pkg for mod, pkg in WHEEL_MODULES.items() if importlib.util.find_spec(mod) is None]


def run_section(name: str, fn: Any, limit_s: float, result: dict[str, Any]) -> None:
    """Run one section in a thread with a time limit; its keys go into ``result``, a failure into ``result["errors"]``."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["out"] = fn()
        except BaseException as err:  # noqa: BLE001 - recorded; the next section still runs
            box["err"] = f"{type(err).__name__}: {err}"

    t0 = time.perf_counter()
    worker = threading.Thread(target=target, name=f"gpu-check-{name}", daemon=True)
    worker.start()
    worker.join(max(1.0, limit_s))
    took = time.perf_counter() - t0
    result["section_s"][name] = round(took, 2)
    if worker.is_alive():
        result["errors"][name] = f"timed out after {limit_s:.0f} s"
        result["hung"] = True
    elif "err" in box:
        result["errors"][name] = box["err"]
    else:
        result.update(box["out"])
    print(
        f"  {name}: {'ERROR ' + result['errors'][name] if name in result['errors'] else 'done'} ({took:.1f} s)",
        flush=True,
    )


def goals(result: dict[str, Any]) -> dict[str, bool]:
    """Each goal of :data:`GOALS`, met or not (a missing figure is not met)."""
    tests = result.get("pytest_gpu") or {}
    gbps, copy = result.get("crop_kernel_gbps"), result.get("d2d_copy_gbps")
    sanitizer = result.get("compute_sanitizer")
    return {
        "cuda_matches_torch": result.get("cuda_matches_torch") is True,
        "kernel_at_least_70pct_of_copy": bool(gbps and copy and gbps >= 0.7 * copy),
        "no_volume_bytes_h2d": result.get("cached_epoch_no_volume_bytes") is True,
        "gpu_tests_green": tests.get("failed") == 0
        and tests.get("errors") == 0
        and tests.get("passed", 0) > 0,
        "sanitizer_clean": isinstance(sanitizer, dict) and sanitizer.get("status") == "clean",
        "nvml_sampled": (result.get("nvml_samples") or 0) > 0,
    }


def device_info() -> dict[str, Any]:
    """Section ``device``: the GPU, versions, and the CuPy extra that matches torch."""
    import torch

    from fastpipe.runtime._cuda_extra import cupy_extra, cupy_mismatch, install_hint

    props = torch.cuda.get_device_properties(0)
    info = {"device": torch.cuda.get_device_name(), "capability": list(torch.cuda.get_device_capability()),
            "memory_gib": round(props.total_memory / 2**30, 1), "torch": torch.__version__,
            "torch_cuda": torch.version.cuda, "cupy_extra": cupy_extra(torch.version.cuda)}  # fmt: skip
    try:
        import cupy

        runtime = cupy.cuda.runtime.runtimeGetVersion()
        info |= {"cupy": cupy.__version__, "cupy_cuda_runtime": runtime,
                 "cupy_mismatch": cupy_mismatch(torch.version.cuda, runtime)}  # fmt: skip
    except ImportError as err:
        info["cupy"] = f"missing ({err}): {install_hint(torch.version.cuda)}"
    except Exception as err:  # noqa: BLE001 - a CuPy that imports but cannot reach its CUDA runtime
        info["cupy"] = f"unusable ({type(err).__name__}: {err}): {install_hint(torch.version.cuda)}"
    return info


def slug(name: str) -> str:
    """A file-name form of a GPU name: ``NVIDIA H100 80GB HBM3`` -> ``nvidia-h100-80gb-hbm3``."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "gpu"


#: each section's time limit (s) inside the overall one; the subprocess sections end at theirs
SECTION_LIMITS_S = {"device": 20, "cuda_matches_torch": 60, "bandwidth": 20, "cached_epoch_h2d": 40,
                    "gpu_vs_cpu_crop_speedup": 30, "voxel_augment": 30, "pytest_gpu": 120,
                    "compute_sanitizer": 90}  # fmt: skip
#: the sections whose figures are timings: none runs while a section past its limit may still use the GPU
TIMED_SECTIONS = ("bandwidth", "gpu_vs_cpu_crop_speedup", "voxel_augment")


def run_all(dev: Any, timeout_s: float, result: dict[str, Any], save: Any = None) -> None:
    """Every section in order, each limited to what is left of ``timeout_s``, while NVML samples the GPU;
    ``save()`` (default none) writes the JSON before and after each section.

    A section past its limit cannot be stopped (its thread runs on): the timed sections after it are
    skipped, since they would time its GPU work with theirs.
    """
    from benchmarks import _gpu_cases as cases
    from benchmarks import _gpu_sections as sec
    from fastpipe.profiling import GpuMonitor

    deadline = time.monotonic() + timeout_s
    plan = [
        ("device", lambda lim: device_info()),
        ("cuda_matches_torch", lambda lim: cases.matches(dev)),
        ("bandwidth", lambda lim: sec.bandwidth(dev)),
        ("cached_epoch_h2d", lambda lim: sec.cached_epoch_h2d()),
        ("gpu_vs_cpu_crop_speedup", lambda lim: sec.speedup(dev)),
        ("voxel_augment", lambda lim: sec.voxel_augments(dev)),
        ("pytest_gpu", lambda lim: run_pytest_gpu(lim)),  # subprocesses: their own timeout
        ("compute_sanitizer", lambda lim: run_sanitizer(lim)),
    ]
    save = save or (lambda: None)
    mon = GpuMonitor(interval_s=0.1)
    with mon:
        for name, fn in plan:
            _nvml_figures(result, mon)
            save()
            left = deadline - time.monotonic() - 5
            running = [n for n, err in result["errors"].items() if err.startswith("timed out")]
            if left <= 1:
                result["errors"][name] = "skipped: the overall time limit was reached"
                continue
            if running and name in TIMED_SECTIONS:
                result["errors"][name] = (
                    f"skipped: {', '.join(running)} timed out and may still run on the GPU; "
                    "a timing beside it would measure both"
                )
                continue
            limit = min(SECTION_LIMITS_S[name], left)
            result["running"] = name
            save()
            try:
                run_section(name, lambda fn=fn, limit=limit: fn(limit), limit + 5, result)
            finally:
                _nvml_figures(result, mon)
            result.pop("running")
    save()


def _nvml_figures(result: dict[str, Any], mon: Any) -> None:
    result["nvml_samples"] = len(mon.records)
    result["nvml"] = mon.summary() if mon.records else {"available": mon.available}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="gpu-check", description=__doc__.splitlines()[0])
    p.add_argument("--out", default=None, help="folder of the JSON and PNG (default benchmarks/results)")
    p.add_argument("--timeout-s", type=float, default=285.0, help="overall time limit (default 285)")
    p.add_argument("--sanitize-target", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    require_gpu("gpu-check")
    wheels = ensure_wheels()
    import torch

    dev = torch.device("cuda")
    if args.sanitize_target:
        from benchmarks._gpu_cases import sanitize_target

        sanitize_target(dev)
        return 0
    from benchmarks._gpu_report import CheckRecord

    result: dict[str, Any] = {"errors": {}, "section_s": {}, "wheels": wheels}
    result["device"] = torch.cuda.get_device_name()  # the device section adds the rest
    record = CheckRecord(result, Path(args.out) if args.out else None, slug(result["device"]))
    status = "complete"
    before = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        if wheels.get("still_missing"):  # every section imports fastpipe: fail at once, with the JSON
            result["errors"]["wheels"] = f"missing {wheels['still_missing']}: {wheels.get('why')}"
            print(f"gpu-check: {result['errors']['wheels']}", file=sys.stderr, flush=True)
        else:
            run_all(dev, args.timeout_s, result, record.save)
    except Terminated as err:
        status = f"terminated during {result.get('running', 'the check')}: {err}"
        result["hung"] = result.get("hung") or "running" in result  # its section's thread runs on
        for pid in descendants(os.getpid()):  # a subprocess section's tree (pytest, the sanitizer)
            kill_tree(pid)
    finally:
        signal.signal(signal.SIGTERM, before)
    result["goals"] = goals(result)
    json_path, png_path = record.finish(status)
    met = all(result["goals"].values()) and status == "complete"
    print(f"gpu-check: {status}; goals {'all met' if met else 'NOT all met'}: {result['goals']}")
    print(f"  -> {json_path}\n  -> {png_path}", flush=True)
    if result.get("hung"):
        os._exit(0 if met else 1)  # a timed-out section may still hold a thread
    return 0 if met else 1


class Terminated(Exception):
    """SIGTERM reached gpu-check: a time limit around the whole command (``timeout``, a scheduler)."""


def _on_sigterm(signum: int, frame: Any) -> None:
    raise Terminated("SIGTERM: the command's own time limit was reached")


if __name__ == "__main__":
    raise SystemExit(main())
