"""``LoadImaged``: NIfTI files to plain tensors plus a light ``{key}_meta_dict``."""

from __future__ import annotations

import os
from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np
import torch

from fastpipe._meta import meta_key
from fastpipe.transforms._dict import ensure_keys, iter_present
from fastpipe.transforms._nifti import read_nifti
from fastpipe.transforms._nifti_header import header_fields
from fastpipe.transforms._translate_base import torch_dtype

#: ``dtype`` default: the file's dtype, ``float32`` for scaled volumes (integer volumes stay compact).
COMPACT = "compact"
#: What MONAI's tensors hold for the unsigned types torch lacks (``monai.utils.UNSUPPORTED_TYPES``).
_MONAI_UNSIGNED = {
    np.dtype(np.uint16): np.int32,
    np.dtype(np.uint32): np.int64,
    np.dtype(np.uint64): np.int64,
}
_MONAI_SIGNED = {torch.uint16: torch.int32, torch.uint32: torch.int64, torch.uint64: torch.int64}


class LoadImaged:
    """Load NIfTI (``.nii``/``.nii.gz``) files named by ``data[key]`` into tensors.

    Unlike MONAI (which converts to ``float32`` by default), by default (``dtype="compact"``) the
    voxels keep the file's dtype (``int16`` CT, ``uint8`` label); the tensor is a zero-copy view of
    the decoded buffer in the file's order, shape ``(X, Y, Z)``. Volumes with
    ``scl_slope``/``scl_inter`` scaling become ``float32``. The chain's *output* matches MONAI's
    (``Spacingd`` and ``ScaleIntensityRanged`` produce ``float32``), not every intermediate dtype.
    Any other ``dtype`` gives what MONAI's ``LoadImaged`` gives with it: ``None`` keeps nibabel's
    dtype as MONAI does (scaled volumes ``float64``; ``uint16``/``uint32``/``uint64`` files, which
    MONAI's tensors lack, ``int32``/``int64``/``int64``).
    ``data[f"{key}_meta_dict"]`` is always written, whatever ``image_only`` says: tensors are plain,
    so the affine must live somewhere. Its ``pixdim`` is MONAI's: the header's 8 values
    (``pixdim[1:4]``, the voxel sizes, kept current by the spatial transforms as MONAI does); the
    header's other numeric fields (``dim``, ``srow_x``, ``qform_code``, ...) are there too, as MONAI's
    ``NibabelReader`` puts them.

    Args:
        keys: keys of the file paths to load.
        reader: accepted for MONAI compatibility; only ``None`` or ``"NibabelReader"``.
        dtype: convert the voxels to this ``torch.dtype``, or numpy dtype as MONAI takes it
            (``np.float32``, ``"float32"``); ``None``: MONAI's ``dtype=None``; default ``"compact"``: the
            file's dtype, ``float32`` for scaled volumes.
        meta_keys: accepted for MONAI compatibility; must be None.
        image_only: accepted for MONAI compatibility (metadata is always kept).
        ensure_channel_first: add the channel dim right away, like ``EnsureChannelFirstd`` (default False).
        allow_missing_keys: skip keys absent from the item instead of raising ``KeyError``.
        check_nan: raise ``ValueError`` when a float volume holds NaN or ``±inf`` voxels, also finite
            voxels that ``dtype`` (e.g. ``float16``) would turn into ``±inf`` (default True).

    Shape:
        ``data[key]``: ``(X, Y, Z)``, or ``(1, X, Y, Z)`` with ``ensure_channel_first``.

    Example:
        >>> load = LoadImaged(["image", "label"])
        >>> item = load({"image": "img.nii.gz", "label": "lab.nii.gz"})  # doctest: +SKIP
        >>> item["image"].dtype, item["image_meta_dict"]["affine"].shape  # doctest: +SKIP
        (torch.int16, torch.Size([4, 4]))
    """

    def __init__(
        self,
        keys: str | Sequence[str],
        reader: Any = None,
        dtype: torch.dtype | str | None = COMPACT,
        meta_keys: Any = None,
        image_only: bool = False,
        ensure_channel_first: bool = False,
        allow_missing_keys: bool = False,
        check_nan: bool = True,
    ) -> None:
        if reader not in (None, "NibabelReader", "nibabelreader"):
            raise ValueError(
                f"LoadImaged: reader={reader!r} unsupported; fastpipe reads NIfTI itself (use None)"
            )
        if meta_keys is not None:
            raise ValueError(
                f"LoadImaged: meta_keys={meta_keys!r} unsupported; metadata goes to '{{key}}_meta_dict'"
            )
        self.keys = ensure_keys(keys)
        try:
            self.dtype = COMPACT if isinstance(dtype, str) and dtype == COMPACT else torch_dtype(dtype)
        except TypeError as err:
            raise TypeError(f"LoadImaged: dtype={dtype!r} is no torch or numpy dtype") from err
        self.image_only = image_only
        self.ensure_channel_first = ensure_channel_first
        self.allow_missing_keys = allow_missing_keys
        self.check_nan = check_nan

    def __call__(self, data: dict[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in iter_present(d, self.keys, self.allow_missing_keys, "LoadImaged"):
            d[key], d[meta_key(key)] = self._load(_file_of(d[key], key))
        return d

    def _load(self, path: str) -> tuple[torch.Tensor, dict[str, Any]]:
        compact = self.dtype == COMPACT
        scaled = np.float32 if compact or self.dtype == torch.float32 else np.float64  # nibabel's: float64
        vol = read_nifti(path, check_nan=self.check_nan, scaled_dtype=scaled)
        arr = vol.array
        if self.dtype is None and arr.dtype in _MONAI_UNSIGNED:  # MONAI's convert_to_tensor
            arr = arr.astype(_MONAI_UNSIGNED[arr.dtype], order="K")
        img = torch.from_numpy(arr)
        if not compact and self.dtype is not None:
            img = _converted(img, self.dtype, path, self.check_nan)
        affine = torch.as_tensor(vol.affine, dtype=torch.float64)
        pixdim = header_pixdim(vol.header)
        meta = {
            **header_fields(vol.header),
            "affine": affine,
            "original_affine": affine.clone(),
            "spatial_shape": tuple(vol.array.shape),
            "filename_or_obj": vol.path,
            "pixdim": pixdim,
            "original_pixdim": pixdim.copy(),
            "original_channel_dim": float("nan"),  # MONAI's for a file without a channel dim
            "space": "RAS",
            "as_closest_canonical": False,
        }
        if self.ensure_channel_first:
            img = img.unsqueeze(0)
        return img, meta


def _converted(img: torch.Tensor, dtype: torch.dtype, path: str, check_nan: bool) -> torch.Tensor:
    """``img`` as ``dtype`` (MONAI's ``int32``/``int64`` for the unsigned types it lacks); with
    ``check_nan``, ``ValueError`` where a float ``dtype`` narrower than the file's (``float16``, or
    ``float32`` from ``float64``) turns finite voxels into ``±inf``."""
    src = img.dtype
    img = img.to(dtype)
    if img.dtype in _MONAI_SIGNED:  # dtype=np.uint16 asked: MONAI's tensor is int32 all the same
        img = img.to(_MONAI_SIGNED[img.dtype])
    info = torch.finfo(src) if src.is_floating_point else torch.iinfo(src)
    if check_nan and img.is_floating_point() and torch.finfo(img.dtype).max < info.max:
        bad = int((~torch.isfinite(img)).sum())
        if bad:
            raise ValueError(
                f"{path}: {bad} of {img.numel()} voxels overflow to ±inf as {img.dtype} (they are finite as "
                f"{src}); load them as a wider dtype or pass check_nan=False"
            )
    return img


def _file_of(value: Any, key: Hashable) -> str:
    """The file named by ``value``, ``~`` expanded as MONAI's ``LoadImaged`` does; ``TypeError`` for a
    list of files (MONAI stacks them as channels; fastpipe reads one file per key)."""
    if isinstance(value, (list, tuple)):
        raise TypeError(
            f"LoadImaged: data[{key!r}] holds {len(value)} files {list(value)!r}: one file per key is "
            "supported (MONAI stacks several as channels)"
        )
    return os.path.expanduser(os.fspath(value) if isinstance(value, os.PathLike) else str(value))


def header_pixdim(header: Any) -> np.ndarray:
    """MONAI's ``meta["pixdim"]``: the header's 8 values ``[qfac, x, y, z, t, ...]`` in its dtype (float32
    in NIfTI-1, float64 in NIfTI-2), native byte order, qfac other than -1 or 1 read as 1 (nibabel's
    load-time fix); the reader has already rectified the voxel sizes as MONAI's reader does."""
    raw = np.asarray(header["pixdim"])
    pixdim = raw.astype(raw.dtype.newbyteorder("="))
    if pixdim[0] not in (-1.0, 1.0):
        pixdim[0] = 1.0
    return pixdim
