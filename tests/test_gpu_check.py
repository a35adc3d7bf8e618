"""``make gpu-check`` / ``make gpu-bench`` without a GPU, and the check's JSON and PNG assembled from stand-in sections."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from benchmarks import _gpu_cases as cases
from benchmarks import _gpu_sections as sec
from benchmarks import gpu_check
from benchmarks._gpu_report import write_report

REPO = Path(__file__).resolve().parent.parent
no_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU exit")
NO_CUDA_ENV = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}


@no_gpu
@pytest.mark.timeout(60)
@pytest.mark.parametrize("module", ["benchmarks.gpu_check", "benchmarks.gpu_bench"])
def test_without_gpu_the_scripts_stop_at_once(module):
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", module], cwd=REPO, capture_output=True, text=True, env=NO_CUDA_ENV
    )
    assert proc.returncode == 2 and "no CUDA GPU" in proc.stderr, proc.stderr
    assert time.perf_counter() - t0 < 30 and not proc.stdout


@no_gpu
@pytest.mark.timeout(60)
@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
@pytest.mark.parametrize("target", ["gpu-check", "gpu-bench"])
def test_without_gpu_the_make_targets_fail_with_the_message(target, tmp_path):
    cmd = ["make", "-s", target, f"PYTHON={sys.executable}", f"OUT={tmp_path}"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=NO_CUDA_ENV)
    assert proc.returncode != 0 and "no CUDA GPU" in proc.stderr
    assert not list(tmp_path.iterdir())


@pytest.mark.timeout(60)
@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_a_hung_nvidia_smi_does_not_stall_the_gpu_targets(tmp_path):
    fake = tmp_path / "nvidia-smi"  # a wedged driver: nvidia-smi never answers
    fake.write_text("#!/bin/sh\nsleep 30\n")
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{tmp_path}{os.pathsep}{os.environ['PATH']}"}
    t0 = time.perf_counter()
    for target in ("gpu-check", "gpu-bench"):
        proc = subprocess.run(["make", "-n", target], cwd=REPO, capture_output=True, text=True, env=env)
        assert proc.returncode == 0 and "benchmarks.gpu_" in proc.stdout, proc.stderr
    assert time.perf_counter() - t0 < 10


def _fake_result(**over):
    result = {
        "device": "Fake GPU 80GB",
        "errors": {},
        "pytest_gpu": {"passed": 12, "failed": 0, "skipped": 1, "errors": 0},
        "cuda_matches_torch": True,
        "crop_kernel_gbps": 2300.0,
        "d2d_copy_gbps": 3000.0,
        "cached_epoch_h2d_bytes": 1920,
        "cached_epoch_largest_h2d_copy": 240,
        "cached_epoch_no_volume_bytes": True,
        "gpu_vs_cpu_crop_speedup": 41.0,
        "nvml_samples": 900,
        "compute_sanitizer": {"status": "clean", "errors": 0},
    }
    return result | over


def test_goals_follow_the_figures():
    assert all(gpu_check.goals(_fake_result()).values())
    g = gpu_check.goals(_fake_result(crop_kernel_gbps=2000.0, cuda_matches_torch=False))
    assert not g["kernel_at_least_70pct_of_copy"] and not g["cuda_matches_torch"]
    g = gpu_check.goals(_fake_result(pytest_gpu={"passed": 0, "failed": 0, "errors": 0}))
    assert not g["gpu_tests_green"]
    assert not any(gpu_check.goals({"errors": {}}).values())  # missing figures are not met
    assert set(gpu_check.goals(_fake_result())) == set(gpu_check.GOALS)


@pytest.mark.parametrize(
    "over",
    [
        {"compute_sanitizer": {"status": "errors", "errors": 3, "exit_code": 9}},
        {"compute_sanitizer": "not found"},
        {"compute_sanitizer": {"status": "timed out after 90 s"}},
        {"nvml_samples": 0},
    ],
)
def test_a_sanitizer_error_or_no_nvml_sample_fails_the_check(over):
    """docs/gpu-check.md gives both a goal: a memcheck error in the kernels must not exit 0."""
    assert not all(gpu_check.goals(_fake_result(**over)).values())


def test_report_writes_json_with_every_key_and_a_png(tmp_path):
    result = _fake_result()
    result["goals"] = gpu_check.goals(result)
    json_path, png_path = write_report(result, tmp_path, gpu_check.slug("NVIDIA H100 80GB HBM3"))
    assert json_path.name == "gpu-check-nvidia-h100-80gb-hbm3.json"
    doc = json.loads(json_path.read_text())
    for key in ("device", "pytest_gpu", "cuda_matches_torch", "crop_kernel_gbps", "d2d_copy_gbps",
                "cached_epoch_h2d_bytes", "gpu_vs_cpu_crop_speedup", "nvml_samples", "compute_sanitizer",
                "machine", "goals"):  # fmt: skip
        assert key in doc, key
    assert png_path.exists() and png_path.stat().st_size > 10_000


def test_junit_counts():
    xml = """<testsuites><testsuite>
      <testcase classname="a" name="ok"/><testcase classname="a" name="bad"><failure/></testcase>
      <testcase classname="b" name="skip"><skipped/></testcase><testcase classname="b" name="err"><error/></testcase>
    </testsuite></testsuites>"""
    got = gpu_check.junit_counts(xml)
    assert (got["passed"], got["failed"], got["skipped"], got["errors"]) == (1, 1, 1, 1)
    assert got["failed_tests"] == ["a::bad", "b::err"]


def test_a_failing_or_hanging_section_is_recorded_and_the_next_runs():
    result = {"errors": {}, "section_s": {}}
    gpu_check.run_section("boom", lambda: 1 / 0, 5, result)
    gpu_check.run_section("slow", lambda: time.sleep(3) or {"late": 1}, 1, result)
    gpu_check.run_section("fine", lambda: {"x": 1}, 5, result)
    assert result["errors"]["boom"].startswith("ZeroDivisionError")
    assert "timed out" in result["errors"]["slow"] and result["hung"] and "late" not in result
    assert result["x"] == 1


@pytest.mark.timeout(120)
def test_main_assembles_every_section_with_stand_ins(monkeypatch, tmp_path):
    """The whole check on the CPU: real sections on tiny CPU data where they can run, stand-ins for the rest."""
    cpu = torch.device("cpu")
    monkeypatch.setattr(gpu_check, "require_gpu", lambda name: None)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "Stand-in GPU")
    monkeypatch.setattr(gpu_check, "device_info", lambda: {"device": "Stand-in GPU"})
    real_matches, real_bw, real_speed = cases.matches, sec.bandwidth, sec.speedup
    monkeypatch.setattr(cases, "matches", lambda dev: real_matches(cpu, "torch", small=True))
    monkeypatch.setattr(sec, "bandwidth", lambda dev: real_bw(cpu, "torch", small=True, repeats=2))
    monkeypatch.setattr(sec, "speedup", lambda dev: real_speed(cpu, small=True, repeats=1))
    real_voxel = sec.voxel_augments
    monkeypatch.setattr(sec, "voxel_augments", lambda dev: real_voxel(cpu, small=True, repeats=1))
    monkeypatch.setattr(sec, "cached_epoch_h2d", lambda: (_ for _ in ()).throw(RuntimeError("needs CUDA")))
    monkeypatch.setattr(
        gpu_check,
        "run_pytest_gpu",
        lambda lim: {"pytest_gpu": {"passed": 3, "failed": 0, "skipped": 0, "errors": 0}},
    )
    monkeypatch.setattr(gpu_check, "run_sanitizer", lambda lim: {"compute_sanitizer": "not found"})
    rc = gpu_check.main(["--out", str(tmp_path), "--timeout-s", "100"])
    doc = json.loads((tmp_path / "gpu-check-stand-in-gpu.json").read_text())
    assert rc == 1  # the cached-epoch section failed, so its goal is not met
    assert doc["errors"] == {"cached_epoch_h2d": "RuntimeError: needs CUDA"}
    assert doc["cuda_matches_torch"] is True and len(doc["match_cases"]) == 7
    assert doc["crop_kernel_gbps"] > 0 and doc["d2d_copy_gbps"] > 0 and doc["gpu_vs_cpu_crop_speedup"] > 0
    assert doc["crop_backend"] == "torch"  # the stand-in's "GPU" crop is the torch path, and says so
    assert doc["batch_kernel_gbps"] > 0 and doc["batch_fraction_of_copy"] > 0  # image + label in one call
    by_lanes = doc["batch_kernel_gbps_by_lanes"]  # the lanes sweep: 1..32 threads per row, default last
    assert list(by_lanes) == ["1", "2", "4", "8", "16", "32"] and by_lanes["4"] == doc["batch_kernel_gbps"]
    assert doc["tutorial_batch_kernel_gbps"] > 0 and doc["tutorial_batch_fraction_of_copy"] > 0
    assert (
        0 < doc["tutorial_batch_crops_flipped_or_turned"] < 8 and 0 < doc["tutorial_batch_crops_shifted"] < 8
    )
    assert doc["voxel_augment_crops"] == 4 and doc["voxel_augment_batch_ms"] > 0
    assert doc["voxel_augment_speedup"] > 0 and doc["voxel_augment_monai_per_crop_ms"] > 0
    assert doc["compute_sanitizer"] == "not found" and doc["nvml_samples"] == 0
    assert doc["goals"]["no_volume_bytes_h2d"] is False and doc["goals"]["gpu_tests_green"] is True
    assert (tmp_path / "gpu-check-stand-in-gpu.png").exists()


def test_a_mismatching_backend_is_caught(monkeypatch):
    import fastpipe.ops as ops

    real = ops.crop_batch

    def off_by_one(*args, backend="auto", **kwargs):
        out = real(*args, backend="torch", **kwargs)
        return out if backend == "torch" else out + 1

    monkeypatch.setattr(ops, "crop_batch", off_by_one)
    res = cases.matches(torch.device("cpu"), "cuda", small=True)
    assert res["cuda_matches_torch"] is False and not any(r["bit_equal"] for r in res["match_cases"])


def test_border_starts_cover_both_ends():
    starts = cases.border_starts((512, 512, 200), (96, 96, 96))
    assert len(starts) == 27 and (0, 0, 0) in starts and (416, 416, 104) in starts


@pytest.mark.timeout(120)
def test_every_test_taking_cuda_device_is_selected_by_the_gpu_marker():
    """``pytest -m gpu`` (the check's ``pytest_gpu``) must run a GPU test whose ``@pytest.mark.gpu`` was forgotten."""
    target = "tests/transforms/test_compact_indices.py"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-m", "gpu", "-p", "no:cacheprovider", target],
        cwd=REPO, capture_output=True, text=True, timeout=110,
    )  # fmt: skip
    assert f"{target}::test_same_seed_same_crops_on_cpu_and_gpu" in proc.stdout, proc.stdout[-2000:]


