"""Every environment variable fastpipe reads, read here and nowhere else.

- ``FASTPIPE_NVTX``: ``1`` (or any value but ``0``/``false``/``no``) switches NVTX ranges on at import.
- ``FASTPIPE_COPY_THREADS``: most threads one batch's CPU copies use (``0`` or ``1``: no split;
  unset: no limit). Read on every batch, so a test or a benchmark can change it at run time.
- ``LOCAL_RANK``: this process's GPU under ``torchrun`` (set by the launcher).
- ``WORLD_SIZE``: only to warn that a launcher started several ranks while ``torch.distributed`` is not
  initialised yet (a dataset built then would be one process's, whole, on every rank).
- ``CUDA_VISIBLE_DEVICES``: only named in messages (CUDA itself applies it).
"""

from __future__ import annotations

import os
import warnings

NVTX = "FASTPIPE_NVTX"
COPY_THREADS = "FASTPIPE_COPY_THREADS"
LOCAL_RANK = "LOCAL_RANK"
CUDA_VISIBLE = "CUDA_VISIBLE_DEVICES"
WORLD_SIZE = "WORLD_SIZE"
_warned_uninitialised = []  # once per process


def nvtx_enabled() -> bool:
    """Whether ``FASTPIPE_NVTX`` asks for NVTX ranges."""
    return os.environ.get(NVTX, "").strip().lower() not in ("", "0", "false", "no")


def copy_threads_limit(default: int) -> int:
    """``FASTPIPE_COPY_THREADS`` as a thread count (``default`` when unset); ``ValueError`` if not a number.

    Example:
        >>> copy_threads_limit(7) if COPY_THREADS not in os.environ else 7
        7
    """
    raw = os.environ.get(COPY_THREADS, "").strip()
    if not raw:
        return default
    try:
        return max(0, int(raw))
    except ValueError:
        raise ValueError(
            f"{COPY_THREADS} must be a whole number of threads (0 or 1 turn the split off), got {raw!r}"
        ) from None


def local_rank() -> int | None:
    """``LOCAL_RANK`` as an int, ``None`` when the launcher did not set it."""
    raw = os.environ.get(LOCAL_RANK)
    if raw is None:
        return None
    try:
        rank = int(raw)
    except ValueError:
        rank = -1
    if rank < 0:
        raise ValueError(
            f"{LOCAL_RANK} must be this process's GPU index on its node (0, 1, ...), got {raw!r}"
        )
    return rank


def cuda_visible_devices() -> str:
    """``CUDA_VISIBLE_DEVICES`` as set, or ``"<unset>"``, for messages."""
    return os.environ.get(CUDA_VISIBLE, "<unset>")


def single_process_world() -> int:
    """1, the world size without an initialised process group; warns once when a launcher (``torchrun``)
    set ``WORLD_SIZE`` above 1: every rank would then cache and read the whole data set."""
    raw = os.environ.get(WORLD_SIZE, "")
    if raw.isdigit() and int(raw) > 1 and not _warned_uninitialised:
        _warned_uninitialised.append(True)
        warnings.warn(
            f"{WORLD_SIZE}={raw} is set (a launcher such as torchrun started {raw} ranks) but torch.distributed "
            "is not initialised: this dataset is built for one process, with the whole data on every rank. "
            "Call torch.distributed.init_process_group() before building it, or pass rank= and world_size=",
            RuntimeWarning,
            stacklevel=4,
        )
    return 1
