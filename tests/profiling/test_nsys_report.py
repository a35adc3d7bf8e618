"""profiling/nsys_report.py on a small SQLite file with the tables of an nsys export."""

from __future__ import annotations

import importlib.util
import json
import sqlite3
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parents[2] / "profiling" / "nsys_report.py"
spec = importlib.util.spec_from_file_location("nsys_report", SCRIPT)
nsys_report = importlib.util.module_from_spec(spec)
spec.loader.exec_module(nsys_report)

# The columns nsys writes (a subset of each table is enough for the reader; extra ones kept for realism).
SCHEMA = """
CREATE TABLE StringIds (id INTEGER PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE NVTX_EVENTS (start INT NOT NULL, end INT, eventType INT NOT NULL, rangeId INT, category INT,
    color INT, text TEXT, globalTid INT, endGlobalTid INT, textId INT REFERENCES StringIds(id), domainId INT,
    uint64Value INT, int64Value INT, doubleValue REAL, uint32Value INT, int32Value INT, floatValue REAL,
    jsonTextId INT, jsonText TEXT);
CREATE TABLE CUPTI_ACTIVITY_KIND_KERNEL (start INT NOT NULL, end INT NOT NULL, deviceId INT NOT NULL,
    contextId INT NOT NULL, streamId INT NOT NULL, correlationId INT, globalPid INT,
    demangledName INT NOT NULL, shortName INT NOT NULL, gridX INT, gridY INT, gridZ INT);
CREATE TABLE CUPTI_ACTIVITY_KIND_MEMCPY (start INT NOT NULL, end INT NOT NULL, deviceId INT NOT NULL,
    contextId INT NOT NULL, streamId INT NOT NULL, correlationId INT, globalPid INT, bytes INT NOT NULL,
    copyKind INT NOT NULL);
"""
MS = 1_000_000  # ns


def build_export(path: Path) -> Path:
    conn = sqlite3.connect(path)
    conn.executescript(SCHEMA)
    conn.executemany(
        "INSERT INTO StringIds VALUES (?, ?)", [(1, "fetch"), (2, "RandCropByPosNegLabeld"), (3, "crop")]
    )
    nvtx = [
        # domain creation rows: eventType 75, text = domain name
        (0, None, 75, None, None, None, "fastpipe", 1, None, None, 1),
        # registered-string ranges (textId) as the nvtx package emits them, and one plain-text range
        (0, 4 * MS, 59, None, 1, 0, None, 100, None, 1, 1),
        (10 * MS, 13 * MS, 59, None, 1, 0, None, 100, None, 1, 1),
        (1 * MS, 3 * MS, 59, None, 2, 0, None, 100, None, 2, 1),
        (20 * MS, 30 * MS, 59, None, 0, 0, "wait", 200, None, None, 1),
        (5 * MS, None, 59, None, 0, 0, "never closed", 200, None, None, 1),
        (7 * MS, 7 * MS, 34, None, 0, 0, "a mark", 200, None, None, 1),
    ]
    conn.executemany(
        "INSERT INTO NVTX_EVENTS VALUES (?,?,?,?,?,?,?,?,?,?,?,NULL,NULL,NULL,NULL,NULL,NULL,NULL,NULL)", nvtx
    )
    kernels = [(2 * MS, 4 * MS), (3 * MS, 5 * MS), (5 * MS, 6 * MS), (31 * MS, 32 * MS)]
    conn.executemany("INSERT INTO CUPTI_ACTIVITY_KIND_KERNEL VALUES (?,?,0,1,7,0,0,3,3,1,1,1)", kernels)
    conn.execute("INSERT INTO CUPTI_ACTIVITY_KIND_MEMCPY VALUES (?,?,0,1,7,0,0,1024,1)", (8 * MS, 9 * MS))
    conn.execute("INSERT INTO CUPTI_ACTIVITY_KIND_KERNEL VALUES (?,?,1,1,7,0,0,3,3,1,1,1)", (0, MS))
    conn.commit()
    conn.close()
    return path


def test_range_totals_and_idle_gaps(tmp_path):
    rep = nsys_report.report(build_export(tmp_path / "run.sqlite"), min_gap_us=1500, top=5)
    by_name = {r["name"]: r for r in rep["ranges"]}
    assert set(by_name) == {"fetch", "RandCropByPosNegLabeld", "wait"}  # marks and open ranges left out
    assert by_name["fetch"]["count"] == 2 and by_name["fetch"]["total_ms"] == pytest.approx(7.0)
    assert by_name["fetch"]["domain"] == "fastpipe" and by_name["wait"]["total_ms"] == pytest.approx(10.0)
    assert [r["name"] for r in rep["ranges"]] == ["wait", "fetch", "RandCropByPosNegLabeld"]
    gpu0 = rep["gpus"][0]
    # busy: [2,6] + [8,9] + [31,32] = 6 ms over a span of 30 ms; gaps 2 ms and 22 ms (>= 1.5 ms)
    assert gpu0["span_ms"] == pytest.approx(30.0) and gpu0["busy_ms"] == pytest.approx(6.0)
    assert gpu0["idle_fraction"] == pytest.approx(0.8)
    assert gpu0["gaps"] == 2 and gpu0["gap_total_ms"] == pytest.approx(24.0)
    largest = gpu0["largest_gaps"][0]
    assert largest["ms"] == pytest.approx(22.0) and largest["host_range"] == "wait"
    assert rep["gpus"][1]["busy_ms"] == pytest.approx(1.0)


def test_idle_gaps_merges_overlaps():
    span, busy, gaps = nsys_report.idle_gaps([(0, 10), (5, 20), (20, 25), (30, 31)], min_gap_ns=0)
    assert (span, busy, gaps) == (31, 26, [(25, 30)])
    assert nsys_report.idle_gaps([]) == (0, 0, [])


def test_cli_prints_and_writes_json(tmp_path, capsys):
    db = build_export(tmp_path / "run.sqlite")
    assert nsys_report.main([str(db), "--json", str(tmp_path / "r.json"), "--min-gap-us", "100"]) == 0
    out = capsys.readouterr().out
    assert "RandCropByPosNegLabeld" in out and "GPU 0: busy 6.0 of 30.0 ms" in out
    assert json.loads((tmp_path / "r.json").read_text())["ranges"][0]["name"] == "wait"


def test_export_without_gpu_or_nvtx_tables(tmp_path, capsys):
    db = tmp_path / "empty.sqlite"
    sqlite3.connect(db).close()
    assert nsys_report.main([str(db)]) == 0
    out = capsys.readouterr().out
    assert "no NVTX ranges" in out and "no GPU activity" in out
    assert nsys_report.main([str(tmp_path / "missing.sqlite")]) == 1


@pytest.mark.parametrize("name", ["run#1.sqlite", "what?.sqlite", "100%.sqlite"])
def test_an_export_whose_name_holds_uri_characters_is_read(tmp_path, name):
    db = build_export(tmp_path / name)
    rep = nsys_report.report(db)
    assert rep["ranges"] and sorted(rep["gpus"]) == [0, 1]  # was empty: "run#1" opened "run"
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]  # and created it


def test_a_json_path_that_cannot_be_written_is_one_line_not_a_traceback(tmp_path, capsys):
    db = build_export(tmp_path / "run.sqlite")
    (tmp_path / "a-file").write_text("")
    assert nsys_report.main([str(db), "--json", str(tmp_path / "a-file" / "r.json")]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"nsys_report: cannot write --json {tmp_path / 'a-file' / 'r.json'}: ")