def test_device_section_survives_a_cupy_that_cannot_reach_its_runtime(monkeypatch):
    """The GPU, torch and the CuPy to install stay in the JSON when CuPy imports but its runtime fails."""
    import types

    def broken():
        raise RuntimeError("cudaErrorInsufficientDriver")

    fake = types.SimpleNamespace(
        __version__="14.0", cuda=types.SimpleNamespace(runtime=types.SimpleNamespace())
    )
    fake.cuda.runtime.runtimeGetVersion = broken
    monkeypatch.setitem(sys.modules, "cupy", fake)
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    monkeypatch.setattr(
        torch.cuda, "get_device_properties", lambda i: types.SimpleNamespace(total_memory=2**30)
    )
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "Stand-in GPU")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (9, 0))
    info = gpu_check.device_info()
    assert info["device"] == "Stand-in GPU" and info["cupy_extra"] == "gpu-cu13"
    assert "cudaErrorInsufficientDriver" in info["cupy"] and "cupy-cuda13x" in info["cupy"]


@pytest.mark.timeout(120)
def test_wheels_that_cannot_be_installed_stop_the_check_at_once_with_the_json(monkeypatch, tmp_path):
    """Without .whl/ (or with wheels for another Python) the check used to go on into sections that
    all fail importing fastpipe, or crash before writing anything; now it names what is missing."""
    (tmp_path / ".whl").mkdir()
    monkeypatch.setattr(gpu_check, "WHEEL_MODULES", {"no_such_module_fp": "no-such-wheel-fp"})
    got = gpu_check.ensure_wheels(tmp_path)
    assert got["still_missing"] == ["no-such-wheel-fp"] and "could not install" in got["why"]
    none = gpu_check.ensure_wheels(tmp_path / "elsewhere")
    assert none["still_missing"] == ["no-such-wheel-fp"] and "make gpu-wheels" in none["why"]
    monkeypatch.setattr(gpu_check, "require_gpu", lambda name: None)
    monkeypatch.setattr(gpu_check, "ensure_wheels", lambda: none)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "Stand-in GPU")
    monkeypatch.setattr(gpu_check, "run_all", lambda *a: pytest.fail("ran the sections without fastpipe"))
    assert gpu_check.main(["--out", str(tmp_path)]) == 1
    doc = json.loads((tmp_path / "gpu-check-stand-in-gpu.json").read_text())
    assert "no-such-wheel-fp" in doc["errors"]["wheels"] and not any(doc["goals"].values())


