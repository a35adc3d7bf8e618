"""Affine arithmetic behind ``Orientationd`` and ``Spacingd``, following MONAI 1.6's conventions.

``spacing_geometry`` reproduces ``monai.transforms.Spacing`` (``zoom_affine`` with
``diagonal=False``, then ``compute_shape_offset`` with ``scale_extent=False``): the output keeps
the input's rotation and axis directions, takes the requested spacing, and starts at the input's
first corner, so output shapes and affines equal MONAI's. Only numpy float64 is used here.
"""

from __future__ import annotations

import nibabel as nib
import numpy as np

#: Tolerance MONAI uses to decide that two affines are the same (millimetres / voxels).
AFFINE_TOL = 1e-3


def affine_spacing(affine: np.ndarray) -> np.ndarray:
    """Voxel spacing of a 4x4 affine: the 3x3 column norms (zeros become 1, as MONAI does)."""
    sp = np.sqrt((np.asarray(affine, dtype=np.float64)[:3, :3] ** 2).sum(axis=0))
    sp[sp == 0] = 1.0
    return sp


#: The world axes' direction codes: each target orientation names one letter of each pair.
_AXIS_PAIRS = ("LR", "PA", "IS")


def check_axcodes(axcodes: str) -> str:
    """``axcodes`` if it names each world axis once (``"RAS"``, ``"LPS"``, ``"PLI"``...), else ``ValueError``.

    nibabel turns a code naming one axis twice (``"SIL"``: S and I) into a singular affine without a
    word, and every later spatial transform would then resample garbage.
    """
    codes = str(axcodes)
    pairs = [next((p for p in _AXIS_PAIRS if c in p), None) for c in codes]
    if len(codes) != 3 or None in pairs or len(set(pairs)) != 3:
        raise ValueError(
            f"Orientationd: axcodes={axcodes!r} must be 3 letters naming each world axis once, one of "
            f"L/R, one of P/A and one of I/S (e.g. 'RAS', 'LPS')"
        )
    return codes


def orientation_transform(affine: np.ndarray, axcodes: str) -> np.ndarray:
    """nibabel ``ornt`` array (per input axis: output axis, flip) taking ``affine`` to ``axcodes``."""
    src = nib.io_orientation(np.asarray(affine, dtype=np.float64))
    dst = nib.orientations.axcodes2ornt(axcodes)
    return nib.orientations.ornt_transform(src, dst)


#: MONAI's ``AFFINE_TOL``: an input spacing this close to the target is kept as it is (no resampling).
AFFINE_TOL = 1e-3


def target_pixdim(affine: np.ndarray, pixdim: np.ndarray) -> np.ndarray:
    """The 3 output spacings, as MONAI's ``Spacing``: ``pixdim`` padded with its last value; an entry
    that is non-positive, or within :data:`AFFINE_TOL` of the input's spacing, keeps the input's."""
    out = np.asarray(pixdim, dtype=np.float64).ravel()[:3].copy()
    if out.size == 0:
        raise ValueError("Spacingd: pixdim is empty")
    if out.size < 3:
        out = np.append(out, [out[-1]] * (3 - out.size))
    orig = affine_spacing(affine)
    return np.where((out <= 0) | (np.abs(orig - out) <= AFFINE_TOL), orig, out)


def zoom_affine(affine: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """MONAI ``zoom_affine(diagonal=False)``: keep the rotation of ``affine``, set the zooms to ``scale``."""
    rzs = np.asarray(affine, dtype=np.float64)[:3, :3]
    zs = np.linalg.cholesky(rzs.T @ rzs).T
    rotation = rzs @ np.linalg.inv(zs)
    s = np.sign(np.diag(zs)) * np.abs(scale)
    new = np.eye(4)
    new[:3, :3] = rotation @ np.diag(s)
    return new


def shape_offset(
    shape: tuple[int, ...], in_affine: np.ndarray, out_affine: np.ndarray
) -> tuple[tuple, np.ndarray]:
    """MONAI ``compute_shape_offset(scale_extent=False)``: output shape covering the input, and its origin."""
    shp = np.asarray(shape, dtype=np.float64)
    coords = [(0.0, d - 1.0) for d in shp]
    corners = np.asarray(np.meshgrid(*coords, indexing="ij")).reshape((3, -1))
    corners = np.concatenate((corners, np.ones_like(corners[:1])))
    try:
        corners_out = np.linalg.solve(out_affine, in_affine) @ corners
    except np.linalg.LinAlgError as err:
        raise ValueError(f"Spacingd: output affine {out_affine.tolist()} is not invertible") from err
    corners_world = in_affine @ corners
    all_dist = corners_out[:-1].copy()
    corners_out = corners_out[:-1] / corners_out[-1]
    out_shape = np.round(np.ptp(corners_out, axis=1) + 1.0)
    offset = None
    for i in range(corners_world.shape[1]):
        min_corner = np.min(all_dist - all_dist[:, i : i + 1], 1)
        if np.allclose(min_corner, 0.0, rtol=AFFINE_TOL):
            offset = corners_world[:-1, i]
            break
    if offset is None:  # centre-align, as MONAI does when no corner is the minimum
        offset = (
            in_affine[:-1, :-1] @ (shp / 2.0) + in_affine[:-1, -1] - out_affine[:-1, :-1] @ (out_shape / 2.0)
        )
    return tuple(int(s) for s in out_shape), offset


def spacing_geometry(
    affine: np.ndarray, shape: tuple[int, ...], pixdim: np.ndarray, diagonal: bool = False
) -> tuple[np.ndarray, tuple[int, ...], np.ndarray]:
    """Output affine, output shape and voxel map (output index -> input index) of ``Spacingd``."""
    affine = np.asarray(affine, dtype=np.float64)
    scale = target_pixdim(affine, pixdim)
    new_affine = np.diag([*scale, 1.0]) if diagonal else zoom_affine(affine, scale)
    out_shape, offset = shape_offset(shape, affine, new_affine)
    new_affine[:3, 3] = offset[:3]
    try:
        xform = np.linalg.solve(affine, new_affine)
    except np.linalg.LinAlgError as err:
        raise ValueError(f"Spacingd: input affine {affine.tolist()} is not invertible") from err
    return new_affine, out_shape, xform


def is_separable(xform: np.ndarray, in_shape: tuple[int, ...], tol: float = 1e-6) -> bool:
    """Whether the voxel map is axis-aligned (no shear/rotation), so resampling separates by axis."""
    lin = np.asarray(xform)[:3, :3]
    off = lin - np.diag(np.diag(lin))
    return bool(np.abs(off).max() * max(in_shape) < tol)
