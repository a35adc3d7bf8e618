"""Small helpers shared by the dictionary transforms: key lists, per-key options, the same-grid check."""

from __future__ import annotations

from collections.abc import Hashable, Iterator, Sequence
from typing import Any

import numpy as np
import torch

from fastpipe._meta import get_affine, meta_key, trace_key


def ensure_keys(keys: str | Sequence[str] | None) -> tuple[str, ...]:
    """``keys`` as a tuple (a single string becomes a one-tuple, ``None`` an empty one)."""
    if keys is None:
        return ()
    return (keys,) if isinstance(keys, str) else tuple(keys)


def dtype_arg(dtype: Any, who: str) -> torch.dtype | None:
    """A ``dtype`` argument as a ``torch.dtype``: a torch dtype, or a numpy dtype, type or name as MONAI
    takes it (``np.float32``, ``"float64"``); ``None`` stays ``None``; ``TypeError`` naming ``who`` otherwise."""
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    try:
        return torch.from_numpy(np.zeros(0, dtype=np.dtype(dtype))).dtype
    except TypeError as err:
        raise TypeError(f"{who}: dtype={dtype!r} is no torch or numpy dtype") from err


#: MONAI's ``convert_to_tensor``: numpy dtypes torch lacks (most operations) become signed ones
MONAI_SIGNED = {np.dtype("uint16"): np.int32, np.dtype("uint32"): np.int64, np.dtype("uint64"): np.int64}


def tensors_at(data: dict[Hashable, Any], keys: Sequence[Hashable], who: str, signed: bool = True) -> None:
    """Make the numpy arrays under ``keys`` of ``data`` (a transform's copy of the item) tensors, as MONAI's
    transforms take them (zero-copy where torch can share the array; with ``signed``, uint16/32/64 as
    int32/int64, as MONAI's ``convert_to_tensor``); ``TypeError`` naming the key for a value that is neither."""
    for key in keys:
        value = data[key]
        if isinstance(value, torch.Tensor):
            continue
        if not isinstance(value, np.ndarray) or value.dtype.kind not in "biuf":
            raise TypeError(
                f"{who}: {key!r} is {type(value).__name__}; expected a tensor or a numeric numpy array"
            )
        to = MONAI_SIGNED.get(value.dtype) if signed else None
        if to is not None or not value.dtype.isnative or min(value.strides, default=0) < 0:
            value = np.ascontiguousarray(value, dtype=to or value.dtype.newbyteorder("="))
        data[key] = torch.as_tensor(value)


def arrays_as_tensors(items: list[dict[Any, Any]], keys: Sequence[Any]) -> list[dict[Any, Any]]:
    """``items`` with the numpy arrays under ``keys`` as tensors (zero-copy), as MONAI's transforms
    take them; an item without any is returned as is, another is a shallow copy (the item is not changed)."""
    out = []
    for d in items:
        arrays = {k: torch.as_tensor(d[k]) for k in keys if isinstance(d.get(k), np.ndarray)}
        out.append({**d, **arrays} if arrays else d)
    return out


def per_key(value: Any, keys: tuple[str, ...], name: str) -> tuple[Any, ...]:
    """One option per key: a scalar/str is repeated, a sequence must match ``len(keys)``."""
    if isinstance(value, (str, int, float, bool)) or value is None or not isinstance(value, Sequence):
        return (value,) * len(keys)
    if len(value) != len(keys):
        raise ValueError(f"{name}: {len(value)} values {tuple(value)} for {len(keys)} keys {keys}")
    return tuple(value)


def missing_key(who: str, key: Hashable, where: str, skippable: bool = True) -> KeyError:
    """The one error for a key a transform needs but an item lacks (``KeyError``, as MONAI raises).

    ``where`` says which item(s): ``"item with keys [...]"``, or the names of the batch's items;
    ``skippable`` adds the hint that ``allow_missing_keys=True`` would skip the key.
    """
    hint = " (pass allow_missing_keys=True to skip it)" if skippable else ""
    return KeyError(f"{who}: key {key!r} missing from {where}{hint}")


def is_missing(data: dict[Hashable, Any], key: Hashable, allow_missing: bool, who: str) -> bool:
    """Whether ``key`` is absent from ``data`` and allowed to be; :func:`missing_key` when it is not allowed."""
    if key in data:
        return False
    if allow_missing:
        return True
    raise missing_key(who, key, f"item with keys {sorted(map(str, data))}")


def iter_present(
    data: dict[Hashable, Any], keys: Sequence[str], allow_missing: bool, who: str
) -> Iterator[str]:
    """The keys of ``keys`` present in ``data``, in order, each checked when reached (:func:`is_missing`)."""
    for key in keys:
        if not is_missing(data, key, allow_missing, who):
            yield key