@pytest.mark.timeout(60)
def test_a_sanitizer_past_its_limit_ends_with_the_process_under_it(monkeypatch, tmp_path):
    """compute-sanitizer runs Python under it: a timeout used to kill the tool alone, and the Python
    under it went on with the GPU into the next section (or the next command)."""
    fake = tmp_path / "compute-sanitizer"
    fake.write_text(f"#!/bin/sh\necho started\nsleep 30 &\necho $! > {tmp_path}/child.pid\nsleep 30\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    t0 = time.perf_counter()
    got = gpu_check.run_sanitizer(2.0)["compute_sanitizer"]
    assert time.perf_counter() - t0 < 15 and got["status"] == "timed out after 2 s"
    child = int((tmp_path / "child.pid").read_text())
    time.sleep(0.2)
    alive = Path(f"/proc/{child}/stat").exists() and Path(f"/proc/{child}/stat").read_text().split()[2] != "Z"
    assert not alive, f"the process under the sanitizer ({child}) outlived the timeout"
    assert got["tail"][0] == "started"  # the output so far


@pytest.mark.timeout(120)
def test_a_test_module_that_cannot_import_does_not_stop_the_gpu_tests(tmp_path):
    """One test module importing a package the GPU image lacks (hypothesis, say) interrupted the whole
    collection: no GPU test ran and the section said only that collection failed."""
    (tmp_path / "pytest.ini").write_text("[pytest]\nmarkers =\n    gpu: needs a GPU\n")
    (tmp_path / "test_lacks.py").write_text("import no_such_package_fp\n")
    (tmp_path / "test_gpu.py").write_text(
        "import pytest\n\n\n@pytest.mark.gpu\ndef test_runs():\n    pass\n\n\ndef test_cpu():\n    pass\n"
    )
    got = gpu_check.run_pytest_gpu(60, str(tmp_path))["pytest_gpu"]
    assert (got["passed"], got["errors"], got["failed"]) == (1, 1, 0), got
    assert not gpu_check.goals({"pytest_gpu": got})["gpu_tests_green"]


@pytest.mark.timeout(60)
def test_no_timing_runs_beside_a_section_that_outlived_its_limit(monkeypatch):
    """A section past its limit goes on in its thread: the bandwidth, speed-up and augment timings after
    it measured its GPU work with theirs, and were published as if the GPU had been theirs alone."""
    ran: list[str] = []

    def hang(dev):
        ran.append("cuda_matches_torch")
        time.sleep(8)
        return {}

    def stand_in(name):
        return lambda *a: ran.append(name) or {}

    monkeypatch.setitem(gpu_check.SECTION_LIMITS_S, "cuda_matches_torch", 0.5)
    monkeypatch.setattr(gpu_check, "device_info", stand_in("device"))
    monkeypatch.setattr(cases, "matches", hang)
    for name, attr in (("bandwidth", "bandwidth"), ("cached_epoch_h2d", "cached_epoch_h2d"),
                       ("gpu_vs_cpu_crop_speedup", "speedup"), ("voxel_augment", "voxel_augments")):  # fmt: skip
        monkeypatch.setattr(sec, attr, stand_in(name))
    monkeypatch.setattr(gpu_check, "run_pytest_gpu", stand_in("pytest_gpu"))
    monkeypatch.setattr(gpu_check, "run_sanitizer", stand_in("compute_sanitizer"))
    result = {"errors": {}, "section_s": {}}
    gpu_check.run_all(torch.device("cpu"), 100, result)
    assert "timed out" in result["errors"]["cuda_matches_torch"]
    for timed in gpu_check.TIMED_SECTIONS:
        assert timed not in ran and result["errors"][timed].startswith(
            "skipped: cuda_matches_torch timed out"
        )
    assert ran == ["device", "cuda_matches_torch", "cached_epoch_h2d", "pytest_gpu", "compute_sanitizer"]


def test_a_label_crop_crossing_to_the_device_is_volume_data(monkeypatch):
    """The check allowed any copy below one float32 image crop: a uint8 label crop (a quarter of that)
    copied host-to-device every batch passed as 'no volume data'."""
    from benchmarks import gpu_copies
    from benchmarks.workload import PATCH

    label_crop = PATCH[0] * PATCH[1] * PATCH[2]  # uint8
    closed = []

    class Stub:
        def stats(self):
            return {"h2d_bytes": 0}

        def close(self):
            closed.append(True)

    def run(largest):
        epoch = {"h2d_bytes": 4 * largest, "h2d_count": 4}
        return {"h2d_bytes_per_epoch": [4 * largest], "epochs": [epoch], "largest_h2d_copy": largest,
                "crop_bytes_per_epoch": 0}  # fmt: skip

    monkeypatch.setattr(gpu_copies, "build", lambda data, device: (Stub(), Stub()))
    for largest, clean in ((832, True), (label_crop, False)):
        monkeypatch.setattr(gpu_copies, "count_epochs", lambda loader, n, dev, largest=largest: run(largest))
        out = sec.cached_epoch_h2d(volumes=1, shape=(8, 8, 8))
        assert out["cached_epoch_no_volume_bytes"] is clean, largest


def stand_in_sections(monkeypatch, during_bandwidth) -> None:
    """Every section a stand-in returning at once; ``bandwidth`` calls ``during_bandwidth()``."""
    monkeypatch.setattr(gpu_check, "require_gpu", lambda name: None)
    monkeypatch.setattr(gpu_check, "ensure_wheels", lambda: {"missing": []})
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "Stand-in GPU")
    monkeypatch.setattr(gpu_check, "device_info", lambda: {"device": "Stand-in GPU"})
    monkeypatch.setattr(cases, "matches", lambda dev: {"cuda_matches_torch": True})
    monkeypatch.setattr(sec, "bandwidth", lambda dev: during_bandwidth() or {"crop_kernel_gbps": 1.0})
    for attr in ("cached_epoch_h2d", "speedup", "voxel_augments"):
        monkeypatch.setattr(sec, attr, lambda *a: {})
    monkeypatch.setattr(gpu_check, "run_pytest_gpu", lambda lim: {"pytest_gpu": {"passed": 1}})
    monkeypatch.setattr(gpu_check, "run_sanitizer", lambda lim: {"compute_sanitizer": "not found"})


