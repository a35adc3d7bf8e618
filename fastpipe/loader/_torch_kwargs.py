"""The ``torch.utils.data.DataLoader`` keyword arguments ``ThreadDataLoader`` takes, and what each means here.

MONAI's ``ThreadDataLoader`` keywords ``buffer_timeout`` and ``use_thread_workers`` are taken too. A user
moving from ``DataLoader`` passes ``pin_memory=True``, ``prefetch_factor=4``, ``timeout=60`` and
friends by habit. :func:`torch_options` takes all of them: those with a meaning for one producer
thread are applied (``timeout``: :mod:`fastpipe.loader._run`; ``batch_sampler``:
:mod:`fastpipe.loader._batches`), those that only concern worker processes are accepted with
one warning that says they change nothing, and ``worker_init_fn``, which cannot be honoured, raises
``TypeError`` saying why and what to use instead.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import torch

#: Applied: they mean the same for a producer thread as for worker processes.
APPLIED = ("prefetch_factor", "pin_memory_device", "timeout", "batch_sampler")
#: Accepted; they concern worker processes only (a thread shares the process), so they change nothing.
PROCESS_ONLY = {
    "multiprocessing_context": "no worker processes are started",
    "in_order": "batches always come in order",
}
#: Raised: no faithful meaning for threads.
UNSUPPORTED = {
    "worker_init_fn": (
        "there are no worker processes to initialise; per-batch random state comes from seed= "
        "(every batch is seeded from (seed, epoch, batch)), and process-wide setup belongs before the loop"
    ),
}
#: MONAI ``ThreadDataLoader``'s own keywords, accepted silently: already so here (the producer polls its
#: queue every ``fastpipe.runtime._queues.POLL_S`` seconds; the fetch workers are threads).
MONAI_THREAD = ("buffer_timeout", "use_thread_workers")
_DEFAULTS = {"multiprocessing_context": None, "in_order": True, "worker_init_fn": None}


@dataclass
class TorchOptions:
    """What the DataLoader keywords change in a ``ThreadDataLoader``."""

    buffer_size: int
    pin_memory: bool = False
    timeout: float = 0  #: seconds the loop waits for one batch before ``RuntimeError`` (0: for ever)
    batch_sampler: Any = None  #: an iterable of index lists, one per batch


def torch_options(
    kwargs: dict[str, Any], buffer_size: int, num_workers: int, pin_memory: bool = False
) -> TorchOptions:
    """Check the DataLoader-only keywords and return the settings they change.

    Args:
        kwargs: keywords ``ThreadDataLoader`` does not take itself.
        buffer_size: the loader's ``buffer_size``; ``prefetch_factor`` (batches loaded ahead per
            worker) raises it to ``prefetch_factor * max(1, num_workers)``.
        num_workers: the loader's fetch threads.
        pin_memory: return CPU batches in page-locked memory (only where CUDA is available; torch's
            DataLoader ignores it likewise without an accelerator).

    Raises:
        TypeError: an unknown keyword (naming those accepted) or ``worker_init_fn``.
        ValueError: a negative ``timeout`` or a ``prefetch_factor`` below 1.
    """
    kwargs = dict(kwargs)
    prefetch = kwargs.pop("prefetch_factor", None)
    timeout, batch_sampler = kwargs.pop("timeout", 0), kwargs.pop("batch_sampler", None)
    if timeout < 0:
        raise ValueError(
            f"ThreadDataLoader: timeout option should be non-negative (as in torch), got {timeout}"
        )
    kwargs.pop("pin_memory_device", None)  # the pinned batches serve whatever device the loop moves them to
    for name in MONAI_THREAD:
        kwargs.pop(name, None)
    _check_rest(kwargs)
    if prefetch is not None:
        if int(prefetch) < 1:
            raise ValueError(f"ThreadDataLoader: prefetch_factor must be >= 1, got {prefetch}")
        buffer_size = max(buffer_size, int(prefetch) * max(1, num_workers))
    pinned = bool(pin_memory) and torch.cuda.is_available()
    return TorchOptions(buffer_size, pinned, float(timeout), batch_sampler)


def _check_rest(kwargs: dict[str, Any]) -> None:
    """Warn for a process-only keyword set to other than its default, raise for the rest (see ``torch_options``)."""
    for name in list(kwargs):
        if name in UNSUPPORTED and kwargs[name] is not None:
            raise TypeError(f"ThreadDataLoader does not support {name}=: {UNSUPPORTED[name]}")
        if name in PROCESS_ONLY:
            value = kwargs.pop(name)
            if value != _DEFAULTS.get(name):
                warnings.warn(
                    f"ThreadDataLoader ignores {name}={value!r}: {PROCESS_ONLY[name]}",
                    UserWarning,
                    stacklevel=4,  # the ThreadDataLoader(...) call: _check_rest < torch_options < __init__
                )
        elif name in UNSUPPORTED:
            kwargs.pop(name)
    if kwargs:
        known = sorted({*APPLIED, *PROCESS_ONLY, *UNSUPPORTED, *MONAI_THREAD})
        raise TypeError(
            f"ThreadDataLoader got unexpected keyword argument(s) {sorted(kwargs)}; besides its own it takes "
            f"these torch DataLoader keywords: {', '.join(known)}"
        )
