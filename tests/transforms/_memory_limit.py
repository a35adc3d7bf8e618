"""Address-space limit for test child processes (Linux): a huge allocation becomes a ``MemoryError``."""

from __future__ import annotations

import resource


def limit_address_space(headroom: int) -> int:
    """Cap this process's address space at its current size plus ``headroom`` bytes; returns the cap."""
    with open("/proc/self/status") as f:
        size = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))
    cap = size + headroom
    resource.setrlimit(resource.RLIMIT_AS, (cap, resource.getrlimit(resource.RLIMIT_AS)[1]))
    return cap
