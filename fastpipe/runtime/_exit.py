"""fastpipe's background threads, stopped and joined when the interpreter exits, before it finalizes.

The loader's producer threads and the SmartCache replacement workers are daemon threads. A daemon
thread still running when Python 3.11 finalizes is ended where it stands the moment it wants the GIL
back; inside a torch op (C++) that aborts the whole process ("terminate called without an active
exception", exit status 134) after the user's script has finished, and fails the job that ran it.
Objects registered here are stopped when the interpreter begins to exit (``threading``'s own exit
hook, where ``concurrent.futures`` stops its pools, else :mod:`atexit`): each of their threads
finishes the item it is computing, as a worker process is joined, and ends. Loader runs go first
(their producers may start SmartCache rounds), replacement workers after. The wait is bounded by
:data:`EXIT_JOIN_S` in all; a thread still running then is logged and left, as is the read a loader
``timeout`` abandoned (not waited for).

Threading contract: :func:`stop_at_exit` from any thread; the owners' ``stop_at_exit(deadline)`` is
called once, on the exiting (main) thread.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
import weakref
from typing import Any

log = logging.getLogger(__name__)

#: Most seconds the interpreter's exit waits for fastpipe's threads, all together.
EXIT_JOIN_S = 60.0

_owners: weakref.WeakSet = weakref.WeakSet()
_lock = threading.Lock()


def stop_at_exit(owner: Any) -> None:
    """Call ``owner.stop_at_exit(deadline)`` when the interpreter exits (weakly held). ``owner.exit_order``
    (lower first) orders the calls."""
    with _lock:
        _owners.add(owner)


def _pending(done: set[int]) -> list[Any]:
    with _lock:
        owners = [o for o in list(_owners) if id(o) not in done]
    return sorted(owners, key=lambda o: o.exit_order)


def stop_all(timeout: float = EXIT_JOIN_S) -> None:
    """Stop every registered owner, joining its threads within ``timeout`` seconds overall (the exit hook)."""
    deadline = time.monotonic() + timeout
    done: set[int] = set()
    while owners := _pending(done):  # a run stopped now may have started another: until none is new
        for owner in owners:
            done.add(id(owner))
            try:
                owner.stop_at_exit(deadline)
            except Exception:  # noqa: BLE001 - one owner's failure must not keep the others running at exit
                log.exception("fastpipe: stopping %r at interpreter exit failed", owner)
    left = [  # the copy threads are a ThreadPoolExecutor's: concurrent.futures joins them at exit itself
        t.name
        for t in threading.enumerate()
        if t.daemon
        and t.name.startswith("fastpipe-")
        and not t.name.startswith("fastpipe-copy")
        and t.is_alive()
    ]
    if left:
        log.warning(
            "fastpipe: threads left running at interpreter exit (a read after a loader timeout, or one "
            "still computing after %.0f s): %s",
            timeout,
            left,
        )


def _install() -> None:
    """``threading``'s exit hook (before threads are joined and :mod:`atexit` runs; private, so looked up),
    else :mod:`atexit`."""
    register = getattr(threading, "_register_atexit", None)
    try:
        register(stop_all)
    except (TypeError, RuntimeError):  # absent, or the interpreter is already shutting down
        atexit.register(stop_all)


_install()
