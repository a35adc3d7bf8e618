"""Benchmark helpers: consumer-side wait timing."""

from __future__ import annotations

import subprocess
import time

from benchmarks import common
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


class _SlowEnds:
    """A loader whose epoch start and end block on the data side, as a SmartCache window swap does
    (MONAI's in ``iter`` through ``benchmarks.rows``, fastpipe's in the request that ends the epoch)."""

    def __iter__(self):
        time.sleep(0.2)
        return self._batches()

    def _batches(self):
        yield {"image": _FakeBatch(), "label": _FakeBatch()}
        time.sleep(0.3)


class _FakeBatch:
    shape = (4, 1, 96, 96, 96)
    device = None


def test_the_epochs_start_and_end_are_waited_for():
    """The matrix's data-wait column left both out: a row that waited for its swap showed ~0% wait."""
    from benchmarks import measure
    from benchmarks.row_types import Config

    ends: list[float] = []
    out = list(waited_batches(_SlowEnds(), on_end=ends.append))
    assert len(out) == 1 and out[0][1] >= 0.2  # iter(loader) is part of the first wait
    assert len(ends) == 1 and ends[0] >= 0.3
    wall, fraction = measure.step_epoch(_SlowEnds(), Config(threads=1), 0.0)
    assert fraction >= 0.5 / wall - 1e-9 and fraction <= 1.0


def test_a_copy_without_git_names_its_commit_from_the_environment(monkeypatch):
    """A working tree copied to a GPU machine has no ``.git``: the result names the commit it was given."""

    def no_repo(*args, **kwargs):
        raise subprocess.CalledProcessError(128, args[0], "", "fatal: not a git repository")

    monkeypatch.setattr(common.subprocess, "run", no_repo)
    monkeypatch.setenv(common.COMMIT_ENV, "abc1234")
    assert common.git_commit() == "abc1234"
    monkeypatch.delenv(common.COMMIT_ENV)
    assert common.git_commit() == "unknown"


def test_the_commit_given_wins_over_another_checkouts_git(monkeypatch):
    """The tree copied to a GPU machine ran over an older checkout there: git named that checkout
    (7024621-dirty) while the files were another commit's; the commit given in the environment wins."""
    real = common.git_commit()
    monkeypatch.setenv(common.COMMIT_ENV, "deadbee")
    assert real != "deadbee" and common.git_commit() == "deadbee"


def test_spread_quartiles_stay_within_the_samples():
    """Two or three epochs (``--epochs 2``): the quartiles interpolate, never extrapolate past the samples."""
    for samples in ([1.0, 2.0], [1.0, 2.0, 4.0], [3.0, 1.0, 2.0, 10.0]):
        s = common.spread(samples)
        assert 0 <= s["iqr"] <= s["max"] - s["min"], (samples, s)
    assert common.spread([1.0, 2.0])["iqr"] == 0.5


def test_a_result_names_the_commit_its_run_started_on(tmp_path, monkeypatch):
    """``write_result`` read the commit when it wrote: a commit (or edit) made while a long run went on
    relabelled figures measured on the earlier tree."""
    import json

    now = {"commit": "abc1234-dirty"}
    monkeypatch.setattr(common, "git_commit", lambda: now["commit"])
    machine = common.machine_info()  # when the run starts
    now["commit"] = "def5678"  # someone commits while it runs
    doc = json.loads(common.write_result("x", {"a": 1}, tmp_path / "x.json", machine).read_text())
    assert doc["machine"]["commit"] == "abc1234-dirty" and doc["commit_at_end"] == "def5678"
    doc = json.loads(common.write_result("x", {"a": 1}, tmp_path / "y.json").read_text())
    assert doc["machine"]["commit"] == "def5678" and "commit_at_end" not in doc
