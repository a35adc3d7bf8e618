"""``SmartCacheDataset(on_error="skip")``: an item whose chain fails leaves the rotation; the rest goes on.

A bad file that enters the window would otherwise fail every round, and the window would stop
rotating for good. Here it is dropped from the rotation's order with a warning naming it, and the
item after it takes its place: at the first fill the window reaches one item further, at a round's
end the next item is computed now. Every item that is left still enters the window in turn.

Threading contract: called from the one thread that fills the window and calls ``update_cache``.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from typing import Any

from fastpipe.cache._fill import FillReport
from fastpipe.cache.errors import ReplacementError

log = logging.getLogger(__name__)

ON_ERROR = ("raise", "skip")


def check_on_error(on_error: Any) -> str:
    """``on_error`` if it is ``"raise"`` or ``"skip"``, else ``ValueError`` naming the value."""
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    return on_error


def drop(rotation: Any, index: int) -> None:
    """Remove data index ``index`` from ``rotation`` (the SmartCache ``Rotation``).

    The items before it keep their places; a window that held it reaches one item further. The
    window shrinks only when fewer items than ``cache_num`` are left, and a round replaces at most
    the items outside the window.
    """
    p = rotation.order.index(index)
    del rotation.order[p]
    rotation.n -= 1
    if p < rotation.start:
        rotation.start -= 1
    rotation.start = rotation.start % rotation.n if rotation.n else 0
    rotation.cache_num = min(rotation.cache_num, rotation.n)
    rotation.replace_num = max(0, min(rotation.replace_num, rotation.n - rotation.cache_num))


def warn_dropped(slot: int, message: str, skipped: dict[int, str], name: int | None = None) -> None:
    """Record ``slot`` in ``skipped`` and warn once for it, naming the item ``name`` (its index in the
    data list; default: ``slot``) and the failure (``message``)."""
    skipped[slot] = message
    name = slot if name is None else name
    log.warning("SmartCacheDataset dropped item %d from the rotation: %s", name, message)
    warnings.warn(
        f"SmartCacheDataset(on_error='skip'): {message}; item {name} is dropped from the rotation",
        RuntimeWarning,
        stacklevel=2,
    )


def fill_skipping(
    rotation: Any, fill: Callable[[list[int]], FillReport], name_of: Callable[[int], int] = int
) -> FillReport:
    """Fill the window with ``fill(slots)`` (an ``on_error="skip"`` fill); failed items leave the rotation
    and the window's next items are filled in their place, until the window holds only good items.

    Raises:
        ValueError: every item failed.
    """
    total, tried = FillReport(), set()
    while True:
        pending = [s for s in rotation.window() if s not in tried]
        if not pending:
            return total
        tried.update(pending)
        report = fill(pending)
        total.seconds += report.seconds
        total.items += report.items
        for index, message in report.skipped.items():
            drop(rotation, index)
            warn_dropped(index, message, total.skipped, name_of(index))
        if rotation.n == 0:
            raise ValueError(
                f"SmartCacheDataset: the chain failed on all {len(tried)} items: {total.skipped}"
            )


def next_round(
    replacer: Any, rotation: Any, on_error: str, report: FillReport
) -> tuple[list[int], int, float]:
    """Wait for the items of the next round: ``(incoming, items not ready at the call, seconds waited)``.

    With ``on_error="raise"`` a failed item raises :class:`~fastpipe.cache.errors.ReplacementError`; with
    ``"skip"`` it leaves the rotation (recorded in ``report.skipped``, one warning) and the item after
    it is computed instead.
    """
    if on_error == "raise":
        incoming = rotation.incoming()
        late = replacer.missing(incoming)
        return incoming, late, replacer.collect(incoming)
    late, lag = None, 0.0
    while True:
        incoming = rotation.incoming()
        try:
            if late is None:
                late = replacer.missing(incoming)
            lag += replacer.collect(incoming)
            return incoming, late, lag
        except ReplacementError as err:  # its ``slot``: the rotation's index; its ``index``: the data list's
            drop(rotation, err.slot)
            warn_dropped(err.slot, str(err), report.skipped, err.index)
            replacer.submit([s for s in rotation.incoming() if s not in incoming])