@pytest.mark.timeout(60)
def test_the_json_is_written_at_the_start_and_names_what_ran_when_the_run_dies(monkeypatch, tmp_path):
    """The JSON and its machine metadata were written only at the end: a check killed at its time limit
    left nothing, and clocks or other processes on the GPU were read after the run, not before it."""
    path, seen = tmp_path / "gpu-check-stand-in-gpu.json", []
    stand_in_sections(monkeypatch, lambda: seen.append(json.loads(path.read_text())))
    gpu_check.main(["--out", str(tmp_path), "--timeout-s", "60"])
    (mid,) = seen  # the file as a kill during the bandwidth section would leave it
    assert mid["status"] == "running" and mid["running"] == "bandwidth"
    assert list(mid["section_s"]) == ["device", "cuda_matches_torch"] and mid["cuda_matches_torch"] is True
    assert mid["machine"]["commit"] and mid["machine"]["versions"]["torch"] == torch.__version__
    assert "start" in mid["gpu_state"] and "end" not in mid["gpu_state"]
    doc = json.loads(path.read_text())
    assert doc["status"] == "complete" and "running" not in doc
    assert doc["machine"] == mid["machine"]  # taken once, at the start
    assert doc["gpu_state"]["start"] == mid["gpu_state"]["start"] and "taken" in doc["gpu_state"]["end"]
    assert doc["crop_kernel_gbps"] == 1.0


