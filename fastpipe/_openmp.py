"""Per-thread OpenMP thread counts for torch's CPU ops.

torch runs a parallel CPU op on an OpenMP team owned by the calling thread, sized by
``torch.get_num_threads()``, a process-wide number. Threads that each run torch ops at once (cache-fill
workers, a loader thread beside the training loop) then make one team each: ``n`` threads of ``n``
each on ``n`` cores. libgomp, seeing more threads than CPUs, cuts its spin-waits short, and every
parallel region pays futex wake-ups. ``omp_set_num_threads`` is a per-thread setting of the OpenMP
runtime, which torch reads in the thread that runs the op, so one thread can be given fewer without
touching ``torch.get_num_threads()`` in the others (``torch.set_num_threads`` would).

When the OpenMP runtime torch uses cannot be found, or does not behave as probed once on first use,
:func:`set_this_thread` does nothing and returns ``None``.
"""

from __future__ import annotations

import ctypes
import re
import threading
from typing import Any

import torch

_OMP_LIB = re.compile(r"\S*/lib(gomp|iomp5|omp)[^/\s]*\.(so[.\d]*|dylib)")
_lock = threading.Lock()
_lib: list[Any] = []  # [runtime or None] once looked up


def _find() -> Any | None:
    """The OpenMP runtime loaded in this process (torch's), or ``None``."""
    try:
        with open("/proc/self/maps") as f:
            found = _OMP_LIB.search(f.read())
    except OSError:
        return None
    if found is None:
        return None
    try:
        lib = ctypes.CDLL(found.group(0))
        lib.omp_set_num_threads.argtypes = [ctypes.c_int]
        lib.omp_get_max_threads.restype = ctypes.c_int
    except (OSError, AttributeError):
        return None
    return lib


def _probe(lib: Any) -> bool:
    """Whether one OpenMP thread set in a helper thread reaches torch there and nowhere else."""
    seen: list[int] = []

    def helper() -> None:
        torch.get_num_threads()  # torch's lazy per-thread init first, or it would undo the setting
        lib.omp_set_num_threads(1)
        seen.append(torch.get_num_threads())

    before = torch.get_num_threads()
    t = threading.Thread(target=helper, name="fastpipe-omp-probe")
    t.start()
    t.join()
    return seen == [1] and torch.get_num_threads() == before


def runtime() -> Any | None:
    """The probed OpenMP runtime, or ``None`` where per-thread counts are not available."""
    with _lock:
        if not _lib:
            lib = _find()
            _lib.append(lib if lib is not None and _probe(lib) else None)
        return _lib[0]


def available() -> bool:
    """Whether this process can set OpenMP thread counts per thread."""
    return runtime() is not None


def set_this_thread(n: int) -> int | None:
    """Give torch's parallel ops in the calling thread ``n`` OpenMP threads; returns the previous count.

    ``None`` (and nothing changed) where per-thread counts are not available.
    """
    lib = runtime()
    if lib is None:
        return None
    torch.get_num_threads()  # torch's lazy per-thread init, which would otherwise reset it later
    before = lib.omp_get_max_threads()
    lib.omp_set_num_threads(max(1, int(n)))
    return before
