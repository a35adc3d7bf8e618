"""One SmartCache swap per epoch when both the loader and the user's own loop call ``update_cache()``.

MONAI code calls ``ds.update_cache()`` at the end of every epoch; :class:`fastpipe.ThreadDataLoader`
already does so itself. Kept as is, such a loop would swap twice per epoch (the window moving twice
as fast as asked, and the second swap waiting for replacements no thread had time to make). The
guard lets the loader's swap through and skips the user's call that directly follows it, with one
warning saying so.

Threading contract: :meth:`SwapGuard.by_loader` and :meth:`SwapGuard.skip_user_call` are called
from the thread that calls ``update_cache`` (the training loop, or the loader's producer with
``persistent_workers``), never at once for one dataset.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager

DOUBLE_SWAP_MESSAGE = (
    "SmartCacheDataset.update_cache() was called right after ThreadDataLoader swapped this epoch's "
    "replacements in (the loader calls update_cache() at the end of every full epoch). This call is "
    "skipped, so the window still moves once per epoch; remove ds.update_cache() from the training "
    "loop. (warned once)"
)


class SwapGuard:
    """Tells the loader's epoch-end ``update_cache()`` from a user's call right after it.

    Example:
        >>> guard = SwapGuard()
        >>> with guard.by_loader():
        ...     guard.skip_user_call()  # the loader's own call: swap
        False
    """

    def __init__(self) -> None:
        self._in_loader = False
        self._after_loader = False
        self._warned = False
        self.skipped = 0

    @contextmanager
    def by_loader(self) -> Iterator[None]:
        """Wrap the loader's call; a user call directly after it is then skipped."""
        self._in_loader = True
        try:
            yield
        finally:
            self._in_loader = False
        self._after_loader = True

    def skip_user_call(self) -> bool:
        """Whether this ``update_cache()`` call repeats the loader's swap of this epoch (warns once)."""
        if self._in_loader:
            self._after_loader = False
            return False
        if not self._after_loader:
            return False
        self._after_loader = False
        self.skipped += 1
        if not self._warned:
            self._warned = True
            warnings.warn(DOUBLE_SWAP_MESSAGE, UserWarning, stacklevel=3)
        return True