@pytest.mark.timeout(60)
def test_a_check_terminated_mid_section_says_so_in_its_json(monkeypatch, tmp_path):
    import signal

    def terminated():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(30)

    class Exited(Exception):
        pass

    def exit_now(code):
        raise Exited(code)

    stand_in_sections(monkeypatch, terminated)
    monkeypatch.setattr(gpu_check.os, "_exit", exit_now)
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Exited) as exited:  # at once: the section's thread would run on
        gpu_check.main(["--out", str(tmp_path), "--timeout-s", "60"])
    assert exited.value.args == (1,) and signal.getsignal(signal.SIGTERM) == before
    doc = json.loads((tmp_path / "gpu-check-stand-in-gpu.json").read_text())
    assert doc["status"].startswith("terminated during bandwidth: SIGTERM")
    assert "bandwidth" not in doc["section_s"] and doc["cuda_matches_torch"] is True
    assert "end" in doc["gpu_state"] and "running" not in doc


def test_gpu_state_reads_clocks_temperature_and_processes_through_nvml(monkeypatch):
    from types import SimpleNamespace

    import fastpipe.profiling.gpu_monitor as gm
    from benchmarks._gpu_meta import gpu_state

    class Nvml:
        NVML_CLOCK_SM, NVML_CLOCK_MEM, NVML_TEMPERATURE_GPU = 1, 2, 0

        def __getattr__(self, name):  # every other query: unsupported on this device
            if not name.startswith("nvml"):
                raise AttributeError(name)

            def unsupported(*args):
                raise RuntimeError("NVML_ERROR_NOT_SUPPORTED")

            return unsupported

        nvmlInit = nvmlShutdown = staticmethod(lambda: None)
        nvmlDeviceGetHandleByIndex = staticmethod(lambda i: f"gpu{i}")
        nvmlDeviceGetName = staticmethod(lambda h: b"NVIDIA H100 80GB HBM3")
        nvmlSystemGetDriverVersion = staticmethod(lambda: "580.65")
        nvmlDeviceGetClockInfo = staticmethod(lambda h, which: {1: 1980, 2: 2619}[which])
        nvmlDeviceGetTemperature = staticmethod(lambda h, sensor: 41)
        nvmlDeviceGetComputeRunningProcesses = staticmethod(
            lambda h: [
                SimpleNamespace(pid=os.getpid(), usedGpuMemory=2**30),
                SimpleNamespace(pid=1, usedGpuMemory=None),
            ]
        )

    monkeypatch.setattr(gm, "_import_pynvml", Nvml)
    state = gpu_state()
    assert state["name"] == "NVIDIA H100 80GB HBM3" and state["driver"] == "580.65"
    assert state["sm_clock_mhz"] == 1980 and state["mem_clock_mhz"] == 2619 and state["temperature_c"] == 41
    assert state["compute_processes"] == [
        {"pid": os.getpid(), "used_mib": 1024.0, "self": True},
        {"pid": 1, "used_mib": None, "self": False},
    ]
    assert state["power_w"] is None and state["pstate"] is None  # unsupported: absent, not a crash


