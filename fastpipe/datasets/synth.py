"""Look-alike MSD Task09 spleen data, written in the Medical Segmentation Decathlon layout.

``synthesize(out)`` writes ``imagesTr/spleen_N.nii.gz`` (int16 CT in HU), ``labelsTr/spleen_N.nii.gz``
(uint8, 1 = spleen), an empty ``imagesTs/`` and a ``dataset.json`` with MSD's fields, so
:func:`fastpipe.datasets.load_decathlon_datalist` and MONAI read it like the real download.
"""

from __future__ import annotations

import json
import operator
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import isal.igzip
import nibabel as nib
import numpy as np
from tqdm import tqdm

from fastpipe.datasets._phantom import PRESETS, VolumeParams, draw_params, render

__all__ = ["PRESETS", "synthesize", "volume_params", "write_nifti_gz"]

_NIFTI_OFFSET = 352  # 348-byte header + 4-byte empty extension flag


def write_nifti_gz(path: str | os.PathLike, zyx: np.ndarray, affine: np.ndarray, zooms) -> None:
    """Write a ``(Z, Y, X)`` C-order array as a single-file ``.nii.gz`` (gzip level 1 through isal).

    The array's memory order is NIfTI's on-disk order (x fastest), so no transpose copy is made;
    the gzip header holds time stamp 0 and the file's own name, so the same array gives the same bytes.

    Args:
        path: destination file.
        zyx: ``(Z, Y, X)`` C-contiguous array; the image's shape is ``(X, Y, Z)``.
        affine: 4x4 voxel-to-world (RAS mm) affine, stored as both sform and qform (code 1).
        zooms: voxel spacing ``(sx, sy, sz)`` in mm.
    """
    # the header is written in this machine's byte order, so the voxels must be too (a big-endian
    # array, e.g. one nibabel read from a big-endian file, would otherwise be stored byte-swapped)
    zyx = np.ascontiguousarray(zyx, dtype=zyx.dtype.newbyteorder("="))
    hdr = nib.Nifti1Header()
    hdr.set_data_dtype(zyx.dtype)
    hdr.set_data_shape(zyx.shape[::-1])
    hdr.set_zooms(tuple(float(z) for z in zooms))
    hdr.set_sform(affine, code=1)
    hdr.set_qform(affine, code=1)
    hdr.set_xyzt_units("mm", "sec")
    hdr.set_data_offset(_NIFTI_OFFSET)
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # renamed into place once whole
    try:
        # reproducible bytes: time stamp 0, and the header names the file (not the temporary, which holds a pid)
        with open(tmp, "wb") as raw, isal.igzip.IGzipFile(path.name, "wb", 1, fileobj=raw, mtime=0) as f:
            f.write(hdr.binaryblock)
            f.write(b"\x00" * (_NIFTI_OFFSET - len(hdr.binaryblock)))
            f.write(memoryview(zyx).cast("B"))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _write_pair(root: Path, name: str, image: np.ndarray, label: np.ndarray, params: VolumeParams) -> None:
    write_nifti_gz(root / "imagesTr" / name, image, params.affine(), params.spacing)
    write_nifti_gz(root / "labelsTr" / name, label, params.affine(), params.spacing)


def volume_params(preset: str, seed: int, index: int) -> VolumeParams:
    """The parameters of volume ``index`` of a preset: the same for a seed whatever the volume count."""
    return draw_params(_preset(preset), np.random.default_rng([seed, index]))


def _preset(name: str):
    if name not in PRESETS:
        raise ValueError(f"unknown synth preset {name!r}; expected one of {sorted(PRESETS)}")
    return PRESETS[name]


def _dataset_json(names: list[str], preset: str, seed: int) -> dict:
    """MSD Task09's ``dataset.json`` fields for the written volumes."""
    return {
        "name": "Spleen",
        "description": f"Synthetic look-alike of MSD Task09 Spleen (fastpipe synth, preset={preset}, seed={seed})",
        "reference": "fastpipe synthetic data; layout of the Medical Segmentation Decathlon",
        "licence": "CC-BY-SA 4.0",
        "release": "1.0",
        "tensorImageSize": "3D",
        "modality": {"0": "CT"},
        "labels": {"0": "background", "1": "spleen"},
        "numTraining": len(names),
        "numTest": 0,
        "training": [{"image": f"./imagesTr/{n}", "label": f"./labelsTr/{n}"} for n in names],
        "test": [],
    }


