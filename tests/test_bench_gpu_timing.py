"""GPU check timings: the kernel figures queue every call while the GPU sleeps, and say so."""

from __future__ import annotations

import pytest
import torch

from benchmarks import _gpu_sections as sec
from benchmarks import _gpu_timing as gt


@pytest.fixture
def fake_cuda(monkeypatch):
    """torch.cuda events and spin kernel that log what the host queues; ``pending`` scripts
    ``start.query()``: True while the GPU has not reached the start event."""
    log, pending = [], []

    class Event:
        def __init__(self, enable_timing=False):
            pass

        def record(self):
            log.append("record")

        def query(self):
            return not pending.pop(0)

        def synchronize(self):
            pass

        def elapsed_time(self, end):
            return 1.0  # ms

    monkeypatch.setattr(torch.cuda, "Event", Event)
    monkeypatch.setattr(torch.cuda, "_sleep", lambda cycles: log.append(("sleep", cycles)))
    return log, pending


def test_every_call_is_queued_while_the_gpu_sleeps(fake_cuda):
    """The figures used to be events around 5 launches on an idle GPU: the host's launch work."""
    log, pending = fake_cuda
    pending += [False, True, True]  # the untimed first sample, then two GPU-bound ones
    info = gt.new_info()
    out = gt.kernel_s(
        lambda: log.append("call"), torch.device("cuda"), repeats=2, warmup=1, inner=3, info=info
    )
    assert out == [pytest.approx(1e-3 / 3)] * 2
    sample = [("sleep", gt.SLEEP_CYCLES), "record", "call", "call", "call", "record"]
    assert log == ["call", *sample, *sample, *sample]
    assert info == {"method": "sleep-then-events", "samples": 2, "gpu_bound_samples": 2,
                    "sleep_cycles": gt.SLEEP_CYCLES}  # fmt: skip


def test_a_sample_the_host_outran_is_taken_again_with_a_longer_sleep(fake_cuda):
    log, pending = fake_cuda
    pending += [True, False, True, True]
    info = gt.new_info()
    gt.kernel_s(lambda: None, torch.device("cuda"), repeats=2, warmup=0, info=info)
    sleeps = [e[1] for e in log if isinstance(e, tuple)][1:]  # after the untimed sample
    assert sleeps == [gt.SLEEP_CYCLES, 2 * gt.SLEEP_CYCLES, 2 * gt.SLEEP_CYCLES]
    assert info["samples"] == 2 and info["gpu_bound_samples"] == 2


def test_a_call_that_waits_for_the_gpu_costs_one_escalation_then_plain_events(fake_cuda, monkeypatch):
    log, pending = fake_cuda
    monkeypatch.setattr(gt, "MAX_SLEEP_CYCLES", 4 * gt.SLEEP_CYCLES)
    pending += [True] + [False] * 5
    info = gt.new_info()
    assert len(gt.kernel_s(lambda: None, torch.device("cuda"), repeats=3, warmup=0, info=info)) == 3
    sleeps = [e[1] for e in log if isinstance(e, tuple)][1:]
    assert sleeps == [gt.SLEEP_CYCLES, 2 * gt.SLEEP_CYCLES, 4 * gt.SLEEP_CYCLES]  # then none
    assert info["samples"] == 3 and info["gpu_bound_samples"] == 0 and info["sleep_cycles"] == gt.SLEEP_CYCLES


def test_the_bandwidth_section_records_its_timing_method():
    got = sec.bandwidth(torch.device("cpu"), "torch", small=True, repeats=2)
    assert got["bandwidth_timing"]["method"] == "perf_counter"
    assert got["bandwidth_timing"]["samples"] == 2 * (4 + len(sec.LANES_SWEEP))
    assert (
        gt.wall_s(lambda: None, torch.device("cpu"), repeats=3, warmup=0) == [pytest.approx(0, abs=0.01)] * 3
    )
