"""A collated batch as per-crop items and back: per-item steps after a batched op, other loaders.

A batched op (``RandCropByPosNegLabeld.batch_call``) returns one dict whose tensors have a leading
``N = B * num_samples`` dimension and whose other values are lists of length ``N``. A transform
without a batched form runs on each crop's dict (:func:`split_batch`), and the results are
collated again (:func:`run_per_crop`). :class:`CollatedBatch` is what ``CacheDataset.__getitems__``
returns: a list of per-crop dicts that any collate function stacks (torch's ``default_collate``,
MONAI's ``list_data_collate``), which also carries the collated dict that
:func:`fastpipe.list_data_collate` hands back without copying.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from fastpipe.transforms.compose import apply_transform


def batch_length(batch: dict[str, Any]) -> int:
    """``N``, the leading dimension of the tensors of a collated batch."""
    for v in batch.values():
        if isinstance(v, torch.Tensor) and v.ndim > 0:
            return int(v.shape[0])
    for v in batch.values():
        if isinstance(v, list):
            return len(v)
    raise ValueError(f"a collated batch needs a tensor or list value; got keys {sorted(map(str, batch))}")


def split_batch(batch: dict[str, Any]) -> list[dict[str, Any]]:
    """The ``N`` per-crop dicts of a collated batch: tensor rows are views, list entries are shared.

    Shape:
        ``batch[k]``: ``(N, ...)`` -> item ``n``'s ``[k]``: ``(...)``.
    """
    n = batch_length(batch)
    out: list[dict[str, Any]] = [{} for _ in range(n)]
    for key, v in batch.items():
        rows = v if (isinstance(v, torch.Tensor) and v.ndim > 0 or isinstance(v, list)) else None
        if rows is not None and len(rows) != n:
            raise ValueError(f"batch value {key!r} has {len(rows)} rows, expected {n} like the others")
        for i, d in enumerate(out):
            d[key] = rows[i] if rows is not None else v
    return out


def runs_on_batch(t: Any, spatial_size: Any) -> bool:
    """Whether ``t`` runs on a stacked batch of ``spatial_size`` crops: it has ``apply_batch`` and keeps their shape."""
    keeps = getattr(t, "keeps_shape", None)
    return callable(getattr(t, "apply_batch", None)) and callable(keeps) and bool(keeps(tuple(spatial_size)))


def _stacked_size(batch: dict[str, Any], t: Any, n: int) -> tuple[int, ...] | None:
    """The crops' spatial size when every one of ``t``'s keys in ``batch`` is a stacked ``(n, C, ...)``
    tensor of one spatial size; ``None`` otherwise. A key the crop did not cut is a list of the item's
    own value (the cached tensor itself, once per crop): such a step runs per crop, on copies. A step
    that only picks entries (``whole_batch``) takes the batch whatever its values: ``()``."""
    if getattr(t, "whole_batch", False):
        return ()
    sizes = set()
    for k in getattr(t, "keys", ()):
        if k not in batch:
            continue
        v = batch[k]
        if not (isinstance(v, torch.Tensor) and v.ndim >= 2 and v.shape[0] == n):
            return None
        sizes.add(tuple(v.shape[2:]))
    return sizes.pop() if len(sizes) == 1 else None


def run_per_crop(
    batch: dict[str, Any], transforms: list[Any], wrap: Callable[[Exception, Any], Exception] | None = None
) -> dict[str, Any]:
    """Apply ``transforms`` to the crops of ``batch`` in order.

    The leading transforms that run on a stacked batch (:func:`runs_on_batch`: fastpipe's random
    transforms that keep the crop's shape) draw for all ``N`` crops at once and update the batch in
    place. From the first other transform on, each crop runs on its own and the crops are collated
    again at the end. ``wrap(err, transform)`` (optional) gives the error to raise, from ``err``, when
    a transform fails (a dataset names the batch's items there).
    """
    if not transforms:
        return batch
    import fastpipe  # at call time: the package imports the transforms

    items: Any = None
    n = batch_length(batch)
    for t in transforms:
        try:
            if items is None and (size := _stacked_size(batch, t, n)) is not None and runs_on_batch(t, size):
                batch = t.apply_batch(batch, t.draw_batch(batch, n))
                continue
            items = apply_transform(t, split_batch(batch) if items is None else items)
        except Exception as err:
            if wrap is None:
                raise
            raise wrap(err, t) from err
    # ragged: crops a per-crop step made of other sizes stay lists here; the loader's collate refuses them
    return batch if items is None else fastpipe.list_data_collate(items, ragged=True)


class CollatedBatch(list):
    """The crop dicts of a collated batch (a ``list``, for any collate function) plus ``collated``:
    with ``samples``, one list of ``samples`` crops per item, as MONAI's loaders hand a ``collate_fn``
    the items of a multi-sample crop; else the crops flat.

    Example:
        >>> b = CollatedBatch({"x": torch.zeros(4, 2)}, samples=2)
        >>> len(b), len(b[0]), b[0][0]["x"].shape, b.collated["x"].shape
        (2, 2, torch.Size([2]), torch.Size([4, 2]))
    """

    def __init__(self, collated: dict[str, Any], samples: int | None = None) -> None:
        crops = split_batch(collated)
        super().__init__(crops)
        self.collated = collated
        self._rows = [dict(d) for d in crops]  # what each crop held when made
        if samples is not None:
            self.group(samples)

    def group(self, samples: int) -> CollatedBatch:
        """Group the crops in place: one list of ``samples`` crops per item, in order."""
        crops = self._crops()
        if samples < 1 or len(crops) % samples:
            raise ValueError(
                f"a batch of {len(crops)} crops does not split into items of {samples} (num_samples); "
                "a step after the crop changed how many crops an item has"
            )
        self[:] = [crops[b : b + samples] for b in range(0, len(crops), samples)]
        return self

    def _crops(self) -> list[Any]:
        return flat_samples(self)

    def unchanged(self) -> bool:
        """Whether the crops are still those ``collated`` holds: no crop, key or value replaced, added or
        removed (a value edited in place is a view of ``collated``'s and shows there)."""
        crops = self._crops()
        if len(crops) != len(self._rows):
            return False
        for d, row in zip(crops, self._rows, strict=True):
            if (
                not isinstance(d, dict)
                or d.keys() != row.keys()
                or any(d[k] is not v for k, v in row.items())
            ):
                return False
        return True


def flat_samples(results: Sequence[Any]) -> list[Any]:
    """Per-item results with each list of samples (``num_samples`` crops) flattened, as MONAI's collate does."""
    return [s for r in results for s in (r if isinstance(r, list) else [r])]


def as_item_list(result: Any) -> list[Any]:
    """A dataset batch for any loader: a collated dict becomes a :class:`CollatedBatch`; per-item
    results that are lists of samples are flattened (:func:`flat_samples`)."""
    if isinstance(result, dict):
        return CollatedBatch(result)
    return flat_samples(result)


def samples_per_item(step: Any) -> int | None:
    """``num_samples`` of a batched first step that gives each item a list of samples (a crop: MONAI's
    ``RandCropByPosNegLabeld`` returns a list even of one), else ``None`` (one dict per item)."""
    n = getattr(step, "num_samples", None)
    return int(n) if isinstance(n, int) and not isinstance(n, bool) and n >= 1 else None


def as_item_samples(result: dict[str, Any], n_items: int, samples: int | None) -> CollatedBatch:
    """A collated batch of ``n_items`` items as MONAI's loaders hand it to a ``collate_fn``: one list
    of ``samples`` crop dicts per item, in item order (``[[crop] * samples] * n_items``); with
    ``samples=None`` the dicts themselves, flat.

    Shape:
        ``result[k]``: ``(n_items * samples, ...)`` -> ``out[b][s][k]``: ``(...)``, row ``b * samples + s``.
    """
    out = CollatedBatch(result)
    if samples is not None and len(out) != n_items * samples:
        raise ValueError(
            f"a batch of {n_items} items holds {len(out)} crops, expected {n_items} x {samples} "
            "(num_samples); a step after the crop changed how many crops an item has"
        )
    return out if samples is None else out.group(samples)
