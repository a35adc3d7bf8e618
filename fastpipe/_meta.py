"""Light metadata: a plain dict per key stored beside the tensor, MONAI's ``{key}_meta_dict`` form.

Tensors stay plain ``torch.Tensor``. The metadata of ``data["image"]`` lives in
``data["image_meta_dict"]`` with these entries (all optional except ``affine``):

- ``affine``: ``torch.float64`` 4x4, voxel index -> world (RAS, millimetres), current
- ``original_affine``: the affine as read from the file
- ``spatial_shape``: spatial shape as read from the file (tuple of ints)
- ``filename_or_obj``: source path (str)
- ``pixdim``: MONAI's: the NIfTI header's 8 values ``[qfac, x, y, z, t, ...]`` (a numpy array in the
  header's dtype) whose ``[1:4]``, the voxel spacing, every transform that writes ``affine`` updates as
  MONAI's do; a dict made without a header holds the current spacing (tuple of floats) instead
- ``original_pixdim``: the header's ``pixdim`` as read
- ``original_channel_dim``, ``space``, ``as_closest_canonical``: MONAI's values (NaN, ``"RAS"``, False)
- the NIfTI header's numeric fields as MONAI's ``NibabelReader`` puts them (``dim``, ``datatype``,
  ``srow_x``/``y``/``z``, ``qform_code``, ``sform_code``, ``quatern_b``, ...): little-endian numpy
  copies, left at the loaded values by every transform, as MONAI's leave them

An item of a translated MONAI chain may also hold MONAI's ``{key}_transforms`` (the trace MONAI's
``Invertd`` reads for a plain tensor): the ``applied_operations`` of untranslated MONAI steps, or a
record that makes MONAI's inverse fail naming the fix where a translated step (which traces nothing)
would otherwise be skipped silently (``fastpipe.transforms._dict.mark_untraced``).
"""

from __future__ import annotations

from typing import Any

import torch

META_SUFFIX = "_meta_dict"
TRACE_SUFFIX = "_transforms"


def meta_key(key: str) -> str:
    """The dict key holding the metadata of ``key``."""
    return f"{key}{META_SUFFIX}"


def trace_key(key: str) -> str:
    """MONAI's ``{key}_transforms``: where a plain tensor's ``applied_operations`` live in the item."""
    return f"{key}{TRACE_SUFFIX}"


def companions(key: str) -> tuple[str, str]:
    """The entries that belong to the tensor ``key`` (its metadata and its trace), which MONAI keeps
    inside the ``MetaTensor``: where the tensor is kept, copied or selected, they go with it."""
    return meta_key(key), trace_key(key)


def get_affine(data: dict[str, Any], key: str) -> torch.Tensor:
    """The current affine of ``key`` (identity when none is known)."""
    aff = data.get(meta_key(key), {}).get("affine")
    if aff is None:
        return torch.eye(4, dtype=torch.float64)
    return torch.as_tensor(aff, dtype=torch.float64)


def item_name(data: Any) -> str:
    """A short human name for an item in error messages: its file name when known."""
    if isinstance(data, dict):
        for k, v in data.items():
            if k.endswith(META_SUFFIX) and isinstance(v, dict) and v.get("filename_or_obj"):
                return str(v["filename_or_obj"])
        for v in data.values():
            if isinstance(v, str):
                return v
        return "item with keys " + ", ".join(map(str, data))
    if isinstance(data, (str, int)):
        return str(data)
    return f"{type(data).__name__} item"  # never repr(): it would print whole tensors
