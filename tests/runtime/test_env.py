"""Environment variables are read in one module, ``fastpipe/runtime/_env.py``."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from fastpipe.runtime import _env

PACKAGE = Path(__file__).resolve().parents[2] / "fastpipe"


def test_only_the_env_module_reads_the_environment():
    readers = sorted(
        str(p.relative_to(PACKAGE))
        for p in PACKAGE.rglob("*.py")
        if re.search(r"os\.environ|os\.getenv|getenv\(", p.read_text()) and p.name != "_env.py"
    )
    assert readers == [], f"read environment variables through fastpipe.runtime._env instead: {readers}"


def test_values_are_parsed_with_clear_errors(monkeypatch):
    monkeypatch.delenv(_env.COPY_THREADS, raising=False)
    assert _env.copy_threads_limit(7) == 7
    monkeypatch.setenv(_env.COPY_THREADS, "3")
    assert _env.copy_threads_limit(7) == 3
    monkeypatch.setenv(_env.COPY_THREADS, "many")
    with pytest.raises(ValueError, match="FASTPIPE_COPY_THREADS must be a whole number.*'many'"):
        _env.copy_threads_limit(7)
    for raw, on in (("", False), ("0", False), ("no", False), ("1", True), ("yes", True)):
        monkeypatch.setenv(_env.NVTX, raw)
        assert _env.nvtx_enabled() is on, raw
    monkeypatch.delenv(_env.LOCAL_RANK, raising=False)
    assert _env.local_rank() is None
    monkeypatch.setenv(_env.LOCAL_RANK, "2")
    assert _env.local_rank() == 2
