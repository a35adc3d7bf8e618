"""NVTX ranges around fastpipe stages, coloured per kind; a real no-op while disabled.

Every stage of fastpipe calls :func:`annotate` (``with annotate("fetch", "loader"):``). While
NVTX is disabled (the default) that returns one shared null context: no allocation, no call
into ``nvtx``. :func:`enable_nvtx` switches every range on at once.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any

import nvtx

DOMAIN = "fastpipe"
#: ARGB colours per kind of range, so a timeline reads at a glance.
COLORS = {
    "transform": 0xFF4C72B0,
    "random": 0xFFDD8452,
    "loader": 0xFF55A868,
    "cache": 0xFFC44E52,
    "smartcache": 0xFF8172B3,
    "kernel": 0xFF937860,
    "h2d": 0xFFDA8BC3,
    "wait": 0xFF8C8C8C,
}

_NULL = contextlib.nullcontext()
_state = threading.local()
_enabled = False
_domain: Any = None


def enable_nvtx(enabled: bool = True) -> None:
    """Switch fastpipe's NVTX ranges on (or off with ``enabled=False``) process-wide."""
    global _enabled, _domain
    _enabled = bool(enabled)
    if _enabled and _domain is None:
        _domain = nvtx.get_domain(DOMAIN)


def disable_nvtx() -> None:
    """Switch fastpipe's NVTX ranges off."""
    enable_nvtx(False)


def nvtx_enabled() -> bool:
    """Whether fastpipe emits NVTX ranges now."""
    return _enabled


def annotate(name: str, kind: str = "transform") -> contextlib.AbstractContextManager:
    """A context manager that marks ``name`` as an NVTX range of ``kind`` while enabled."""
    if not _enabled:
        return _NULL
    return nvtx.annotate(message=name, color=COLORS.get(kind, 0xFF999999), domain=DOMAIN, category=kind)