def present_keys(
    data: dict[Hashable, Any], keys: tuple[str, ...], allow_missing: bool, who: str
) -> list[int]:
    """Indices into ``keys`` of the keys present in ``data``; ``KeyError`` for a missing one unless allowed."""
    return [i for i, key in enumerate(keys) if not is_missing(data, key, allow_missing, who)]


def spacing_of(affine: np.ndarray | torch.Tensor) -> tuple[float, ...]:
    """Voxel spacing (column norms of the 3x3 part) of a 4x4 affine."""
    a = np.asarray(affine, dtype=np.float64)
    return tuple(float(v) for v in np.sqrt((a[:3, :3] ** 2).sum(axis=0)))


def pixdim_after(old: Any, affine: np.ndarray | torch.Tensor) -> Any:
    """``meta["pixdim"]`` once the affine becomes ``affine``, as MONAI updates it: a header's values
    (MONAI's ``[qfac, x, y, z, ...]``, an array) get the new voxel sizes in ``[1:4]`` (a new array, in
    its dtype); anything else (absent, or a plain spacing) becomes the spacing tuple."""
    spacing = spacing_of(affine)
    if isinstance(old, (np.ndarray, torch.Tensor)) and old.ndim == 1 and old.shape[0] >= 4:
        new = old.clone() if isinstance(old, torch.Tensor) else old.copy()
        new[1:4] = torch.as_tensor(spacing) if isinstance(new, torch.Tensor) else spacing
        return new
    return spacing


def update_meta(data: dict[Hashable, Any], key: str, **entries: Any) -> None:
    """Replace ``data[f"{key}_meta_dict"]`` by an updated copy (the input item's dict is never mutated).

    A new ``affine`` also updates a ``pixdim`` the dict holds (:func:`pixdim_after`), as MONAI's
    transforms update it with every affine they write.
    """
    old = data.get(meta_key(key), {})
    if "affine" in entries and "pixdim" not in entries and "pixdim" in old:
        entries["pixdim"] = pixdim_after(old["pixdim"], entries["affine"])
    data[meta_key(key)] = {**old, **entries}


def _source(data: dict[Hashable, Any], key: str) -> str:
    return str(data.get(meta_key(key), {}).get("filename_or_obj", f"<key {key!r}>"))


def check_same_grid(data: dict[Hashable, Any], keys: Sequence[str], who: str, atol: float = 1e-3) -> None:
    """Raise ``ValueError`` naming both files when the volumes of ``keys`` differ in spatial shape or affine.

    Image and label of one item must share their voxel grid, or every later spatial transform
    silently misaligns them.
    """
    keys = [k for k in keys if k in data and isinstance(data[k], torch.Tensor)]
    if len(keys) < 2:
        return
    ref = keys[0]
    ref_shape, ref_aff = tuple(data[ref].shape[-3:]), get_affine(data, ref).numpy()
    for key in keys[1:]:
        shape, aff = tuple(data[key].shape[-3:]), get_affine(data, key).numpy()
        if shape != ref_shape:
            raise ValueError(
                f"{who}: {key!r} ({_source(data, key)}) has spatial shape {shape} but {ref!r} "
                f"({_source(data, ref)}) has {ref_shape}; image and label must share one voxel grid"
            )
        if not np.allclose(aff, ref_aff, atol=atol, rtol=1e-5):
            raise ValueError(
                f"{who}: {key!r} ({_source(data, key)}) has affine {np.round(aff, 4).tolist()} but {ref!r} "
                f"({_source(data, ref)}) has {np.round(ref_aff, 4).tolist()}; image and label must share one voxel grid"
            )


def mark_untraced(data: dict[Hashable, Any], key: str, transform: Any) -> None:
    """Where ``transform`` stands in for a MONAI invertible transform (a translated chain), give ``key``
    MONAI's trace entry ``{key}_transforms``: one record MONAI's ``inverse`` refuses, naming the fix.

    fastpipe's transforms record no ``applied_operations``; without this key MONAI's ``Invertd`` only
    warns and leaves the prediction as it is (not inverted to the original space). With it, the
    inverse raises with the message below. A native fastpipe transform (``stands_for`` unset) writes nothing.
    """
    name = getattr(transform, "stands_for", None)
    if name is None:
        return
    why = (
        f"<fastpipe: {key!r} was made by fastpipe's translation of MONAI's {name}, which records no "
        "MONAI applied_operations, so MONAI's inverse (Invertd) cannot undo it; build the dataset with "
        "translate=False to invert its items>"
    )
    data[trace_key(key)] = [{"class": why, "id": "fastpipe-untraced", "extra_info": {"warn": why}}]
