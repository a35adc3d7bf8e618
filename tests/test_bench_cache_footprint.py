"""benchmarks.cache_footprint end to end on tiny volumes (seconds): the compact form is within 1.3x the
image's bytes, the list form is not, the closed form matches the cache, and more spleen-full volumes fit."""

from __future__ import annotations

import json

import pytest

from benchmarks.cache_footprint import entry_bytes, main, spleen_full_geometry


@pytest.mark.timeout(120)
def test_smoke_run_writes_the_comparison(tmp_path):
    out = tmp_path / "cf.json"
    main(["--volumes", "2", "--shape", "40", "36", "32", "--patch", "16", "16", "16", "--epochs", "1",
          "--warmup", "0", "--workers", "1", "--geometry-volumes", "2", "--out", str(out)])  # fmt: skip
    doc = json.loads(out.read_text())
    lists, compact = doc["bytes"]["lists"], doc["bytes"]["compact"]
    assert compact["image_ratio"] <= 1.3 < 2.0 < lists["image_ratio"]
    assert compact["background"] == {"rejection": 2, "list": 0} and lists["background"]["list"] == 2
    for form in (lists, compact):
        assert form["closed_form_entry0"] == form["measured_entry0"]
    fit = doc["spleen_full_fit"]
    assert fit["compact"]["fit"] > 2 * fit["lists"]["fit"] > 0
    assert doc["epoch_s"]["lists"]["n"] == doc["epoch_s"]["compact"]["n"] == 1


def test_closed_form_and_geometry():
    assert entry_bytes(1000, 10, "lists") == 5000 + 8000
    assert entry_bytes(1000, 10, "compact") == 5000 + 40 + 8
    assert entry_bytes(1000, 980, "compact") == 5000 + 4 * 1000  # little background: int32 list kept
    shape, fg = spleen_full_geometry(0)
    assert all(s > 0 for s in shape) and 0 < fg < 0.2 * shape[0] * shape[1] * shape[2]
