"""The consumer's side of ``ThreadDataLoader.timings``: ``wait_s`` and ``iter_s`` of each batch of one loop.

The producer times each batch's ``fetch_s``, ``collate_s`` and ``h2d_s`` (:mod:`fastpipe.loader._make`);
:class:`EpochClock` adds what the loop saw: ``wait_s`` (blocked waiting for the batch), ``iter_s``
(from requesting this batch to requesting the next), and on an epoch's last batch the wait for the
epoch's end (``epoch_end_s``, counted in its ``wait_s`` and ``iter_s`` too). ``timings`` keeps the
first entry (its ``wait_s`` is the start-up latency ``stats()`` reports) and the latest, ``loader.timings_kept``
in all: one per batch for ever would grow without bound.

Threading contract: one clock per loop, used from the consumer's thread only.
"""

from __future__ import annotations

import time
from typing import Any


class EpochClock:
    """Time one loop over a loader; append each batch's timing dict to ``loader.timings`` (a window)."""

    def __init__(self, loader: Any) -> None:
        self.loader = loader
        self.start = 0.0  # when the batch being waited for was requested
        self.last: tuple[dict[str, Any], float] | None = None  # previous timing and when it was requested
        self.end: tuple[dict[str, Any], float] | None = (
            None  # the last batch's timing, when the end was asked
        )

    def request(self) -> None:
        """The loop asks for the next batch: the previous one's interval closes."""
        self.start = time.perf_counter()
        if self.last is not None:  # consumer time per batch: wait + its step (+ repeats)
            self.last[0]["iter_s"] = self.start - self.last[1]

    def received(self, timing: dict[str, Any]) -> None:
        """The batch requested last came: record its wait and keep its timing."""
        timing["wait_s"] = time.perf_counter() - self.start
        timings = self.loader.timings
        timings.append(timing)
        kept = max(2, self.loader.timings_kept)
        if len(timings) > kept:  # a long training keeps the first batch and a window of the latest
            del timings[1 : len(timings) - kept + 1]
        self.last = (timing, self.start)

    def reached_end(self) -> None:
        """The request was answered by the epoch's end, not a batch."""
        self.end = (self.last[0], self.start) if self.last is not None else None
        self.last = None

    def left(self) -> None:
        """The loop is left (end, ``break`` or error): a batch still open closes now."""
        if self.last is not None:
            self.last[0]["iter_s"] = time.perf_counter() - self.last[1]

    def epoch_ended(self) -> None:
        """The epoch's end work is done (a SmartCache swap): the last batch counts the wait for it."""
        if self.end is None:
            return
        timing, asked = self.end
        extra = time.perf_counter() - asked
        timing.update(
            wait_s=timing["wait_s"] + extra, iter_s=timing.get("iter_s", 0.0) + extra, epoch_end_s=extra
        )
