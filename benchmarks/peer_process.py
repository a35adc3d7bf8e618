"""A benchmark peer in a process of its own, timing an epoch each time it is asked.

Peers that share one process also share its heap: one library's gigabytes of per-epoch copies
(MONAI's ``copy_cache=True``) leave page reclaim and allocator state that slows whichever peer runs
next. Each peer here lives in its own spawned process, as each library runs in practice, while the
parent still interleaves their epochs so they share the machine's noise.

Protocol: the child builds the peer with ``factory(**kwargs)`` (a ``"module:function"`` path),
answers ``ready`` with the peer's ``ready_info``, then calls the method named by each request and
sends back its result. An exception in the child reaches the parent as a ``RuntimeError`` carrying the
child's traceback; a child that dies or does not answer within ``timeout_s`` is reported, never waited
on forever.
"""

from __future__ import annotations

import importlib
import multiprocessing as mp
import traceback
from typing import Any

_STOP = "__stop__"


def _serve(factory: str, kwargs: dict[str, Any], conn: Any) -> None:
    try:
        module, func = factory.split(":")
        peer = getattr(importlib.import_module(module), func)(**kwargs)
        conn.send(("ok", getattr(peer, "ready_info", None)))
        while True:
            request = conn.recv()
            if request == _STOP:
                return
            conn.send(("ok", getattr(peer, request)()))
    except BaseException:  # noqa: BLE001 - handed to the parent, which raises it
        conn.send(("error", traceback.format_exc()))
    finally:
        conn.close()


class PeerProcess:
    """One peer, built in a spawned process; :meth:`call` runs one of its methods there.

    Args:
        name: the peer's name (in errors).
        factory: ``"module:function"`` that builds the peer from ``kwargs`` in the child.
        kwargs: picklable arguments of ``factory``.
        timeout_s: longest wait for any answer (the build included).

    Example:
        >>> peer = PeerProcess("fastpipe", "benchmarks.cached_epoch_peers:serve_peer", {"name": "fastpipe"})  # doctest: +SKIP
        >>> wall, cpu, crops = peer.call("epoch")  # doctest: +SKIP
        >>> peer.close()  # doctest: +SKIP
    """

    def __init__(self, name: str, factory: str, kwargs: dict[str, Any], timeout_s: float = 900.0) -> None:
        self.name, self.timeout_s = name, timeout_s
        ctx = mp.get_context("spawn")  # no fork of a process that runs threads
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(
            target=_serve, args=(factory, kwargs, child), name=f"peer-{name}", daemon=True
        )
        self._proc.start()
        child.close()
        self._closed = False
        self.ready_info = self._answer("build")

    def _answer(self, what: str) -> Any:
        if not self._conn.poll(self.timeout_s):
            alive = self._proc.is_alive()
            self.close()
            raise RuntimeError(
                f"peer {self.name!r}: no answer to {what!r} within {self.timeout_s:.0f} s "
                f"({'still running' if alive else f'process exited with code {self._proc.exitcode}'})"
            )
        try:
            status, payload = self._conn.recv()
        except EOFError:
            self._proc.join(timeout=5)
            code = self._proc.exitcode
            self.close()
            raise RuntimeError(
                f"peer {self.name!r}: process ended during {what!r} (exit code {code})"
            ) from None
        if status == "error":
            self.close()
            raise RuntimeError(f"peer {self.name!r} failed during {what!r}:\n{payload}")
        return payload

    def call(self, method: str) -> Any:
        """Run ``peer.method()`` in the child and return its (picklable) result."""
        if self._closed:
            raise RuntimeError(f"peer {self.name!r} is closed")
        self._conn.send(method)
        return self._answer(method)

    def close(self) -> None:
        """Stop the child (idempotent): ask, wait briefly, then terminate."""
        if self._closed:
            return
        self._closed = True
        try:
            self._conn.send(_STOP)
        except (BrokenPipeError, OSError):
            pass
        self._proc.join(timeout=10)
        if self._proc.is_alive():
            self._proc.terminate()
            self._proc.join(timeout=5)
        self._conn.close()

    def __enter__(self) -> PeerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
