"""The store exchange behind ``fastpipe.distributed.fill_barrier``: each rank's outcome through the rendezvous store.

Every rank writes ``ok`` or its error under a key of the process group's store and waits, with a
timeout, for the keys of all ranks; :func:`raise_for` turns what came back into one error that names
the ranks that failed or never reported. :func:`agree` runs the same exchange before a fill with a
fingerprint of the data list (:func:`list_fingerprint`), so ranks given different lists stop before
caching overlapping shards.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import timedelta
from typing import Any

import torch

_barrier_calls = 0  # exchanges so far in this process: every rank numbers them alike
_watch: ContextVar[Callable[[], None] | None] = ContextVar("fastpipe_fill_watch", default=None)
_LONGEST_WAIT_S = 365 * 86400.0  # what a wait "without timeout" (inf) becomes: timedelta cannot hold inf


class FillBarrierError(RuntimeError):
    """Another rank failed, hung or died during its cache fill; the message names that rank."""


def _store() -> Any:
    return torch.distributed.distributed_c10d._get_default_store()


def exchange(status: str, rank: int, world: int, timeout_s: float) -> tuple[dict[int, str], str | None]:
    """Write this rank's ``status``, wait up to ``timeout_s`` for the others: ``(outcome by rank, abandoned)``.

    ``abandoned`` is the note of a rank that gave up waiting (``None`` when none did). Raises
    ``RuntimeError`` when the store itself is lost.
    """
    global _barrier_calls
    prefix, _barrier_calls = f"fastpipe/fill/{_barrier_calls}/", _barrier_calls + 1
    store = _store()
    store.set(f"{prefix}status/{rank}", status)
    reported = _wait_reported(store, f"{prefix}status/", world, timeout_s)
    # one verdict for all, the first written wins: "ok" (a rank saw every status) or this rank giving up
    # (a rank arriving later must stop too). Check-then-set let a rank report between another's check
    # and its "gave up", read no "gave up", and go on alone while the other raised.
    mine = "ok" if len(reported) == world else f"rank {rank} stopped waiting for it after {timeout_s:.0f} s"
    verdict = store.compare_set(f"{prefix}verdict", "", mine).decode()
    abandoned = None if verdict == "ok" else verdict
    if verdict == "ok":  # whoever wrote it saw every status: they are all there to read
        reported = list(range(world))
    outcome = {r: store.get(f"{prefix}status/{r}").decode() for r in reported}
    store.set(f"{prefix}seen/{rank}", "1")  # keep the store (rank 0) up until everyone has read
    _wait_reported(store, f"{prefix}seen/", world, min(timeout_s, 30.0), only=reported)
    return outcome, abandoned


@contextmanager
def watching(rank: int, world: int, what: str, every_s: float = 1.0) -> Iterator[None]:
    """While a fill runs in this thread, :func:`stop_if_failed` raises once another rank has posted an
    error at the coming barrier, so this rank stops instead of filling its whole shard first (the failing
    rank waits at the barrier for every rank's status before it raises)."""
    prefix, last = f"fastpipe/fill/{_barrier_calls}/status/", [float("-inf")]

    def watch() -> None:
        if time.monotonic() - last[0] < every_s:  # store round trips at most once per every_s
            return
        last[0], store = time.monotonic(), _store()
        for r in range(world):
            key = f"{prefix}{r}"
            if r != rank and store.check([key]) and (status := store.get(key).decode()) != "ok":
                raise FillBarrierError(
                    f"rank {rank} stops its {what} early: rank {r} failed during its {what}: {status}"
                )

    token = _watch.set(watch)
    try:
        yield
    finally:
        _watch.reset(token)


def stop_if_failed() -> None:
    """Raise :class:`FillBarrierError` when another rank's fill failed (inside :func:`watching`; else nothing)."""
    watch = _watch.get()
    if watch is not None:
        watch()


def _wait_reported(
    store: Any, prefix: str, world: int, timeout_s: float, only: Sequence[int] = ()
) -> list[int]:
    """Wait up to ``timeout_s`` for ``prefix{r}`` of every rank (or of ``only``); the ranks that wrote."""
    ranks = list(only) or list(range(world))
    try:
        store.wait([f"{prefix}{r}" for r in ranks], timedelta(seconds=min(timeout_s, _LONGEST_WAIT_S)))
    except RuntimeError:  # a timeout (DistStoreError); find out who is missing below
        pass
    return [r for r in ranks if store.check([f"{prefix}{r}"])]


def raise_for(
    outcome: dict[int, str], abandoned: str | None, world: int, rank: int, timeout_s: float, what: str
) -> None:
    """Raise :class:`FillBarrierError` on a rank whose own fill succeeded when any rank failed or was late."""
    if abandoned is not None and len(outcome) == world:  # everyone reported, but too late for someone
        raise FillBarrierError(
            f"rank {rank} finished its {what} after another rank gave up waiting ({abandoned}); that "
            "rank has stopped, so this one stops too (raise DEFAULT_FILL_TIMEOUT_S for slow fills)"
        )
    failed = {r: s for r, s in outcome.items() if s != "ok"}
    missing = [r for r in range(world) if r not in outcome]
    if not failed and not missing:
        return
    parts = [f"rank {r} failed during its {what}: {s}" for r, s in sorted(failed.items())]
    if missing:
        parts.append(f"rank(s) {missing} did not finish their {what} within {timeout_s:.0f} s (hung or died)")
    raise FillBarrierError(f"rank {rank} stops: " + "; ".join(parts))


def list_fingerprint(items: Sequence[Any]) -> str:
    """``"<count>:<hash>"`` of a data list's order and contents, the same on every node.

    Paths count by their file name only (a shared folder may be mounted at another path on another
    node); tensors and arrays by type and shape; numbers, booleans and ``None`` by value.
    """
    h = hashlib.sha1()
    for item in items:
        h.update(_describe(item).encode("utf-8", "replace") + b"\0")
    return f"{len(items)}:{h.hexdigest()[:16]}"


def _describe(v: Any, depth: int = 0) -> str:
    if isinstance(v, dict) and depth < 3:
        return "{" + ",".join(f"{k}={_describe(v[k], depth + 1)}" for k in sorted(v, key=str)) + "}"
    if isinstance(v, (list, tuple)) and depth < 3:
        return "[" + ",".join(_describe(x, depth + 1) for x in v) + "]"
    if isinstance(v, (str, os.PathLike)):
        return os.path.basename(os.fspath(v))
    if v is None or isinstance(v, (bool, int, float)):
        return repr(v)
    shape = getattr(v, "shape", None)
    return f"{type(v).__name__}{tuple(shape)}" if shape is not None else type(v).__name__


def agree(fingerprint: str, rank: int, world: int, timeout_s: float) -> None:
    """Exchange every rank's data-list ``fingerprint``; ``ValueError`` on every rank when they differ.

    Each rank partitions the list it was given, so lists that differ (a folder listed in another
    order on another node) give shards that overlap and miss items, silently.
    """
    outcome, abandoned = exchange(fingerprint, rank, world, timeout_s)
    first = outcome.get(min(outcome)) if outcome else fingerprint
    differ = sorted(r for r, fp in outcome.items() if fp != first)
    if differ:
        seen = ", ".join(
            f"rank {r}: {n} items" for r, n in sorted((r, fp.split(":")[0]) for r, fp in outcome.items())
        )
        raise ValueError(
            f"the ranks were given different data lists (rank(s) {differ} differ from rank {min(outcome)}; "
            f"{seen}): each rank shards the list it gets, so every rank must get the same items in the "
            "same order (sort a glob or os.listdir: another node may list a folder in another order). "
            "A list already split per rank (MONAI's partition_dataset, as in its DDP tutorials) would be "
            "split again: pass world_size=1 to cache it as it is"
        )
    raise_for({r: "ok" for r in outcome}, abandoned, world, rank, timeout_s, "data list check")
