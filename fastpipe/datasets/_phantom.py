"""Look-alike abdominal CT phantoms: per-volume parameters drawn from a seed, rendered with numpy.

Machinery for :mod:`fastpipe.datasets.synth`. A volume is built in ``(Z, Y, X)`` C order, which is
the NIfTI on-disk order (x fastest), so it is written without a transpose copy.

World coordinates are RAS millimetres. The stored affine is MSD-like,
``diag(-sx, -sy, sz)`` plus an origin, so voxel ``i`` grows toward the patient's left and ``j``
toward posterior. Anatomy lives in body-normalised coordinates ``(u, v)`` (``u`` toward the patient's
right, ``v`` anterior, the inner body ellipse is the unit circle): fat rim, soft tissue with a smooth
texture, liver, kidneys, aorta, a spine with discs, lung bases, and a spleen (a smooth deformed
ellipsoid with a hilum dent, left posterior) that is also the label.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from fastpipe.datasets._anatomy import body_slice, slice_keys, smooth_field_2d

HU_MIN, HU_MAX = -1024, 3071


@dataclass(frozen=True)
class PhantomPreset:
    """Ranges the per-volume parameters are drawn from.

    Args:
        num_volumes: default number of volumes.
        shape_xy: in-plane size (square).
        z_range: inclusive range of slice counts.
        spacing_xy: range of the in-plane spacing (mm).
        slice_mm: slice thicknesses to choose from (mm).
        extent_mm: range of the physical z length; ``None`` draws the slice count from ``z_range``.
        body_semi_mm: ranges of the outer body semi-axes (x, y) in mm, clipped to the field of view.
        fat_mm: range of the subcutaneous fat thickness (mm).
        spleen_scale: linear scale of the spleen (1.0: adult, about 100-300 cm3).
        noise_hu: standard deviation of the voxel noise (HU).
        slice_weights: probabilities of ``slice_mm`` (default ``None``: all equally likely).
        spleen_hu: range of the spleen's mean HU (default ``(45, 55)``).
    """

    num_volumes: int
    shape_xy: int
    z_range: tuple[int, int]
    spacing_xy: tuple[float, float]
    slice_mm: tuple[float, ...]
    extent_mm: tuple[float, float] | None
    body_semi_mm: tuple[tuple[float, float], tuple[float, float]]
    fat_mm: tuple[float, float]
    spleen_scale: float
    noise_hu: float
    slice_weights: tuple[float, ...] | None = None
    spleen_hu: tuple[float, float] = (45.0, 55.0)


PRESETS: dict[str, PhantomPreset] = {
    # MSD Task09 (docs/spleen-data.md): 41 volumes, 512x512x31..168, 0.6-0.98 mm in plane, 1.5-8 mm
    # slices, most at 5 mm; median about 90 slices at 5 mm, so a z extent of about 450 mm.
    "spleen-full": PhantomPreset(
        41, 512, (31, 168), (0.6, 0.98), (1.5, 2.5, 3.0, 5.0, 8.0), (320.0, 530.0),
        ((140.0, 175.0), (105.0, 130.0)), (8.0, 20.0), 1.0, 12.0, (0.1, 0.1, 0.1, 0.6, 0.1),
    ),
    # CI-sized: stays >= 96 voxels per axis after Spacingd(1.5, 1.5, 2.0) + CropForegroundd.
    "spleen-small": PhantomPreset(
        8, 224, (80, 100), (0.9, 1.0), (2.5,), None, ((100.0, 108.0), (90.0, 97.0)), (5.0, 8.0), 0.8, 10.0
    ),
    # CPU training (make bench-train): 192x192 at 1 mm, 2 mm slices, resampled to 3 mm by its chain
    # (a loader decodes and resamples ~14x the voxels it keeps, as for Task09 at 1.5 mm), and a
    # contrast-enhanced spleen (~110 HU, as in a portal-venous scan).
    "spleen-train": PhantomPreset(
        24, 192, (78, 102), (0.97, 1.03), (2.0,), None, ((82.0, 88.0), (72.0, 78.0)), (5.0, 7.0), 0.9, 10.0,
        None, (100.0, 120.0),
    ),
    # Unit-test sized; smaller than a 96^3 crop after the spleen chain.
    "spleen-tiny": PhantomPreset(
        4, 96, (36, 44), (1.9, 2.1), (4.0,), None, ((82.0, 88.0), (72.0, 78.0)), (5.0, 7.0), 0.7, 10.0
    ),
}  # fmt: skip


@dataclass
class VolumeParams:
    """Everything needed to render one volume (all lengths in mm, world RAS)."""

    shape: tuple[int, int, int]  # (X, Y, Z)
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    body_centre: tuple[float, float]
    inner_semi: tuple[float, float]
    fat: float
    spleen_centre: np.ndarray
    spleen_semi: np.ndarray
    spleen_rot: np.ndarray  # columns: world directions of the local axes
    spleen_coef: np.ndarray
    spleen_hu: float
    anatomy: dict = field(default_factory=dict)

    def affine(self) -> np.ndarray:
        """The stored voxel-to-world affine, ``diag(-sx, -sy, sz)`` plus the origin."""
        aff = np.diag([-self.spacing[0], -self.spacing[1], self.spacing[2], 1.0])
        aff[:3, 3] = self.origin
        return aff

    def world_axes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """World coordinates (mm) of the voxel centres along each array axis (x, y, z)."""
        (nx, ny, nz), (sx, sy, sz), (ox, oy, oz) = self.shape, self.spacing, self.origin
        return ox - sx * np.arange(nx), oy - sy * np.arange(ny), oz + sz * np.arange(nz)


def _rotation(rng: np.random.Generator) -> np.ndarray:
    """Spleen orientation: long axis cranio-caudal, tilted anteriorly and laterally."""
    a, b, g = np.deg2rad([rng.uniform(25, 50), rng.uniform(-20, 20), rng.uniform(-30, 30)])
    rx = np.array([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]])
    ry = np.array([[math.cos(b), 0, math.sin(b)], [0, 1, 0], [-math.sin(b), 0, math.cos(b)]])
    rz = np.array([[math.cos(g), -math.sin(g), 0], [math.sin(g), math.cos(g), 0], [0, 0, 1]])
    base = np.array([[0.0, 0, 1], [0, 1, 0], [1, 0, 0]])  # local (long, width, thickness) -> (z, y, x)
    return rz @ ry @ rx @ base


def _draw_geometry(p: PhantomPreset, rng: np.random.Generator) -> dict:
    """Shape, spacing, origin and body ellipse of one volume."""
    sxy = float(rng.uniform(*p.spacing_xy))
    sz = float(rng.choice(p.slice_mm, p=p.slice_weights))
    if p.extent_mm is None:
        nz = int(rng.integers(p.z_range[0], p.z_range[1] + 1))
    else:
        nz = int(np.clip(round(rng.uniform(*p.extent_mm) / sz), *p.z_range))
    fov = p.shape_xy * sxy
    outer = [min(float(rng.uniform(*r)), 0.48 * fov) for r in p.body_semi_mm]
    fat = float(rng.uniform(*p.fat_mm))
    centre = (float(rng.uniform(-0.03, 0.03) * fov), float(rng.uniform(-0.03, 0.03) * fov))
    origin = (sxy * (p.shape_xy - 1) / 2, sxy * (p.shape_xy - 1) / 2, -float(rng.uniform(250, 600)))
    return dict(shape=(p.shape_xy, p.shape_xy, nz), spacing=(sxy, sxy, sz), origin=origin,
                body_centre=centre, inner_semi=(outer[0] - fat, outer[1] - fat), fat=fat)  # fmt: skip


def _surface_offsets(semi: np.ndarray, rot: np.ndarray) -> np.ndarray:
    """World (x, y, z) offsets of points on the spleen's ellipsoid, inflated for the deformation."""
    ang = np.linspace(0, np.pi, 9)[:, None], np.linspace(0, 2 * np.pi, 16, endpoint=False)[None, :]
    sphere = np.stack(
        [
            np.sin(ang[0]) * np.cos(ang[1]),
            np.sin(ang[0]) * np.sin(ang[1]),
            np.broadcast_to(np.cos(ang[0]), (9, 16)),
        ]
    )
    return rot @ (sphere.reshape(3, -1) * (semi * 1.2)[:, None])


