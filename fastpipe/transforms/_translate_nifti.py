"""Whether fastpipe's NIfTI reader stands in for MONAI's ``LoadImaged`` on a chain's items (a helper of
``_translate_det.py``): the reader MONAI picks, its options, and the shapes the files give.

fastpipe reads a file of shape ``(X, Y, Z, 1, ...)`` as ``(X, Y, Z)`` (trailing singleton axes
dropped); MONAI keeps them. The two agree only where the step that handles the key next makes the
same channel-first volume of both: MONAI's ``EnsureChannelFirstd`` (``channel_dim`` not
``"no_channel"``) or the loader's own ``ensure_channel_first``, on a 4D file. Elsewhere (no such
step, a 5D file, ``squeeze_non_spatial_dims``) MONAI's loader is kept.
"""

from __future__ import annotations

import os
from typing import Any

NIFTI_SUFFIXES = (".nii", ".nii.gz")


def nifti_reason(obj: Any, ctx: Any) -> str:
    """Why fastpipe's NIfTI reader cannot stand in for ``obj``'s readers on these items ("" when it can)."""
    if ctx.items is None:
        return "items come from a dataset, so the file types are unknown"
    paths: dict[str, list[str]] = {}
    for item in ctx.items:
        for key in obj.keys:
            v = item.get(key) if isinstance(item, dict) else None
            if v is None and obj.allow_missing_keys:
                continue
            if not isinstance(v, (str, os.PathLike)) or not str(v).lower().endswith(NIFTI_SUFFIXES):
                return f"{key!r} of an item is {v!r}, not one .nii/.nii.gz file"
            paths.setdefault(key, []).append(str(v))
    readers = obj._loader.readers  # without auto_select MONAI tries the last (user) reader first
    if obj._loader.auto_select:
        first = next(iter(paths.values()), [])
        readers = [r for r in readers if not first or r.verify_suffix(first[0])]
    if not readers or type(readers[-1]).__name__ != "NibabelReader":
        return f"the reader MONAI picks is {type(readers[-1]).__name__ if readers else None}"
    opts = vars(readers[-1])
    if opts.get("channel_dim") is not None or opts.get("as_closest_canonical") or opts.get("kwargs"):
        return "NibabelReader options (channel_dim, as_closest_canonical, kwargs) are not reproduced"
    if opts.get("to_gpu"):
        return "NibabelReader's to_gpu is not reproduced"
    return _shapes_reason(obj, ctx, paths, bool(opts.get("squeeze_non_spatial_dims")))


def _shapes_reason(obj: Any, ctx: Any, paths: dict[str, list[str]], squeeze: bool) -> str:
    """``""`` when every file gives MONAI's volume through the chain, else the reason (one header per file)."""
    import nibabel as nib

    cf = bool(obj._loader.ensure_channel_first)
    for key, key_paths in paths.items():
        if cf and any(_is_channel_first(t) and key in _keys(t) for t in ctx.following):
            return f"ensure_channel_first=True and a later EnsureChannelFirstd on {key!r}: MONAI adds a second channel axis"
        for p in key_paths:
            try:
                shape = tuple(int(n) for n in nib.load(p).header.get_data_shape())
            except (OSError, ValueError) as err:
                return f"cannot read the header of {p}: {err}"  # MONAI's loader then names the problem
            dims = list(shape)
            while len(dims) > 3 and dims[-1] == 1:
                dims.pop()
            if len(dims) != 3:
                return f"{p} has shape {shape}; fastpipe reads 3D volumes only"
            if len(shape) > 3 and (squeeze or len(shape) > 4 or not (cf or _channel_first_next(key, ctx))):
                return (
                    f"{p} has shape {shape}: fastpipe drops its trailing singleton axes, MONAI keeps them "
                    "here (no EnsureChannelFirstd next, a 5D file or squeeze_non_spatial_dims)"
                )
    return ""


def _keys(t: Any) -> tuple:
    keys = getattr(t, "keys", None)
    return tuple(keys) if isinstance(keys, (list, tuple)) else ()


def _is_channel_first(t: Any) -> bool:
    return type(t).__name__ == "EnsureChannelFirstd" and type(t).__module__.startswith("monai")


def _channel_first_next(key: str, ctx: Any) -> bool:
    """Whether the step that handles ``key`` next is MONAI's ``EnsureChannelFirstd`` with a channel axis
    fastpipe's reproduces on a file read without its trailing singleton axes."""
    for t in ctx.following:
        if key in _keys(t):
            return _is_channel_first(t) and t.adjuster.input_channel_dim != "no_channel"
        if not _keys(t):  # a callable that may touch any key
            return False
    return False
