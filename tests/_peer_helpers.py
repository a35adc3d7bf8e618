"""Tiny peers for the PeerProcess tests (built in a spawned child, so they live in an importable module)."""

from __future__ import annotations

import os


class Counter:
    def __init__(self, start: int = 0, fail_build: bool = False) -> None:
        if fail_build:
            raise ValueError("bad peer argument: fail_build=True")
        self.n = start
        self.ready_info = {"pid": os.getpid(), "start": start}

    def epoch(self) -> int:
        self.n += 1
        return self.n

    def boom(self) -> None:
        raise KeyError("boom in the child")

    def die(self) -> None:
        os._exit(3)


def make_counter(start: int = 0, fail_build: bool = False) -> Counter:
    return Counter(start, fail_build)
