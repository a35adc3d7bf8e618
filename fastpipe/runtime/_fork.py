"""Locks that survive ``fork``.

A process forked while one of its threads holds a ``threading.Lock`` (a loader thread mid-batch, say,
when a ``torch.utils.data.DataLoader`` starts its worker processes) gives the child that lock held
forever: the child's first use of the object would hang. Objects registered here get
``_after_fork_in_child()`` called in every forked child, where they replace their locks.
"""

from __future__ import annotations

import os
import weakref

_owners: weakref.WeakSet = weakref.WeakSet()


def renew_locks_after_fork(owner: object) -> None:
    """Call ``owner._after_fork_in_child()`` in every child forked from now on (weakly held)."""
    _owners.add(owner)


def _renew() -> None:
    for owner in list(_owners):
        owner._after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_renew)
