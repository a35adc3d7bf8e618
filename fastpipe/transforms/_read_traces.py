"""MONAI trace records (``applied_operations``, ``{key}_transforms``) on what a dataset read returns.

fastpipe's translated transforms record no MONAI trace: :func:`mark_untraced_read` gives the keys a
translated invertible random step wrote the record MONAI's inverse refuses, naming ``translate=False``.
MONAI's transforms record ``id(self)``, which ``Invertd`` checks against the chain it is given: a read
through a thread's copies of the transforms names the originals again (:func:`restore_trace_ids`).
"""

from __future__ import annotations

from typing import Any

import torch

from fastpipe._meta import META_SUFFIX, TRACE_SUFFIX
from fastpipe.transforms._dict import mark_untraced


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
