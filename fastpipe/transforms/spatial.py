"""``Orientationd`` and ``Spacingd`` with MONAI 1.6's semantics on plain tensors (``EnsureChannelFirstd``: ``channel.py``).

The affine lives in ``data[f"{key}_meta_dict"]["affine"]``. Output shapes, affines and values
follow MONAI (see ``_affine.py`` and ``_resample.py``); the differences are dtypes and memory
layout: ``Spacingd`` returns float32 for interpolated keys (as MONAI, whatever its ``dtype``) but keeps
an integer input dtype for ``nearest`` keys (a ``uint8`` label stays ``uint8``, 4x smaller in a cache), and outputs keep
the input's memory order (a NIfTI volume stays x-fastest: a permuted, not C-contiguous, tensor).
``CropForegroundd`` returns C-contiguous tensors.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

import nibabel as nib
import numpy as np
import torch

from fastpipe._meta import get_affine, meta_key
from fastpipe._tensors import numpy_ok
from fastpipe.transforms._affine import (
    AFFINE_TOL,
    check_axcodes,
    is_separable,
    orientation_transform,
    spacing_geometry,
)
from fastpipe.transforms._dict import (
    check_same_grid,
    dtype_arg,
    ensure_keys,
    mark_untraced,
    per_key,
    pixdim_after,
    present_keys,
    spacing_of,
    tensors_at,
    update_meta,
)
from fastpipe.transforms._resample import resample_grid, resample_separable, ties_need_grid

_MODES = ("bilinear", "nearest")
_PADDINGS = ("border", "zeros", "reflection")


def _flip(img: torch.Tensor, axes: list[int]) -> torch.Tensor:
    """Flip ``axes``, keeping the memory order (numpy copy into huge-page memory on CPU)."""
    if not axes:
        return img
    if not numpy_ok(img) or img.requires_grad:
        return torch.flip(img, axes)
    src = img.numpy()
    view = src[tuple(slice(None, None, -1) if a in axes else slice(None) for a in range(src.ndim))]
    out = np.empty_like(view, order="K")
    np.copyto(out, view)
    return torch.from_numpy(out)


class Orientationd:
    """Reorient volumes to ``axcodes`` by flipping and permuting axes (no interpolation), as MONAI does.

    Any affine works, oblique included (nibabel's closest axes). Flips are copied; the
    permutation is a view. Checks first that all ``keys`` share one voxel grid.

    Args:
        keys: keys to transform.
        axcodes: target orientation (default ``"RAS"``).
        as_closest_canonical: reorient to RAS (default False).
        labels: accepted for MONAI compatibility; must be None (RAS world axes).
        allow_missing_keys: skip absent keys (default False).

    Shape:
        ``(C, X, Y, Z)`` -> ``(C, X', Y', Z')`` (a permutation of the spatial dims).

    Example:
        >>> Orientationd(["image", "label"], axcodes="RAS")  # doctest: +ELLIPSIS
        <...Orientationd object at ...>
    """

    def __init__(self, keys, axcodes: str | None = "RAS", as_closest_canonical: bool = False, labels=None,
                 allow_missing_keys: bool = False) -> None:  # fmt: skip
        if labels is not None:
            raise ValueError(f"Orientationd: labels={labels!r} unsupported; fastpipe uses RAS world axes")
        if axcodes is None and not as_closest_canonical:
            raise ValueError("Orientationd: give axcodes or as_closest_canonical=True")
        self.keys = ensure_keys(keys)
        self.axcodes = "RAS" if as_closest_canonical else check_axcodes(axcodes)
        self.allow_missing_keys = allow_missing_keys

    def __call__(self, data: dict[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        present = [self.keys[i] for i in present_keys(d, self.keys, self.allow_missing_keys, "Orientationd")]
        tensors_at(d, present, "Orientationd")
        check_same_grid(d, present, "Orientationd")
        for key in present:
            self._orient(d, key)
        return d

    def _orient(self, d: dict[Hashable, Any], key: str, defer_flips: bool = False) -> tuple[int, ...]:
        """Reorient ``d[key]``; with ``defer_flips`` a flip-only reorientation leaves the voxels as they
        are (only the affine changes) and returns the spatial axes still to flip."""
        img, affine = d[key], get_affine(d, key).numpy()
        if img.ndim != 4:
            raise ValueError(f"Orientationd: {key!r} has shape {tuple(img.shape)}; expected (C, X, Y, Z)")
        ornt = orientation_transform(affine, self.axcodes)
        flips = [1 + i for i in range(3) if ornt[i, 1] == -1]
        perm = [0] + [1 + int(i) for i in np.argsort(ornt[:, 0])]
        deferred = defer_flips and perm == [0, 1, 2, 3]
        out = img if deferred else _flip(img, flips)
        if perm != [0, 1, 2, 3]:
            out = out.permute(*perm)
        new_affine = affine @ nib.orientations.inv_ornt_aff(ornt, tuple(img.shape[1:]))
        pixdim = pixdim_after(d.get(meta_key(key), {}).get("pixdim"), new_affine)
        update_meta(d, key, affine=torch.as_tensor(new_affine, dtype=torch.float64), pixdim=pixdim)
        mark_untraced(d, key, self)
        d[key] = out
        return tuple(f - 1 for f in flips) if deferred else ()


class Spacingd:
    """Resample volumes to voxel spacing ``pixdim`` with MONAI's output grid (shape, affine, values).

    Axis-aligned voxel maps (the usual case after ``Orientationd``, oblique affines included)
    take a separable path: 1-D linear interpolation along each axis in turn, or index gathers for
    ``nearest``. Sheared maps and ``reflection`` padding use ``grid_sample`` like MONAI. Checks
    first that all ``keys`` share one voxel grid.

    Args:
        keys: keys to transform.
        pixdim: output spacing in mm, one value per spatial axis (shorter: last value repeated;
            non-positive: keep the input's).
        diagonal: resample to a diagonal affine (default False: keep rotation and direction).
        mode: ``"bilinear"`` or ``"nearest"``, one or one per key (default ``"bilinear"``).
        padding_mode: ``"border"``, ``"zeros"`` or ``"reflection"``, one or one per key (default ``"border"``).
        align_corners: grid_sample's convention (default False).
        dtype: interpolation dtype of non-nearest keys, a torch or numpy dtype (default ``torch.float32``;
            ``None``: float32; MONAI's default is float64). The output is float32 whatever it is, as MONAI's.
        scale_extent, recompute_affine, min_pixdim, max_pixdim: MONAI options; only their defaults.
        ensure_same_shape: MONAI's: a key with the first key's input shape and spacing (within 1e-3)
            gets the first key's output shape, where rounding would make it one voxel off (default True).
        allow_missing_keys: skip absent keys (default False).

    Shape:
        ``(C, X, Y, Z)`` -> ``(C, X', Y', Z')``; nearest keys keep an integer dtype, others (float64
        labels included) become float32, as MONAI makes them.

    Example:
        >>> Spacingd(["image", "label"], pixdim=(1.5, 1.5, 2.0), mode=("bilinear", "nearest"))  # doctest: +ELLIPSIS
        <...Spacingd object at ...>
    """

    def __init__(
        self,
        keys,
        pixdim: Sequence[float] | float,
        diagonal: bool = False,
        mode: str | Sequence[str] = "bilinear",
        padding_mode: str | Sequence[str] = "border",
        align_corners: bool | Sequence[bool] = False,
        dtype: torch.dtype | None = torch.float32,
        scale_extent: bool = False,
        recompute_affine: bool = False,
        min_pixdim=None,
        max_pixdim=None,
        ensure_same_shape: bool = True,
        allow_missing_keys: bool = False,
    ) -> None:
        if scale_extent or recompute_affine or min_pixdim is not None or max_pixdim is not None:
            raise ValueError(
                "Spacingd: scale_extent, recompute_affine, min_pixdim, max_pixdim are not supported"
            )
        self.keys = ensure_keys(keys)
        self.pixdim = np.atleast_1d(np.asarray(pixdim, dtype=np.float64))
        self.diagonal = diagonal
        self.mode = per_key(mode, self.keys, "Spacingd mode")
        self.padding_mode = per_key(padding_mode, self.keys, "Spacingd padding_mode")
        self.align_corners = per_key(align_corners, self.keys, "Spacingd align_corners")
        for m, p in zip(self.mode, self.padding_mode, strict=True):
            if m not in _MODES or p not in _PADDINGS:
                raise ValueError(
                    f"Spacingd: mode {m!r} / padding_mode {p!r} unsupported; use {_MODES} / {_PADDINGS}"
                )
        self.dtype = dtype_arg(dtype, "Spacingd") or torch.float32
        self.ensure_same_shape = ensure_same_shape
        self.allow_missing_keys = allow_missing_keys

    def __call__(self, data: dict[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        present = present_keys(d, self.keys, self.allow_missing_keys, "Spacingd")
        tensors_at(d, [self.keys[i] for i in present], "Spacingd")
        check_same_grid(d, [self.keys[i] for i in present], "Spacingd")
        first = None
        for i in present:
            done = self._resample(d, i, first=first)
            first = first or done
        return d

    def _resample(
        self, d: dict[Hashable, Any], i: int, flips: tuple[int, ...] = (), first: Any = None
    ) -> Any:
        """Resample key ``i``; ``flips`` (spatial axes) are pending flips of ``d[key]`` to fold in.

        Returns ``(input shape, input spacing, output shape)``; ``first``, the first key's, gives its output
        shape to a key of the same input shape and spacing (MONAI's ``ensure_same_shape``).
        """
        key, mode, pad, ac = self.keys[i], self.mode[i], self.padding_mode[i], bool(self.align_corners[i])
        img, affine = d[key], get_affine(d, key).numpy()
        if img.ndim != 4:
            raise ValueError(f"Spacingd: {key!r} has shape {tuple(img.shape)}; expected (C, X, Y, Z)")
        in_shape, spacing = tuple(img.shape[1:]), spacing_of(affine)
        if 0 in in_shape:
            raise ValueError(
                f"Spacingd: {key!r} has the empty spatial shape {in_shape} (an empty crop before, e.g. "
                "CropForegroundd finding no foreground): nothing to resample"
            )
        new_affine, out_shape, xform = spacing_geometry(affine, in_shape, self.pixdim, self.diagonal)
        if self.ensure_same_shape and first is not None and first[0] == in_shape:
            if np.allclose(first[1], spacing, atol=1e-3):
                out_shape = first[2]
        separable = pad != "reflection" and is_separable(xform, in_shape)
        if separable and mode == "nearest" and ties_need_grid(xform, in_shape, out_shape, ac):
            separable = False
        if out_shape == in_shape and np.allclose(new_affine, affine, atol=AFFINE_TOL) or not separable:
            img = _flip(img, [1 + a for a in flips])
        if out_shape == in_shape and np.allclose(new_affine, affine, atol=AFFINE_TOL):
            out = img if mode == "nearest" else img.to(self.dtype)
        elif separable:
            out = resample_separable(img, xform, out_shape, mode, pad, ac, self.dtype, flip_axes=flips)
        else:
            out = resample_grid(img, xform, out_shape, mode, pad, ac, self.dtype)
        if out.is_floating_point() and out.dtype != torch.float32:  # MONAI returns float32 whatever its
            out = out.to(torch.float32)  # dtype (the computation's); only integer labels keep their dtype
        pixdim = pixdim_after(d.get(meta_key(key), {}).get("pixdim"), new_affine)
        update_meta(d, key, affine=torch.as_tensor(new_affine, dtype=torch.float64), pixdim=pixdim)
        mark_untraced(d, key, self)
        d[key] = out
        return in_shape, spacing, out_shape


class OrientSpacingd:
    """``Orientationd`` then ``Spacingd`` on the same keys in one pass: flips fold into the resample.

    Reorienting an MSD volume (stored L,P,S) to RAS flips two axes: a full copy of the volume that
    ``Spacingd`` then reads again. Here the flips only change the affine and the resample's source
    indices are mirrored, so the output is bit-identical to the two transforms run in turn, without
    the copy. Permutations and non-separable maps take the two-step path. Chains are fused by
    :func:`fuse_spatial`; this class is not meant to be built by hand.
    """

    def __init__(self, orientation: Orientationd, spacing: Spacingd) -> None:
        self.orientation, self.spacing = orientation, spacing

    def __call__(self, data: dict[Hashable, Any]) -> dict[Hashable, Any]:
        o, s = self.orientation, self.spacing
        d = dict(data)
        present = [o.keys[i] for i in present_keys(d, o.keys, o.allow_missing_keys, "Orientationd")]
        tensors_at(d, present, "Orientationd")
        check_same_grid(d, present, "Orientationd")
        flips = {key: o._orient(d, key, defer_flips=True) for key in present}
        present_s = present_keys(d, s.keys, s.allow_missing_keys, "Spacingd")
        tensors_at(d, [s.keys[i] for i in present_s], "Spacingd")
        check_same_grid(d, [s.keys[i] for i in present_s], "Spacingd")
        first = None
        for i in present_s:
            done = s._resample(d, i, flips.get(s.keys[i], ()), first)
            first = first or done
        return d

    def __repr__(self) -> str:
        return f"OrientSpacingd({self.orientation.keys}, axcodes={self.orientation.axcodes!r})"


def fuse_spatial(transforms: Sequence[Any]) -> list[Any]:
    """The chain to run: each ``Orientationd`` directly followed by a ``Spacingd`` on the same keys
    becomes one :class:`OrientSpacingd` (same outputs, one volume copy fewer)."""
    out: list[Any] = []
    for t in transforms:
        prev = out[-1] if out else None
        if (
            type(t) is Spacingd
            and type(prev) is Orientationd
            and list(prev.keys) == list(t.keys)
            and prev.allow_missing_keys == t.allow_missing_keys
        ):
            out[-1] = OrientSpacingd(prev, t)
        else:
            out.append(t)
    return out
