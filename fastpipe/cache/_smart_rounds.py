"""SmartCache rounds: start, wait, swap the prepared replacements in, shut the threads down.

:class:`SmartRounds` holds the round half of :class:`~fastpipe.cache.smart_cache.SmartCacheDataset`
(which inherits it); the window it swaps, its lock and the rotation are the dataset's.

Threading contract: :meth:`SmartRounds.start`, :meth:`SmartRounds.update_cache` and
:meth:`SmartRounds.shutdown` are called from one thread (the training loop or the loader);
:meth:`SmartRounds.wait_replacements` from any thread; the window's tuple is swapped under the
dataset's ``_window_lock``, so a reader sees it before or after a swap.
"""

from __future__ import annotations

import threading
import warnings
from typing import Any

from fastpipe.cache._replacer import Replacer
from fastpipe.cache._skip import next_round
from fastpipe.cache._slots import KEPT, SlotStore
from fastpipe.profiling import annotate

LAG_WARN_S = 0.05  # an epoch-end wait longer than this for missing replacements is worth one warning


def _warn_left(left: list[threading.Thread]) -> None:
    if left:
        warnings.warn(
            f"{len(left)} SmartCache replacement thread(s) still computing an item after 1 s; "
            "they discard their result when done",
            RuntimeWarning,
            stacklevel=3,
        )


