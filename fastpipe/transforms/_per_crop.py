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

from collections.abc import Callable
from typing import Any

import torch

from fastpipe._meta import META_SUFFIX, TRACE_SUFFIX
from fastpipe.transforms._dict import mark_untraced
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
    """Per-crop dicts of a collated batch (a ``list``, for any collate function) plus ``collated``.

    Example:
        >>> b = CollatedBatch({"x": torch.zeros(4, 2)})
        >>> len(b), b[0]["x"].shape, b.collated["x"].shape
        (4, torch.Size([2]), torch.Size([4, 2]))
    """

    def __init__(self, collated: dict[str, Any]) -> None:
        super().__init__(split_batch(collated))
        self.collated = collated
        self._rows = [dict(d) for d in self]  # what each crop held when made

    def unchanged(self) -> bool:
        """Whether the crops are still those ``collated`` holds: no crop, key or value replaced, added or
        removed (a value edited in place is a view of ``collated``'s and shows there)."""
        if len(self) != len(self._rows):
            return False
        for d, row in zip(self, self._rows, strict=True):
            if (
                not isinstance(d, dict)
                or d.keys() != row.keys()
                or any(d[k] is not v for k, v in row.items())
            ):
                return False
        return True


def as_item_list(result: Any) -> list[Any]:
    """A dataset batch for any loader: a collated dict becomes a :class:`CollatedBatch`; per-item
    results that are lists of samples (``num_samples`` crops) are flattened, as MONAI's collate does."""
    if isinstance(result, dict):
        return CollatedBatch(result)
    return [s for r in result for s in (r if isinstance(r, list) else [r])]


def samples_per_item(step: Any) -> int | None:
    """``num_samples`` of a batched first step that gives each item a list of samples (a crop: MONAI's
    ``RandCropByPosNegLabeld`` returns a list even of one), else ``None`` (one dict per item)."""
    n = getattr(step, "num_samples", None)
    return int(n) if isinstance(n, int) and not isinstance(n, bool) and n >= 1 else None


def as_item_samples(result: dict[str, Any], n_items: int, samples: int | None) -> list[Any]:
    """A collated batch of ``n_items`` items as MONAI's loaders hand it to a ``collate_fn``: one list
    of ``samples`` crop dicts per item, in item order (``[[crop] * samples] * n_items``); with
    ``samples=None`` the dicts themselves, flat (a :class:`CollatedBatch`).

    Shape:
        ``result[k]``: ``(n_items * samples, ...)`` -> ``out[b][s][k]``: ``(...)``, row ``b * samples + s``.
    """
    if samples is None:  # one dict per item (or a step's own rows): as they are
        return CollatedBatch(result)
    crops = split_batch(result)
    if len(crops) != n_items * samples:
        raise ValueError(
            f"a batch of {n_items} items holds {len(crops)} crops, expected {n_items} x {samples} "
            "(num_samples); a step after the crop changed how many crops an item has"
        )
    return [crops[b * samples : (b + 1) * samples] for b in range(n_items)]


def untraced_steps(suffix: list[Any]) -> list[Any]:
    """The steps of ``suffix`` that stand in for a MONAI invertible transform (``stands_for``: a
    translated ``RandFlipd``, ``RandRotate90d``), those fused into a crop included."""
    steps = (s for t in suffix for s in (t, *getattr(t, "_augs", ())))
    return [s for s in steps if getattr(s, "stands_for", None)]


def mark_untraced_read(out: Any, steps: list[Any], rows: int | None = None) -> Any:
    """``out`` (an item, a list of samples, or with ``rows`` a collated batch of that many crops) with
    MONAI's trace key ``{key}_transforms`` of each key ``steps`` wrote holding the record that makes
    MONAI's inverse (``Invertd``) raise naming ``translate=False`` (:func:`mark_untraced`): the
    translated random steps trace nothing, and MONAI's ``Invertd`` only warns then, leaving a prediction
    flipped or turned. New dicts; ``out`` itself (maybe a cache entry) is not written."""
    if not steps:
        return out
    if isinstance(out, list):
        return [mark_untraced_read(d, steps) for d in out]
    if not isinstance(out, dict):
        return out
    records: dict[str, Any] = {}
    for step in steps:
        for key in getattr(step, "keys", ()):
            if key in out:
                mark_untraced(records, key, step)
    if rows is not None:  # one list per crop, as the crop gives the values it does not cut
        records = {k: [list(v) for _ in range(rows)] for k, v in records.items()}
    return {**out, **records}


_ATOMS = (torch.Tensor, str, bytes, int, float, bool, type(None))


def copy_ids(copies: list[Any], originals: list[Any]) -> dict[int, int]:
    """``id`` of each transform object inside ``copies`` (a thread's copies of ``originals``, nested
    ``Compose``/``OneOf`` and a dict transform's array transforms included) -> ``id`` of its original."""
    out: dict[int, int] = {}

    def walk(c: Any, o: Any, depth: int) -> None:
        if depth > 6 or c is o or isinstance(c, _ATOMS) or id(c) in out:
            return
        if isinstance(c, (list, tuple)) and isinstance(o, (list, tuple)) and len(c) == len(o):
            for a, b in zip(c, o, strict=True):
                walk(a, b, depth + 1)
            return
        attrs, theirs = getattr(c, "__dict__", None), getattr(o, "__dict__", None)
        if type(c) is not type(o) or not isinstance(attrs, dict) or not isinstance(theirs, dict):
            return
        out[id(c)] = id(o)
        for name, value in attrs.items():
            if name in theirs:
                walk(value, theirs[name], depth + 1)

    walk(list(copies), list(originals), 0)
    return out


def restore_trace_ids(out: Any, ids: dict[int, int]) -> Any:
    """``out`` (an item, a list of samples or items, a batch) with each MONAI trace record (a
    ``MetaTensor``'s ``applied_operations``, a ``{key}_transforms`` list) made by a thread's copy of a
    transform naming the original's ``id`` instead, as MONAI's ``Invertd`` checks it against the chain
    it is given. In place: the records a read made are its own."""
    if not ids:
        return out
    if isinstance(out, list):
        for value in out:
            restore_trace_ids(value, ids)
    elif isinstance(out, dict):
        for key, value in out.items():
            if isinstance(key, str) and key.endswith(TRACE_SUFFIX):
                _restore_records(value, ids)
            elif isinstance(value, torch.Tensor):
                _restore_records(getattr(value, "applied_operations", None), ids)
            elif isinstance(value, list) and not (isinstance(key, str) and key.endswith(META_SUFFIX)):
                restore_trace_ids(value, ids)  # per-crop values, a list of samples
    return out


def _restore_records(records: Any, ids: dict[int, int]) -> None:
    for r in records if isinstance(records, list) else ():
        if isinstance(r, list):  # a batch's: one list per item
            _restore_records(r, ids)
        elif isinstance(r, dict) and isinstance(r.get("id"), int) and r["id"] in ids:
            r["id"] = ids[r["id"]]
