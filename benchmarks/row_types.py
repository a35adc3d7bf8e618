"""The types the spleen experiment matrix passes around: a row's settings, a built row, a skipped row."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Config:
    """What every row gets the same of."""

    batch_size: int = 2
    threads: int = 2
    device: str = "cpu"  # CPU rows: where their chain runs (a GPU row never reads it)
    gpu_device: str = "cuda"  # GPU rows (fastpipe-gpu-cache): where the cache and the crops live
    smart_fraction: float = 0.5
    replace_rate: float = 0.25
    seed: int = 0
    workdir: str = "/tmp/fastpipe-bench"
    tutorial: bool = True  # False: the chain stops at the crop ("crop only")


@dataclass
class Row:
    """A ready loader plus what the harness needs to know about it."""

    loader: Any
    items_per_epoch: int
    close: Callable[[], None] = lambda: None
    info: dict[str, Any] = field(default_factory=dict)


class RowSkipped(RuntimeError):
    """A row that cannot run on this machine (the reason is published in the results)."""