class SmartRounds:
    """The rounds of a SmartCache window (a mixin of ``SmartCacheDataset``)."""

    def start(self) -> None:
        """Start the replacement threads and the preparation of the next round (no-op when running).

        After :meth:`shutdown` it starts them again, as MONAI's does (ignite's ``SmartCacheHandler``
        starts at each ``trainer.run()``); see :meth:`shutdown` for the window that follows.
        """
        if self._closed:
            raise RuntimeError("SmartCacheDataset was closed; create a new one to start again")
        if self.replace_num == 0 or self.is_started():
            return
        self._replacer.start()
        if not self._submitted:
            self._replacer.submit(self._rotation.incoming())
            self._submitted = True

    def is_started(self) -> bool:
        """Whether the replacement threads are running."""
        return self._replacer.alive

    def wait_replacements(self, timeout: float | None = None) -> float:
        """Wait until the replacement threads have computed every item handed to them so far (the
        next :meth:`update_cache`'s incoming items), without swapping anything; returns the seconds
        waited (0 when nothing is pending or the threads are not running).

        For timing a SmartCache epoch with its replacement work inside (benchmarks), or for a CPU
        free of replacements afterwards (before a validation pass, say). Any thread may call it; a
        replacement that failed counts as finished here, and :meth:`update_cache` raises its error.
        """
        return self._replacer.wait_idle(timeout)

    def update_cache(self) -> None:
        """Swap the prepared replacements in (waiting only for missing ones) and start the next round.

        Raises:
            ReplacementError: the chain failed on an incoming item (named with its index and file;
                also an instance of the cause's type). With ``on_error="skip"`` the item is dropped
                from the rotation with a warning instead, and the item after it is computed now.

        A call directly after :class:`~fastpipe.ThreadDataLoader`'s own epoch-end call (MONAI code that
        still calls it each epoch) is skipped with one warning: one swap per epoch, not two.
        """
        with self._swap_guard.serial:  # one swap at a time: the loader's waits for a user's, and back
            if self.replace_num == 0 or self._swap_guard.skip_user_call():
                return
            self._swap_round()

    def _swap_round(self) -> None:
        was_started = self.is_started()
        self.start()
        with annotate("smartcache_wait", "wait"):
            incoming, late, lag = next_round(self._replacer, self._rotation, self.on_error, self.fill_report)
        self.replace_num = self._rotation.replace_num  # "skip": fewer when few items are left to rotate
        with annotate("smartcache_swap", "smartcache"):
            outgoing = self._swap(incoming)
            for slot in outgoing:
                if slot in self.core and slot not in self._window:  # after a restart it may still be in
                    self.core.drop(slot)
            self._rotation.advance()
            self._replacer.submit(self._rotation.incoming())
        self.items_swapped += len(incoming)
        self._lags.append(lag)
        self._late.append(late)
        if late and lag > LAG_WARN_S:
            self._warn_lag(late, lag, was_started)

    def loader_update_cache(self, token: object = None) -> None:
        """:meth:`update_cache` as :class:`~fastpipe.ThreadDataLoader` calls it at the end of its epoch
        ``token``; skipped when the loop's own call made this epoch's swap already (an ignite handler)."""
        with self._swap_guard.serial, self._swap_guard.by_loader(token) as run:
            if run:  # else a user's call made this epoch's swap (done: the next run reads its window)
                self.update_cache()

    def loader_epoch_received(self, token: object) -> None:
        """:class:`~fastpipe.ThreadDataLoader`: the loop has received the last batch of epoch ``token``."""
        self._swap_guard.epoch_received(token)

    def _swap(self, incoming: list[int]) -> list[int]:
        """MONAI's swap: the oldest items (the window's first) leave, the rest move up, the new ones
        come last, so ``ds[i]`` is MONAI's item ``i`` in every round."""
        window = list(self._window)
        outgoing = window[: len(incoming)]
        assert self._restarted or outgoing == self._rotation.outgoing(), "window and rotation disagree"
        with self._window_lock:
            self._window = (*window[len(incoming) :], *incoming)
        return outgoing

    def _warn_lag(self, late: int, lag: float, was_started: bool) -> None:
        if self._warned_lag:
            return
        self._warned_lag = True
        hint = (
            "call start() before the first epoch"
            if not was_started
            else f"use more num_replace_workers (now {self._replacer.num_workers}) or a lower replace_rate "
            f"(now {self.replace_rate})"
        )
        warnings.warn(
            f"SmartCacheDataset: {late} of {self.replace_num} replacements were not ready at the epoch end; "
            f"training waited {lag:.3f} s for them. To avoid the stall, {hint}. (warned once)",
            RuntimeWarning,
            stacklevel=3,
        )

    def shutdown(self) -> None:
        """Stop the replacement threads (joined within 1 s); the window stays cached and readable.

        MONAI's semantics, which ignite's ``SmartCacheHandler`` relies on (``start`` at each
        ``trainer.run()``, ``shutdown`` at its end): the next round's replacements are discarded, and
        the rotation starts again from the beginning of the (shuffled) data order, while the window
        read now is kept. After :meth:`start` (or :meth:`update_cache`) each round replaces the
        oldest ``R`` items of that window with the next ones of the order from its beginning, so an
        item can be in the window twice for a few rounds, as in MONAI. No-op when not started.
        :meth:`close` frees the cache.
        """
        if not self.is_started():
            return
        _warn_left(self._replacer.stop(timeout=1.0))
        self._submitted = False
        with self._window_lock:
            window = set(self._window)
        for slot in self._rotation.incoming():  # computed for a round that will not come
            if slot in self.core and slot not in window:
                self.core.drop(slot)
        self._rotation.start = 0  # MONAI's _start_pos = 0
        self._restarted = True


def make_replacer(
    core: Any,
    inputs: list[Any],
    store: SlotStore,
    shard: dict | None,
    num_workers: int,
    replace_num: int,
    nice: int | None,
    on_error: str,
) -> Replacer:
    """The replacement pool of a window; it holds no reference to the dataset (the threads must not
    keep it alive)."""
    return Replacer(
        # an incoming item already cached (after a restart the window may hold it) is kept as it is
        lambda slot: KEPT if slot in core else core.compute(inputs[slot]),
        store,
        inputs.__getitem__,
        num_workers,
        max(1, replace_num),
        nice=nice,
        retry=on_error == "raise",  # "skip" drops a failed item instead of retrying it
        # the dataset's input_index, without a reference to it
        name_of=(lambda slot: shard["indices"][slot]) if shard else None,
    )
