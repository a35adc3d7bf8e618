"""One SmartCache swap per epoch when both the loader and the user's own loop call ``update_cache()``.

MONAI code calls ``ds.update_cache()`` at the end of every epoch; :class:`fastpipe.ThreadDataLoader`
already does so itself. Kept as is, such a loop would swap twice per epoch (the window moving twice
as fast as asked, and the second swap waiting for replacements no thread had time to make). The
guard lets the loader's swaps through and skips a user's call while the loader has swapped more
often than user calls were skipped (each loader swap answers one user call: with
``persistent_workers`` the loader may swap for the next epoch before the loop's own call for this
one), with one warning saying so. Without a loader no call is ever skipped.

The other order: an ignite ``Engine`` ends its epoch after ``len(loader)`` batches without asking
the iterator for its end, and an ``EPOCH_COMPLETED`` handler calls ``update_cache()`` before the
loader's own epoch-end call, which comes when the next epoch asks the old iterator for a batch. Once
the loop has received an epoch's last batch the loader says so (:meth:`SwapGuard.epoch_received`,
with a token naming that epoch); a user call then swaps, and the loader's call for that epoch is
skipped (:meth:`SwapGuard.answered`).

Threading contract: the loader's call may run on its producer thread (``persistent_workers``) while
the training loop calls ``update_cache()``; which call is the loader's is known per thread, and a
user's call made during or after the loader's swap is the one skipped.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

DOUBLE_SWAP_MESSAGE = (
    "SmartCacheDataset.update_cache() was called right after ThreadDataLoader swapped this epoch's "
    "replacements in (the loader calls update_cache() at the end of every full epoch). This call is "
    "skipped, so the window still moves once per epoch; remove ds.update_cache() from the training "
    "loop. (warned once)"
)


#: Loader swaps that may each skip one later user call (the current epoch's, and a run-ahead epoch's).
MAX_UNANSWERED = 2


class SwapGuard:
    """Tells the loader's epoch-end ``update_cache()`` from a user's call right after it.

    Example:
        >>> guard = SwapGuard()
        >>> with guard.by_loader() as run:
        ...     run, guard.skip_user_call()  # the loader's own call: swap
        (True, False)
    """

    def __init__(self) -> None:
        self._local = threading.local()  # .active: this thread is inside the loader's call
        self.loader_swaps = 0
        self.skipped = 0
        self._warned = False
        self._lock = threading.Lock()
        self.serial = threading.RLock()  # held through a whole swap, the user's or the loader's
        self._pending: object = None  # the epoch whose last batch the loop has, its loader swap to come
        self._by_user: object = None  # an epoch whose loader swap a user call has made already
        self._done: object = None  # the epoch of the loader's latest swap

    def epoch_received(self, token: object) -> None:
        """The loop has received the last batch of the loader's epoch ``token`` (its swap not made yet)."""
        with self._lock:
            if token != self._done:
                self._pending = token

    @contextmanager
    def by_loader(self, token: object = None) -> Iterator[bool]:
        """Wrap the loader's call for its epoch ``token``; yields whether to swap: not when a user call
        made that epoch's swap already (:meth:`epoch_received`). One user call during or after a swap
        made here is then skipped.

        At most :data:`MAX_UNANSWERED` loader swaps wait for a user call (the epoch's own, and one a
        loader running ahead made for the next): a loop that never calls, then moves to another
        loader and calls every epoch, has none of its calls skipped after that. A loader swap that
        raised answers nothing: the user's retry runs.
        """
        with self._lock:  # one decision with the user's call: never both, never neither
            self._done = token
            if self._pending == token:
                self._pending = None
            if token is not None and self._by_user == token:
                self._by_user = None
                run = False
            else:
                self.loader_swaps += 1  # counted at entry: a user call made during the swap is answered
                self.skipped = max(self.skipped, self.loader_swaps - MAX_UNANSWERED)
                run = True
        if not run:
            yield False
            return
        self._local.active = True
        try:
            yield True
        except BaseException:
            with self._lock:
                self.loader_swaps -= 1
            raise
        finally:
            self._local.active = False

    def skip_user_call(self) -> bool:
        """Whether this ``update_cache()`` call repeats a loader's swap (warns once)."""
        if getattr(self._local, "active", False):  # the loader's own call
            return False
        with self._lock:
            if self.loader_swaps <= self.skipped:  # the loader's swap for an epoch the loop has is to come
                if self._pending is not None:
                    self._by_user, self._pending = self._pending, None
                return False
            self.skipped += 1
            warn, self._warned = not self._warned, True
        if warn:
            warnings.warn(DOUBLE_SWAP_MESSAGE, UserWarning, stacklevel=3)
        return True
