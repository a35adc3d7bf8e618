"""GpuMonitor: degrades cleanly without NVML (for real here), records and plots with an NVML."""

from __future__ import annotations

import csv
import json
import time
import warnings
from types import SimpleNamespace

import pytest
import torch

import fastpipe.profiling.gpu_monitor as gm
from fastpipe.profiling import GpuMonitor


def nvml_works() -> bool:
    try:
        import pynvml

        pynvml.nvmlInit()
        pynvml.nvmlShutdown()
        return True
    except Exception:
        return False


HAS_NVML = nvml_works()


@pytest.fixture(autouse=True)
def _fresh_warning_state(monkeypatch):
    monkeypatch.setattr(gm, "_warned", False)


def run_twice_recording_warnings() -> tuple[list[GpuMonitor], list[warnings.WarningMessage]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        monitors = []
        for _ in range(2):
            with GpuMonitor(interval_s=0.01) as mon:
                time.sleep(0.05)
            monitors.append(mon)
    return monitors, [w for w in caught if "GpuMonitor" in str(w.message)]


def assert_empty_outputs(mon: GpuMonitor, tmp_path) -> None:
    assert mon.records == [] and not mon.available
    assert mon.summary()["samples"] == 0 and mon.summary()["gpu_util_mean_pct"] is None
    with mon.to_csv(tmp_path / "gpu.csv").open() as fh:
        rows = list(csv.reader(fh))
    assert rows == [list(gm.FIELDS)]
    doc = json.loads(mon.to_json(tmp_path / "gpu.json").read_text())
    assert doc["records"] == [] and doc["summary"]["available"] is False
    assert mon.plot(tmp_path / "gpu.png").stat().st_size > 1000


@pytest.mark.skipif(
    HAS_NVML, reason="this machine has a working NVML; the no-driver path cannot be run for real"
)
@pytest.mark.timeout(30)
def test_without_nvidia_driver_warns_once_and_records_nothing(tmp_path, caplog):
    monitors, caught = run_twice_recording_warnings()
    assert len(caught) == 1, [str(w.message) for w in caught]
    assert "NVML" in str(caught[0].message)
    assert sum("NVML" in r.getMessage() for r in caplog.records) == 1
    for mon in monitors:
        assert_empty_outputs(mon, tmp_path)
        mon.stop()  # idempotent


@pytest.mark.timeout(30)
def test_without_pynvml_installed_warns_once(tmp_path, monkeypatch):
    def missing():
        raise ImportError("No module named 'pynvml'")

    monkeypatch.setattr(gm, "_import_pynvml", missing)
    monitors, caught = run_twice_recording_warnings()
    assert len(caught) == 1 and "pynvml" in str(caught[0].message)
    assert_empty_outputs(monitors[0], tmp_path)


class FakeNvml:
    """An NVML double: only for the recording and plot logic (the no-NVML path is real above)."""

    NVML_PCIE_UTIL_TX_BYTES, NVML_PCIE_UTIL_RX_BYTES = 0, 1

    def __init__(self):
        self.calls = 0
        self.shutdowns = 0

    def nvmlInit(self):
        pass

    def nvmlShutdown(self):
        self.shutdowns += 1

    def nvmlDeviceGetHandleByIndex(self, i):
        return f"gpu{i}"

    def nvmlDeviceGetUtilizationRates(self, handle):
        self.calls += 1
        return SimpleNamespace(gpu=50 + self.calls % 2 * 10, memory=20)

    def nvmlDeviceGetMemoryInfo(self, handle):
        return SimpleNamespace(used=3 * 2**30, total=80 * 2**30)

    def nvmlDeviceGetPowerUsage(self, handle):
        return 250_000  # mW

    def nvmlDeviceGetPcieThroughput(self, handle, counter):
        raise RuntimeError("NVML_ERROR_NOT_SUPPORTED")  # e.g. not supported on this device


@pytest.mark.timeout(30)
def test_records_summary_csv_json_plot_with_an_nvml(tmp_path, monkeypatch):
    fake = FakeNvml()
    monkeypatch.setattr(gm, "_import_pynvml", lambda: fake)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning when NVML works
        with GpuMonitor(interval_s=0.01) as mon:
            time.sleep(0.2)
    mon.stop()
    assert fake.shutdowns == 1
    n = len(mon.records)
    assert 5 <= n <= 40
    ts = [r["t_s"] for r in mon.records]
    assert ts == sorted(ts)
    rec = mon.records[0]
    assert set(rec) == set(gm.FIELDS)
    assert rec["mem_used_mib"] == 3 * 1024 and rec["power_w"] == 250.0 and rec["pcie_tx_mbps"] is None
    summ = mon.summary()
    assert summ["samples"] == n and summ["power_mean_w"] == 250.0 and 50 <= summ["gpu_util_mean_pct"] <= 60
    assert summ["gpu_util_max_pct"] == 60 and summ["pcie_rx_mean_mbps"] is None
    with mon.to_csv(tmp_path / "g.csv").open() as fh:
        assert len(list(csv.DictReader(fh))) == n
    assert len(json.loads(mon.to_json(tmp_path / "g.json").read_text())["records"]) == n
    assert mon.plot(tmp_path / "g.png").stat().st_size > 5000


@pytest.mark.timeout(30)
def test_a_failing_sampler_never_crashes_the_job(monkeypatch):
    def broken_sample(nvml, handle):
        raise RuntimeError("driver went away")

    monkeypatch.setattr(gm, "_import_pynvml", FakeNvml)
    monkeypatch.setattr(gm, "sample", broken_sample)
    with GpuMonitor(interval_s=0.01) as mon:
        time.sleep(0.05)
    assert mon.records == [] and isinstance(mon.error, RuntimeError)


class FourGpuNvml(FakeNvml):
    """A machine of four GPUs, NVML numbering them 0..3 by PCI order."""

    UUIDS = [f"GPU-{i:08x}-aaaa-bbbb-cccc-dddddddddddd" for i in range(4)]

    def nvmlDeviceGetHandleByUUID(self, uuid):
        if uuid not in self.UUIDS:
            raise RuntimeError("NVML_ERROR_NOT_FOUND")
        return f"gpu{self.UUIDS.index(uuid)}"


def fake_visible_gpu(monkeypatch, uuid: str) -> None:
    """torch.cuda seeing one GPU (``CUDA_VISIBLE_DEVICES=<one>``) whose UUID torch prints as ``uuid``."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: SimpleNamespace(uuid=uuid))


@pytest.mark.timeout(30)
def test_cuda_device_is_found_by_uuid_under_cuda_visible_devices(monkeypatch):
    """CUDA_VISIBLE_DEVICES=3: cuda:0 is NVML device 3; the monitor used to sample NVML device 0."""
    monkeypatch.setattr(gm, "_import_pynvml", FourGpuNvml)
    fake_visible_gpu(monkeypatch, FourGpuNvml.UUIDS[3].removeprefix("GPU-"))  # torch's str(uuid)
    nvml, handle, match = gm._init_nvml(0)
    assert (handle, match) == ("gpu3", "uuid")
    with GpuMonitor(interval_s=0.01, device=0) as mon:
        time.sleep(0.03)
    assert mon.summary()["nvml_match"] == "uuid"


@pytest.mark.timeout(30)
def test_an_unknown_uuid_falls_back_to_the_index(monkeypatch):
    monkeypatch.setattr(gm, "_import_pynvml", FourGpuNvml)
    fake_visible_gpu(monkeypatch, "ffffffff-0000-0000-0000-000000000000")
    assert gm._init_nvml(0)[1:] == ("gpu0", "index")


def test_interval_must_be_positive():
    with pytest.raises(ValueError, match="interval_s"):
        GpuMonitor(interval_s=0)


@pytest.mark.skipif(not HAS_NVML, reason="needs an NVIDIA driver (NVML); none on this machine")
@pytest.mark.gpu
@pytest.mark.timeout(30)
def test_real_nvml_records(tmp_path):
    with GpuMonitor(interval_s=0.05) as mon:
        time.sleep(0.5)
    assert mon.available and len(mon.records) >= 3
    assert mon.nvml_match == "uuid"  # torch's cuda:0 found in NVML by its UUID
    assert mon.records[0]["mem_total_mib"] > 0
    assert mon.plot(tmp_path / "gpu.png").exists()


@pytest.mark.timeout(30)
def test_started_again_the_monitor_goes_on_with_one_timeline(monkeypatch):
    monkeypatch.setattr(gm, "_import_pynvml", FakeNvml)
    mon = GpuMonitor(interval_s=0.01)
    with mon:
        time.sleep(0.1)
    first = len(mon.records)
    time.sleep(0.1)
    with mon:
        time.sleep(0.05)
    ts = [r["t_s"] for r in mon.records]
    assert first > 0 and len(ts) > first
    assert all(a < b for a, b in zip(ts[:-1], ts[1:], strict=True)), (
        ts
    )  # t_s restarted at 0 in the second session
    assert mon.summary()["duration_s"] == ts[-1] > ts[first] >= 0.2  # the gap between sessions counts


@pytest.mark.timeout(30)
def test_a_sampler_stop_could_not_join_is_not_revived_by_the_next_start(monkeypatch):
    import threading

    release, samplers = threading.Event(), set()

    def slow_sample(nvml, handle):
        samplers.add(threading.get_ident())
        release.wait(5)  # the first session's sampler hangs in a driver call
        return {}

    monkeypatch.setattr(gm, "_import_pynvml", FakeNvml)
    monkeypatch.setattr(gm, "sample", slow_sample)
    mon = GpuMonitor(interval_s=0.01).start()
    time.sleep(0.05)
    old = mon._thread
    mon.stop(timeout_s=0.05)  # cannot join: the sampler is blocked
    mon.start()
    release.set()
    old.join(2)
    assert not old.is_alive()  # it saw its stop; the second start cleared it and it sampled on
    mon.stop()


class SteppedClock:
    """A clock only the test moves: each NVML sample costs ``sample_s``, a wait ``late_s`` more than asked."""

    def __init__(self, sample_s: float, late_s: float, samples: int):
        self.now, self.sample_s, self.late_s, self.samples = 100.0, sample_s, late_s, samples
        self.taken: list[float] = []

    def __call__(self) -> float:
        return self.now


def run_on_clock(monkeypatch, clock: SteppedClock, interval_s: float) -> GpuMonitor:
    """The sampler loop itself, in this thread, on ``clock``, until ``clock.samples`` samples."""
    stop = SimpleNamespace(done=False)

    def timed_sample(nvml, handle):
        clock.taken.append(clock.now)
        clock.now += clock.sample_s
        stop.done = len(clock.taken) >= clock.samples
        return {"timestamp": clock.taken[-1]}

    def wait(seconds):
        clock.now += seconds + clock.late_s  # every wake-up comes late, as a real one does

    stop.is_set, stop.wait = (lambda: stop.done), wait
    monkeypatch.setattr(gm, "_clock", clock)
    monkeypatch.setattr(gm, "sample", timed_sample)
    mon = GpuMonitor(interval_s=interval_s)
    mon._run(FakeNvml(), "gpu0", stop, t0=clock.now)
    assert mon.error is None
    return mon


def test_sampling_keeps_a_fixed_schedule_despite_late_wakeups(monkeypatch):
    clock = SteppedClock(sample_s=0.002, late_s=0.0003, samples=200)
    mon = run_on_clock(monkeypatch, clock, interval_s=0.01)
    ts = [r["t_s"] for r in mon.records]
    # each sample at its tick plus at most one late wake-up: 200 samples span 1.99 s, not 2.05 s
    for k, t in enumerate(ts):
        assert k * 0.01 <= t <= k * 0.01 + 0.0003 + 1e-9, (k, t)
    assert ts == [t - 100.0 for t in clock.taken]  # t_s is when the sample was taken
    assert mon.missed_ticks == 0 and mon.summary()["missed_ticks"] == 0


def test_ticks_a_slow_sample_overran_are_skipped_and_counted(monkeypatch):
    clock = SteppedClock(sample_s=0.0255, late_s=0.0, samples=10)
    mon = run_on_clock(monkeypatch, clock, interval_s=0.01)
    ts = [r["t_s"] for r in mon.records]
    # 25.5 ms samples every 10 ms: the sampler goes back to back, each sample late in a tick's still
    # open slot; the ticks wholly passed meanwhile are skipped: 25 ticks over by 255 ms, 10 sampled
    assert ts == pytest.approx([k * 0.0255 for k in range(10)])
    assert mon.missed_ticks == 15 and mon.summary()["missed_ticks"] == 15