def _volume_count(preset: str, seed: int, num_volumes: int | None) -> int:
    """How many volumes to write (default the preset's); ValueError for a bad preset, count or seed."""
    p = _preset(preset)
    count = p.num_volumes if num_volumes is None else int(num_volumes)
    if count < 1:
        raise ValueError(f"num_volumes must be >= 1, got {num_volumes}")
    try:  # checked before the folder is touched: numpy refuses it only after dataset.json is gone
        seed = operator.index(seed)
    except TypeError:
        raise TypeError(f"seed must be an int >= 0, got {seed!r}") from None
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    return count


def _refuse_real_data(root: Path) -> None:
    """``FileExistsError`` when ``root`` holds a ``dataset.json`` that :func:`synthesize` did not write."""
    path = root / "dataset.json"
    if not path.is_file():
        return
    try:
        description = json.loads(path.read_text(encoding="utf-8")).get("description", "")
    except (ValueError, AttributeError):  # not JSON, not UTF-8, not an object
        description = None
    if not (isinstance(description, str) and "(fastpipe synth, " in description):
        raise FileExistsError(
            f"{path} was not written by fastpipe synth (description {description!r}); writing look-alike "
            "data there would overwrite that dataset's volumes: choose another folder, or delete that "
            "dataset.json first"
        )


def _write_volumes(root: Path, preset: str, seed: int, names: list[str], progress: bool) -> None:
    """Render and write volume ``i`` of ``preset`` as ``names[i]`` under ``root``, for every name."""
    p = _preset(preset)
    # One writer thread compresses volume i while volume i + 1 renders (numpy and isal release the GIL).
    # At most one volume waits for it; result() re-raises a writer error here.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="fastpipe-synth-writer") as writer:
        pending = None
        for index in tqdm(range(len(names)), desc=f"synth {preset}", unit="vol", disable=not progress):
            rng = np.random.default_rng([seed, index])
            params = draw_params(p, rng)
            image, label = render(params, rng)
            if pending is not None:
                pending.result()
            pending = writer.submit(_write_pair, root, names[index], image, label, params)
        pending.result()


def synthesize(
    out: str | os.PathLike,
    preset: str = "spleen-small",
    seed: int = 0,
    progress: bool = True,
    num_volumes: int | None = None,
) -> Path:
    """Write look-alike MSD spleen data to ``out`` and return ``out`` as a ``Path``.

    Volume ``i`` depends only on ``(preset, seed, i)``: the same seed gives the same files, and
    ``num_volumes`` takes a prefix of the preset's volumes (or extends it).

    Args:
        out: destination folder, created if missing; what an earlier ``synthesize`` wrote there is replaced,
            a folder with another ``dataset.json`` (a real download) refused with ``FileExistsError``.
        preset: ``"spleen-full"`` (41 volumes of 512x512x31..168 drawn from Task09's published
            fingerprint, see docs/spleen-data.md), ``"spleen-train"`` (24 volumes of 192x192x78..102
            at 1 mm, the CPU training preset), ``"spleen-small"`` (8 volumes of 224x224x80..100, for CI; at least 96 voxels per axis
            after the spleen chain's Spacingd + CropForegroundd), or ``"spleen-tiny"`` (4 volumes of
            96x96x~40, for unit tests). Default ``"spleen-small"``.
        seed: random seed. Default 0.
        progress: show a tqdm progress bar. Default True.
        num_volumes: number of volumes; default the preset's.

    Example:
        >>> from fastpipe.datasets import load_decathlon_datalist, synthesize
        >>> data = load_decathlon_datalist(synthesize("/tmp/spleen", "spleen-tiny", progress=False))
    """
    count = _volume_count(preset, seed, num_volumes)
    root = Path(out).expanduser()
    _refuse_real_data(root)
    for sub in ("imagesTr", "labelsTr", "imagesTs"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    # dataset.json goes first and comes back last: a run stopped half way leaves a folder without one,
    # never one whose dataset.json describes files of another seed or count
    (root / "dataset.json").unlink(missing_ok=True)
    names = [f"spleen_{index + 1}.nii.gz" for index in range(count)]
    _write_volumes(root, preset, seed, names, progress)
    tmp = root / f".dataset.json.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(_dataset_json(names, preset, seed), indent=4) + "\n")
    os.replace(tmp, root / "dataset.json")
    return root
