"""The ``fastpipe`` command line: synth end to end, help of every subcommand, verbatim forwarding."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import types
from pathlib import Path

import nibabel as nib
import pytest

from fastpipe.cli import main

REPO = Path(__file__).resolve().parent.parent


def test_synth_writes_msd_folder(tmp_path: Path, capsys):
    out = tmp_path / "spleen"
    rc = main(
        ["synth", "--out", str(out), "--preset", "spleen-tiny", "--seed", "5", "--num", "2", "--no-progress"]
    )
    assert rc == 0
    assert "wrote" in capsys.readouterr().out
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["numTraining"] == 2
    assert nib.load(out / "imagesTr" / "spleen_2.nii.gz").shape[:2] == (96, 96)


def test_synth_progress_bar_goes_to_stderr(tmp_path: Path, capsys):
    assert main(["synth", "--out", str(tmp_path), "--preset", "spleen-tiny", "--num", "1"]) == 0
    assert "synth spleen-tiny" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        ["synth"],  # --out is required
        ["synth", "--out", "x", "--preset", "spleen-huge"],
        ["synth", "--out", "x", "--bogus"],
        ["synth", "--out", "x", "--num", "0"],
        ["synth", "--out", "x", "--seed", "-1"],
        ["synth", "--out", ""],  # an unset $DIR: never the current folder
        ["synth", "--out", "  "],
        ["--bogus", "profile", "--data", "x"],  # an option before a forwarded command is named
        [],
        ["frobnicate"],
    ],
)
def test_usage_errors_exit_2(argv, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a regression that writes (--out "" is ".") must not write into the checkout
    assert main(argv) == 2
    assert "usage: fastpipe" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["--help"], ["synth", "--help"]])
def test_help(argv, capsys):
    assert main(argv) == 0
    assert "usage: fastpipe" in capsys.readouterr().out


def test_bench_help_reaches_benchmarks(capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    assert main(["bench", "--help"]) == 0
    assert "usage:" in capsys.readouterr().out


def test_profile_help_or_clear_message(capsys):
    rc = main(["profile", "--help"])
    captured = capsys.readouterr()
    if importlib.util.find_spec("fastpipe.profiling.profile_run") is None:
        assert rc == 2 and "fastpipe.profiling.profile_run" in captured.err
    else:
        assert rc == 0 and "usage:" in captured.out


def test_forwarding_is_verbatim(monkeypatch):
    seen = []
    fake = types.ModuleType("benchmarks.spleen")
    fake.main = lambda argv: seen.append(argv) or 3
    monkeypatch.setitem(sys.modules, "benchmarks.spleen", fake)
    args = ["--rows", "fastpipe,monai", "-x", "1", "positional", "--", "--after"]
    assert main(["bench", *args]) == 3
    assert seen == [args]


def test_bench_outside_a_checkout_says_so(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "benchmarks.spleen", None)  # import fails as if absent
    assert main(["bench"]) == 2
    assert "repository root" in capsys.readouterr().err


def test_python_dash_m_fastpipe():
    proc = subprocess.run(
        [sys.executable, "-m", "fastpipe", "synth", "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "--preset" in proc.stdout


def test_bench_never_puts_the_checkout_on_sys_path(monkeypatch, capsys, tmp_path):
    """Outside a checkout (benchmarks not importable) bench explains how to run them; sys.path stays as it was."""
    for name in [m for m in sys.modules if m == "benchmarks" or m.startswith("benchmarks.")]:
        monkeypatch.delitem(sys.modules, name)
    here = [p for p in sys.path if p not in ("", ".") and Path(p).resolve() != REPO]
    monkeypatch.setattr(sys, "path", here)
    monkeypatch.chdir(tmp_path)
    assert main(["bench", "--help"]) == 2
    assert sys.path == here
    err = capsys.readouterr().err
    assert "python -m benchmarks.spleen" in err and "repository root" in err


def test_version(capsys):
    import fastpipe

    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"fastpipe {fastpipe.__version__}"


def test_bench_unknown_row_lists_the_valid_ones(monkeypatch, capsys):
    monkeypatch.chdir(REPO)
    assert main(["bench", "--rows", "nope"]) != 0
    err = capsys.readouterr().err
    assert "unknown rows ['nope']" in err and "fastpipe-cache" in err and "monai-cache" in err


def test_bench_refuses_a_missing_data_folder_before_any_row_runs(monkeypatch, capsys, tmp_path):
    """It ran every row against the missing folder, each failing in its own process, wrote a JSON of
    failures and exited 0."""
    monkeypatch.chdir(REPO)
    monkeypatch.setattr("benchmarks.spleen.run_row", lambda *a, **k: pytest.fail("a row ran"))
    assert main(["bench", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "b.json")]) == 2
    err = capsys.readouterr().err
    assert "--data" in err and "nowhere" in err and "dataset.json" in err
    assert not (tmp_path / "b.json").exists()


def test_bench_refuses_an_unknown_preset(monkeypatch, capsys):
    monkeypatch.chdir(REPO)
    assert main(["bench", "--preset", "nope", "--rows", "fastpipe-cache"]) == 2
    assert "invalid choice: 'nope'" in capsys.readouterr().err


def test_bench_exits_non_zero_when_a_row_fails(monkeypatch, tmp_path):
    import benchmarks.spleen as spleen

    monkeypatch.chdir(REPO)
    monkeypatch.setattr(spleen, "run_row", lambda name, argv: {"row": name, "error": "boom"})
    monkeypatch.setattr(spleen, "dataset_root", lambda args: tmp_path)
    monkeypatch.setattr(spleen, "speed_probe_s", lambda: 1.0)
    assert spleen.main(["--rows", "fastpipe-cache", "--out", str(tmp_path / "b.json"), "--no-plot"]) == 1
    assert json.loads((tmp_path / "b.json").read_text())["rows"][0]["error"] == "boom"


def test_a_string_system_exit_is_printed(monkeypatch, capsys):
    fake = types.ModuleType("benchmarks.spleen")

    def fail(argv):
        raise SystemExit("something went wrong")

    fake.main = fail
    monkeypatch.setitem(sys.modules, "benchmarks.spleen", fake)
    assert main(["bench"]) == 1
    assert "something went wrong" in capsys.readouterr().err


def test_synth_into_an_unwritable_place_is_one_line_not_a_traceback(tmp_path: Path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert main(["synth", "--out", str(blocker / "out"), "--preset", "spleen-tiny", "--num", "1"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"fastpipe synth: cannot write {blocker / 'out'}: ") and "Traceback" not in err, err


def test_synth_with_an_empty_out_writes_nothing(tmp_path: Path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["synth", "--out", "", "--preset", "spleen-tiny", "--num", "1", "--no-progress"]) == 2
    assert "--out: empty path" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
