"""MONAI's trace records on what a cache dataset's reads return (both datasets share it).

A translated invertible random step (``RandFlipd``, ``RandRotate90d``) records no MONAI trace:
its keys get the record MONAI's ``Invertd`` refuses, naming ``translate=False``. A read through a
thread's copies of MONAI's own transforms names the user's originals again, so ``Invertd`` given the
user's chain inverts it. See :mod:`fastpipe.transforms._read_traces`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastpipe.transforms._per_crop import batch_length
from fastpipe.transforms._read_traces import copy_ids, mark_untraced_read, restore_trace_ids, untraced_steps


class TracedReads:
    """Mixin before :class:`~fastpipe.cache._reads.CachedReads`: its reads with MONAI's trace records."""

    suffix: list[Any]
    _local: Any

    def __getitem__(self, index: int | slice | Sequence[int]) -> Any:
        """Item ``index`` (negative counts from the end); a slice or a list of indices gives a
        ``torch.utils.data.Subset`` of this dataset, as MONAI's datasets do. The keys a translated MONAI
        invertible random step wrote carry a record that MONAI's ``Invertd`` refuses, naming ``translate=False``."""
        return mark_untraced_read(super().__getitem__(index), untraced_steps(self.suffix))  # type: ignore[misc]

    def _fetch(self, indices: list[int], suffix: list[Any]) -> Any:
        out, steps = super()._fetch(indices, suffix), untraced_steps(suffix)  # type: ignore[misc]
        if suffix is not self.suffix:  # a thread's copies (fetch_seeded): traces name the originals
            known = getattr(self._local, "trace_ids", None)
            if known is None or known[0] is not suffix:
                known = self._local.trace_ids = (suffix, copy_ids(suffix, self.suffix))
            out = restore_trace_ids(out, known[1])
        if isinstance(out, dict):  # a batched op's crops
            return mark_untraced_read(out, steps, batch_length(out))
        return [mark_untraced_read(o, steps) for o in out]
