"""Bounded-queue moves that never block past a stop, shared by the loader and the SmartCache workers.

A thread that waits on a full or empty queue wakes every :data:`POLL_S` seconds to look at its
stop event, so a stop is noticed within that time and no thread hangs on a queue nobody reads.
"""

from __future__ import annotations

import queue
import threading
from typing import Any

#: How often a thread blocked on a queue looks at its stop event (seconds).
POLL_S = 0.02


def put_until_stopped(q: queue.Queue, item: Any, stop: threading.Event) -> bool:
    """Put ``item`` unless ``stop`` is set (a full queue is retried every :data:`POLL_S`); whether it went in.

    Example:
        >>> q, stop = queue.Queue(maxsize=1), threading.Event()
        >>> put_until_stopped(q, 1, stop)
        True
        >>> stop.set()
        >>> put_until_stopped(q, 2, stop)
        False
    """
    while not stop.is_set():
        try:
            q.put(item, timeout=POLL_S)
            return True
        except queue.Full:
            continue
    return False


def drain(q: queue.Queue) -> None:
    """Take everything now in ``q`` without waiting (so that blocked producers can move on and end)."""
    while True:
        try:
            q.get_nowait()
        except queue.Empty:
            return