def _place_spleen(geo: dict, semi: np.ndarray, rot: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A spleen centre, left and posterior, as lateral as the inner body (at its narrowest) allows."""
    pts = _surface_offsets(semi, rot)
    ix, iy = geo["inner_semi"]
    lim = 0.88 * 0.95  # the body's smallest scale along z, with a margin
    phi = np.deg2rad(rng.uniform(15, 40))
    direction = np.array([-np.cos(phi), -np.sin(phi)])  # patient left (-u), posterior (-v)
    for rho in np.arange(0.9, 0.0, -0.02):  # move inward until every surface point is inside
        cu, cv = rho * direction
        if np.all(((cu * ix + pts[0]) / ix) ** 2 + ((cv * iy + pts[1]) / iy) ** 2 < lim**2):
            break
    else:
        cu, cv = 0.0, 0.0
    ext_z = np.abs(pts[2]).max()
    length = geo["shape"][2] * geo["spacing"][2]
    zc = float(np.clip(rng.uniform(0.55, 0.7) * length, ext_z + 2, max(ext_z + 2, length - ext_z - 2)))
    cx, cy = geo["body_centre"]
    return np.array([cx + cu * ix, cy + cv * iy, geo["origin"][2] + zc])


def draw_params(preset: PhantomPreset, rng: np.random.Generator) -> VolumeParams:
    """Draw the parameters of one volume from ``rng`` (deterministic for a given generator state)."""
    geo = _draw_geometry(preset, rng)
    semi = np.array([rng.uniform(45, 60), rng.uniform(28, 38), rng.uniform(22, 30)]) * preset.spleen_scale
    rot = _rotation(rng)
    coef = np.clip(rng.normal(0.0, 0.06, size=9), -0.12, 0.12)
    centre = _place_spleen(geo, semi, rot, rng)
    anatomy = dict(
        period=float(rng.uniform(28, 34)), phase=float(rng.uniform(0, 30)),
        lung_start=float(rng.uniform(0.8, 0.9)), liver_hu=float(rng.uniform(55, 65)),
        tissue_hu=float(rng.uniform(35, 45)), noise_hu=preset.noise_hu, texture=rng.normal(0.0, 8.0, size=(8, 8)),
    )  # fmt: skip
    return VolumeParams(**geo, spleen_centre=centre, spleen_semi=semi, spleen_rot=rot, spleen_coef=coef,
                        spleen_hu=float(rng.uniform(*preset.spleen_hu)), anatomy=anatomy)  # fmt: skip


def _index_range(coords: np.ndarray, lo: float, hi: float) -> slice:
    """The index slice of a monotonic coordinate axis that covers ``[lo, hi]``."""
    inside = np.nonzero((coords >= lo) & (coords <= hi))[0]
    return slice(int(inside[0]), int(inside[-1]) + 1) if inside.size else slice(0, 0)


def spleen_mask(params: VolumeParams) -> tuple[tuple[slice, slice, slice], np.ndarray]:
    """The spleen inside its bounding box: ``((zs, ys, xs), mask)`` with ``mask`` shaped ``(Z, Y, X)``."""
    xs, ys, zs = params.world_axes()
    c, semi, rot = params.spleen_centre, params.spleen_semi, params.spleen_rot
    ext = np.sqrt((rot**2) @ (semi * 1.3) ** 2)
    box = tuple(_index_range(a, c[n] - ext[n], c[n] + ext[n]) for n, a in enumerate((xs, ys, zs)))
    dx = (xs[box[0]] - c[0]).astype(np.float32)[None, None, :]
    dy = (ys[box[1]] - c[1]).astype(np.float32)[None, :, None]
    dz = (zs[box[2]] - c[2]).astype(np.float32)[:, None, None]
    q = [(rot[0, m] * dx + rot[1, m] * dy + rot[2, m] * dz) / np.float32(semi[m]) for m in range(3)]
    r = np.sqrt(q[0] ** 2 + q[1] ** 2 + q[2] ** 2) + np.float32(1e-6)
    du, dv, dw = (qm / r for qm in q)
    polys = (du * dv, dv * dw, du * dw, du**2 - dv**2, dv**2 - dw**2, du, dv, dw, du * dv * dw)
    shape_fn = 1.0 + sum(np.float32(k) * p for k, p in zip(params.spleen_coef, polys, strict=True))
    shape_fn -= 0.25 * np.exp(-((dv - 1.0) ** 2 + du**2 + dw**2) / 0.15)  # the hilum: a medial dent
    return (box[2], box[1], box[0]), r < shape_fn


def render(params: VolumeParams, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Render ``(image, label)`` as ``(Z, Y, X)`` arrays: int16 HU and uint8 {0, 1}."""
    xs, ys, zs = params.world_axes()
    (cx, cy), (ix, iy) = params.body_centre, params.inner_semi
    u = ((xs - cx) / ix).astype(np.float32)[None, :]  # RAS: +x, so +u, is the patient's right
    v = ((ys - cy) / iy).astype(np.float32)[:, None]  # anterior is +v
    tex = smooth_field_2d(params.anatomy["texture"], len(ys), len(xs))
    keys, index = slice_keys(zs, params.anatomy)
    bases: dict = {}
    templates = np.stack([body_slice(u, v, tex, k, params, bases) for k in keys])
    image = templates[index]  # (Z, Y, X) gather of the distinct slices
    label = np.zeros(image.shape, np.uint8)
    box, mask = spleen_mask(params)
    label[box] = mask
    region = image[box]
    region[mask] = np.int16(round(params.spleen_hu))
    _add_noise(image, params.anatomy["noise_hu"], rng)
    return image, label


def _add_noise(image: np.ndarray, sigma: float, rng: np.random.Generator) -> None:
    """Add Gaussian voxel noise in place from one table (a random window of it per slice), then clip."""
    n = image.shape[1] * image.shape[2]
    table = np.round(rng.standard_normal(n + 65536, dtype=np.float32) * sigma).astype(np.int16)
    offsets = rng.integers(0, 65536, size=image.shape[0])
    for k, off in enumerate(offsets):
        image[k] += table[off : off + n].reshape(image.shape[1:])
    np.clip(image, HU_MIN, HU_MAX, out=image)
