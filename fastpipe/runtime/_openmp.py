"""Per-thread OpenMP thread counts for torch's CPU ops.

torch runs a parallel CPU op on an OpenMP team owned by the calling thread, sized by
``torch.get_num_threads()``, a process-wide number. Threads that each run torch ops at once (cache-fill
workers, a loader thread beside the training loop) then make one team each: ``n`` threads of ``n``
each on ``n`` cores. libgomp, seeing more threads than CPUs, cuts its spin-waits short, and every
parallel region pays futex wake-ups. ``omp_set_num_threads`` is a per-thread setting of the OpenMP
runtime, which torch reads in the thread that runs the op, so one thread can be given fewer without
touching ``torch.get_num_threads()`` in the others (``torch.set_num_threads`` would).

Every OpenMP runtime mapped into the process is tried once, on first use; the first whose setting torch
then reports in that thread and in no other is kept. Where none is (no ``/proc/self/maps``, as on
macOS, or a runtime torch does not read), :func:`set_this_thread` does nothing and returns ``None``.
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


def _candidates() -> list[str]:
    """Paths of the OpenMP runtimes mapped into this process (torch's, maybe MKL's or numpy's too)."""
    try:
        with open("/proc/self/maps") as f:
            maps = f.read()
    except OSError:
        return []
    return list(dict.fromkeys(m.group(0) for m in _OMP_LIB.finditer(maps)))


def _load(path: str) -> Any | None:
    try:
        lib = ctypes.CDLL(path)
        lib.omp_set_num_threads.argtypes = [ctypes.c_int]
        lib.omp_get_max_threads.restype = ctypes.c_int
    except (OSError, AttributeError):
        return None
    return lib


def _find() -> Any | None:
    """The OpenMP runtime torch uses (the first mapped one that passes :func:`_probe`), or ``None``."""
    for path in _candidates():
        lib = _load(path)
        if lib is not None and _probe(lib):
            return lib
    return None


def _probe(lib: Any) -> bool:
    """Whether a count set in a helper thread reaches torch there and nowhere else.

    The count set differs from torch's current one (1, or 2 where torch runs one thread), so a runtime
    torch does not read cannot pass by leaving the count as it was.
    """
    before = torch.get_num_threads()
    target = 2 if before == 1 else 1
    seen: list[int] = []

    def helper() -> None:
        torch.get_num_threads()  # torch's lazy per-thread init first, or it would undo the setting
        lib.omp_set_num_threads(target)
        seen.append(torch.get_num_threads())

    t = threading.Thread(target=helper, name="fastpipe-omp-probe")
    t.start()
    t.join()
    return seen == [target] and torch.get_num_threads() == before


def runtime() -> Any | None:
    """The probed OpenMP runtime, or ``None`` where per-thread counts are not available."""
    with _lock:
        if not _lib:
            _lib.append(_find())
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


def per_worker(num_workers: int) -> int:
    """OpenMP threads for each of ``num_workers`` threads running torch ops at once: the cores shared out."""
    return max(1, torch.get_num_threads() // max(1, num_workers))
