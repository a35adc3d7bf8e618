"""Axial slices of the look-alike abdomen, in body-normalised coordinates.

Machinery for :mod:`fastpipe.datasets._phantom`. Neighbouring slices mostly differ only by a few
slowly varying levels (body scale, liver, kidney and lung extents, vertebra or disc), so every
slice is described by a small integer key and each distinct key is rendered once in 2-D.
"""

from __future__ import annotations

from typing import Any

import numpy as np

SliceKey = tuple[int, int, int, int, int]


def smooth_field_2d(grid: np.ndarray, ny: int, nx: int) -> np.ndarray:
    """Bilinearly upsample a small ``(gy, gx)`` grid to ``(ny, nx)`` float32 (a smooth texture)."""

    def interp_matrix(n: int, g: int) -> np.ndarray:
        pos = np.linspace(0.0, g - 1.0, n)
        return np.stack([np.interp(pos, np.arange(g), e) for e in np.eye(g)], axis=1)

    field = interp_matrix(ny, grid.shape[0]) @ grid @ interp_matrix(nx, grid.shape[1]).T
    return field.astype(np.float32)


def _profile(t: np.ndarray, centre: float, half_width: float) -> np.ndarray:
    """A smooth bump in ``[0, 1]``: 1 at ``centre``, 0 beyond ``half_width``."""
    return np.sqrt(np.clip(1.0 - ((t - centre) / half_width) ** 2, 0.0, 1.0))


def slice_keys(zs: np.ndarray, anatomy: dict[str, Any]) -> tuple[list[SliceKey], np.ndarray]:
    """The distinct slice keys of a volume and, per slice, the index of its key.

    Args:
        zs: world z (mm) of each slice, inferior to superior.
        anatomy: per-volume constants (``period``, ``phase``, ``lung_start``).
    """
    length = max(float(zs[-1] - zs[0]), 1e-6)
    t = (zs - zs[0]) / length
    scale = np.clip(1.0 - 0.12 * (2.0 * (t - 0.55)) ** 2, 0.88, 1.0)
    lung_start = anatomy["lung_start"]
    levels = np.stack(
        [
            np.round(scale * 100),
            np.round(_profile(t, 0.8, 0.45) * 10),  # liver
            np.round(_profile(t, 0.4, 0.2) * 10),  # kidneys
            np.round(np.clip((t - lung_start) / (1.0 - lung_start), 0.0, 1.0) * 10),  # lung bases
            ((zs - zs[0] + anatomy["phase"]) % anatomy["period"]) < 5.0,  # intervertebral disc
        ],
        axis=1,
    ).astype(np.int64)
    keys, index = np.unique(levels, axis=0, return_inverse=True)
    return [tuple(int(v) for v in k) for k in keys], index.reshape(-1)


def _paint(out: np.ndarray, us: np.ndarray, vs: np.ndarray, tex: np.ndarray, ellipse, value: float,
           tex_gain: float = 0.0, below: float = 1.0) -> None:  # fmt: skip
    """Set ``value (+ tex_gain * tex)`` inside an axis-aligned ellipse ``(cu, cv, au, av)``, in its window only."""
    cu, cv, au, av = ellipse
    cols = np.nonzero(np.abs(us[0] - cu) < au)[0]
    rows = np.nonzero(np.abs(vs[:, 0] - cv) < av)[0]
    if cols.size == 0 or rows.size == 0:
        return
    win = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    inside = ((us[:, win[1]] - cu) / au) ** 2 + ((vs[win[0], :] - cv) / av) ** 2 < below
    if tex_gain:
        np.copyto(out[win], value + tex_gain * tex[win], where=inside)
    else:
        out[win][inside] = value


def _base(us: np.ndarray, vs: np.ndarray, tex: np.ndarray, params: Any) -> np.ndarray:
    """Air, the subcutaneous fat rim and textured soft tissue, float32 ``(Y, X)``."""
    ix, iy = params.inner_semi
    out = np.full(tex.shape, -1000.0, np.float32)
    _paint(out, us, vs, tex, (0.0, 0.0, 1 + params.fat / ix, 1 + params.fat / iy), -100.0)
    _paint(out, us, vs, tex, (0.0, 0.0, 1.0, 1.0), params.anatomy["tissue_hu"], tex_gain=1.0)
    return out


def body_slice(
    u: np.ndarray, v: np.ndarray, tex: np.ndarray, key: SliceKey, params: Any, bases: dict
) -> np.ndarray:
    """One axial slice in HU, int16 ``(Y, X)``.

    Args:
        u: ``(1, X)`` body-normalised coordinate toward the patient's right.
        v: ``(Y, 1)`` body-normalised coordinate toward anterior.
        tex: ``(Y, X)`` smooth texture (HU).
        key: the slice's levels from :func:`slice_keys`.
        params: the volume's ``VolumeParams`` (inner body semi-axes, fat, anatomy constants).
        bases: cache of the body without organs per body scale, filled here; one dict per volume.
    """
    scale, liver, kidney, lung, disc = key[0] / 100, key[1] / 10, key[2] / 10, key[3] / 10, bool(key[4])
    r = params.inner_semi[1] / params.inner_semi[0]  # turns a circle in mm into an ellipse in (u, v)
    a = params.anatomy
    us, vs = u / np.float32(scale), v / np.float32(scale)
    if key[0] not in bases:
        bases[key[0]] = _base(us, vs, tex, params)
    out = bases[key[0]].copy()
    if liver > 0:
        _paint(out, us, vs, tex, (0.4, 0.15, 0.55 * liver, 0.6 * liver), a["liver_hu"], tex_gain=0.3)
    for side in (-1, 1):
        if kidney > 0:
            _paint(out, us, vs, tex, (side * 0.42, -0.42, 0.13 * kidney, 0.2 * kidney), 30.0)
        if lung > 0:
            _paint(out, us, vs, tex, (side * 0.45, -0.05, 0.33 * lung, 0.5 * lung), -850.0, tex_gain=1.0)
    _paint(out, us, vs, tex, (0.0, -0.28, 0.06 * r, 0.06), 45.0)  # aorta
    vertebra = (0.0, -0.55, 0.15 * r, 0.15)
    if disc:
        _paint(out, us, vs, tex, vertebra, 90.0)
    else:
        _paint(out, us, vs, tex, vertebra, 700.0)  # cortical bone
        _paint(out, us, vs, tex, vertebra, 250.0, below=0.55)  # cancellous bone
        _paint(out, us, vs, tex, (0.0, -0.82, 0.04 * r, 0.12), 700.0)  # spinous process
    return np.round(out).astype(np.int16)
