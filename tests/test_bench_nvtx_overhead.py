"""``benchmarks.nvtx_overhead``: the result names the machine, the versions and the commit it ran on."""

from __future__ import annotations

import pytest

from benchmarks import nvtx_overhead


@pytest.mark.timeout(120)
def test_the_result_carries_the_commit_and_versions(monkeypatch):
    """Its JSON had the platform and core count only: no commit, no library versions, unlike every other
    result, so an overhead figure could not be tied to the code that made it."""
    from benchmarks import common

    monkeypatch.setattr(common, "git_commit", lambda: "abc1234")
    args = nvtx_overhead.parse_args(
        [
            "--items",
            "2",
            "--shape",
            "24",
            "24",
            "24",
            "--roi",
            "8",
            "8",
            "8",
            "--repeats",
            "1",
            "--device",
            "cpu",
        ]
    )
    res = nvtx_overhead.measure(args)
    assert res["machine"]["commit"] == "abc1234" and res["machine"]["versions"]["torch"]
    assert set(res["epoch_s"]) == {"off", "on"} and res["ranges_per_epoch"] > 0
