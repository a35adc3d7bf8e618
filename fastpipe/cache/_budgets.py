"""Cache byte budgets: the tiers, and sizes such as ``"20GiB"`` per tier (``None``: unlimited)."""

from __future__ import annotations

import math
import re
import warnings
from typing import Any

import numpy as np

TIERS = ("cuda", "host", "disk")
_UNITS = {"": 1, "b": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}
_UNITS.update({"ki": 2**10, "mi": 2**20, "gi": 2**30, "ti": 2**40})
_SIZE_RE = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*([kmgt]i?)?b?\s*$", re.IGNORECASE)


def parse_bytes(size: int | float | str | None) -> int | None:
    """Bytes from ``20GiB``, ``512MB``, ``1.5G``, ``4096`` or an int; ``None`` means unlimited.

    Example:
        >>> parse_bytes("2KiB"), parse_bytes("1.5kB"), parse_bytes(7)
        (2048, 1500, 7)
    """
    if size is None:
        return None
    if isinstance(size, bool) or not isinstance(size, (int, float, str)):
        raise ValueError(f"budget size must be an int or a string like '20GiB', got {size!r}")
    if isinstance(size, (int, float)):
        if not math.isfinite(size) or size < 0:  # int(nan), int(inf): errors that name no budget
            raise ValueError(
                f"budget size must be a finite number of bytes >= 0 (None: unlimited), got {size!r}"
            )
        return int(size)
    m = _SIZE_RE.match(size)
    if m is None:
        raise ValueError(
            f"invalid budget size {size!r}: expected a number with a unit such as '20GiB' or '512MB'"
        )
    return int(float(m.group(1)) * _UNITS[(m.group(2) or "").lower()])


def parse_budget(budget: Any, primary: str) -> dict[str, int | None]:
    """Per-tier byte budgets; a bare size applies to ``primary`` (the first tier). Missing tiers are unlimited.

    A ``"cuda"`` budget for a host cache (``primary`` ``"host"``) warns that it is ignored.
    """
    if budget is None:
        return {}
    if not isinstance(budget, dict):
        return {primary: parse_bytes(budget)}
    unknown = set(budget) - set(TIERS)
    if unknown:
        raise ValueError(f"unknown budget tier(s) {sorted(unknown)}: expected keys among {list(TIERS)}")
    parsed = {tier: parse_bytes(v) for tier, v in budget.items()}
    if primary != "cuda" and "cuda" in parsed:  # kept silently, it would leave the host tier unlimited
        warnings.warn(
            f"budget {budget} has a 'cuda' tier but this cache lives in host memory (its prefix holds no "
            "ToDeviced/EnsureTyped(device='cuda...')): the 'cuda' budget is ignored; set 'host' to bound "
            "the cache's memory",
            RuntimeWarning,
            stacklevel=6,  # the dataset's constructor's caller
        )
    return parsed


def array_bytes(obj: Any) -> int:
    """Bytes of the numpy arrays inside ``obj`` (dicts, lists, tuples): a chain ending in numpy
    (MONAI's ``EnsureTyped(data_type="numpy")``) caches them, and a budget must count them.

    Example:
        >>> array_bytes({"image": np.zeros(4, np.float32), "meta": {"affine": np.eye(2)}, "n": 3})
        48
    """
    if isinstance(obj, np.ndarray):
        return int(obj.nbytes)
    if isinstance(obj, dict):
        return sum(array_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(array_bytes(v) for v in obj)
    return 0
