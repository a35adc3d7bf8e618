"""Tiny NIfTI files for the transform tests: CT-like phantoms, labels, affines (RAS, LPS, oblique)."""

from __future__ import annotations

import math
from pathlib import Path

import nibabel as nib
import numpy as np

KEYS = ["image", "label"]


def write(path: Path, data: np.ndarray, affine: np.ndarray, **header) -> str:
    """Save ``data`` (X, Y, Z[, ...]) with ``affine`` via nibabel; ``header`` sets e.g. scl_slope."""
    img = nib.Nifti1Image(data, affine)
    for k, v in header.items():
        img.header[k] = v
    nib.save(img, str(path))
    return str(path)


def affine(
    spacing=(1.0, 1.0, 2.0), codes: str = "RAS", angle_deg: float = 0.0, shear: float = 0.0
) -> np.ndarray:
    """A voxel-to-world affine: ``spacing``, axis directions of ``codes`` (RAS/LPS), rotation about z, shear."""
    sign = np.array([1.0 if c in "RAS" else -1.0 for c in codes])
    lin = np.diag(sign * np.asarray(spacing, dtype=np.float64))
    a = math.radians(angle_deg)
    rot = np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]])
    lin = rot @ lin
    lin[0, 1] += shear * spacing[1]
    aff = np.eye(4)
    aff[:3, :3] = lin
    aff[:3, 3] = [-40.0, 35.0, -20.0]
    return aff


def phantom(shape=(64, 56, 24), seed: int = 0, label_dtype=np.uint8) -> tuple[np.ndarray, np.ndarray]:
    """An int16 HU body ellipse with noise, an organ brighter than the window floor, and its label."""
    rng = np.random.default_rng(seed)
    x, y, z = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    image = np.full(shape, -1000, np.int16)
    body = (x / 0.8) ** 2 + (y / 0.7) ** 2 < 1
    image[body] = 30
    organ = ((x - 0.3) / 0.3) ** 2 + ((y + 0.1) / 0.25) ** 2 + (z / 0.6) ** 2 < 1
    image[organ] = 120
    image += rng.normal(0, 25, shape).astype(np.int16)
    return image, organ.astype(label_dtype)


def write_pair(
    tmp: Path, aff: np.ndarray, ext: str = ".nii.gz", shape=(64, 56, 24), label_dtype=np.uint8, seed=0
):
    """Write image + label with ``aff``; return the data item."""
    image, label = phantom(shape, seed, label_dtype)
    return {
        "image": write(tmp / f"img{seed}{ext}", image, aff),
        "label": write(tmp / f"lab{seed}{ext}", label, aff),
    }