@pytest.mark.timeout(90)
def test_a_terminated_check_ends_the_subprocesses_of_its_running_section(monkeypatch, tmp_path):
    """SIGTERM during pytest_gpu (or the sanitizer) ended the check with os._exit while the section's
    subprocess tree, still on the GPU, lived on with nobody to wait for it."""
    import signal
    import threading

    from benchmarks._gpu_procs import run_tree

    pidfile = tmp_path / "child.pid"
    child = f"import os, time; open({str(pidfile)!r}, 'w').write(str(os.getpid())); time.sleep(60)"

    def slow_tests(lim):
        threading.Timer(3.0, os.kill, (os.getpid(), signal.SIGTERM)).start()
        run_tree([sys.executable, "-c", child], 60)
        return {}

    class Exited(Exception):
        pass

    def exit_now(code):
        raise Exited(code)

    stand_in_sections(monkeypatch, lambda: None)
    monkeypatch.setattr(gpu_check, "run_pytest_gpu", slow_tests)
    monkeypatch.setattr(gpu_check.os, "_exit", exit_now)
    with pytest.raises(Exited):
        gpu_check.main(["--out", str(tmp_path), "--timeout-s", "80"])
    doc = json.loads((tmp_path / "gpu-check-stand-in-gpu.json").read_text())
    assert doc["status"].startswith("terminated during pytest_gpu")
    pid = int(pidfile.read_text())
    for _ in range(50):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        if Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z":
            break
        time.sleep(0.1)
    else:
        os.kill(pid, signal.SIGKILL)
        raise AssertionError(f"the section's subprocess {pid} outlived the terminated check")
