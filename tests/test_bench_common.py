"""Benchmark helpers: consumer-side wait timing."""

from __future__ import annotations

import time

from benchmarks.common import waited_batches


def test_waited_batches_times_the_wait_and_applies_prepare_inside_it():
    def slow():
        for i in range(3):
            time.sleep(0.02)
            yield i

    def prepare(b):
        time.sleep(0.01)
        return b * 10

    out = list(waited_batches(slow(), prepare=prepare))
    assert [b for b, _ in out] == [0, 10, 20]
    assert all(w >= 0.029 for _, w in out)
    assert list(waited_batches([])) == []
