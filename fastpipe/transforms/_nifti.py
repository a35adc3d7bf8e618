"""NIfTI-1/2 reading: a checked header, then isal decodes gzip straight into one buffer.

The voxel data is never copied after decoding: ``np.frombuffer`` views the decoded buffer in the
file's Fortran order (x fastest), so ``read_nifti`` costs one gzip decode (or one ``readinto`` for
``.nii``) plus, only where the header asks for it, the ``scl_slope``/``scl_inter`` scaling.

Nothing is trusted before it is checked: the header fields (``_nifti_header``) before anything is
allocated from them, the declared size against what the file can hold, every gzip member's CRC32
and size (``_gzip``), and the voxels for NaN and infinity. Every error names the file and the problem.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from typing import BinaryIO

import nibabel as nib
import numpy as np

from fastpipe.transforms._gzip import CHUNK, MAGIC, MAX_RATIO, GzipReader, isize_hint
from fastpipe.transforms._nifti_header import (
    Layout,
    best_affine,
    check_extensions,
    data_layout,
    parse_header,
    slope_inter,
)

_HEAD = 548  # enough decoded bytes for a NIfTI-2 header, the extension flag and the first extension's esize
_SCALE_SLAB = 1 << 20  # voxels scaled in float64 at a time


class DirectoryError(IsADirectoryError, ValueError):
    """A directory where a NIfTI file was expected.

    Both an ``IsADirectoryError`` and a ``ValueError`` (as ``io.UnsupportedOperation`` is both an
    ``OSError`` and a ``ValueError``), so ``except ValueError`` catches it like any other bad file.
    """


@dataclass
class NiftiVolume:
    """A decoded NIfTI volume.

    Attributes:
        array: voxel data, ``(X, Y, Z)`` in the file's Fortran order (a view of the decoded buffer).
        affine: ``float64`` 4x4 voxel -> world (RAS mm), nibabel's ``get_best_affine()``.
        header: the nibabel header.
        path: the file the volume came from.
    """

    array: np.ndarray
    affine: np.ndarray
    header: nib.Nifti1Header
    path: str


@dataclass
class _Header:
    """A header whose fields were all checked, and what was derived from them."""

    hdr: nib.Nifti1Header
    layout: Layout
    affine: np.ndarray
    scaling: tuple[float, float] | None


def read_nifti(
    path: str | os.PathLike, check_nan: bool = True, scaled_dtype: np.dtype | type = np.float32
) -> NiftiVolume:
    """Read a 3D ``.nii`` or ``.nii.gz`` volume (gzip is detected from the bytes, not the name).

    A ``.nii.gz`` is decoded to the end of every gzip member and each member's CRC32 and size are
    verified, so a damaged file is an error, never wrong voxels. Several members back to back are
    read as one stream; zero bytes after the last member are padding; any other trailing bytes are
    an error, and so is decoded data past what the header declares (a header that does not describe
    its data). Header dims are checked before anything is allocated: against the file's size for
    ``.nii``, and for ``.nii.gz`` against the most a gzip file of that size can decode to
    (deflate expands at most 1032-fold); the declared size is allocated up front only when the last
    gzip trailer's size field agrees with it, otherwise the buffer grows as decoded bytes arrive.

    Args:
        path: the file.
        check_nan: raise ``ValueError`` when a floating-point volume (after scaling) holds NaN or
            ``±inf`` voxels (default True).
        scaled_dtype: dtype of a volume with ``scl_slope``/``scl_inter`` scaling (default ``float32``,
            MONAI's default dtype; ``float64`` is nibabel's own result, what MONAI's ``dtype=None`` keeps).

    Raises:
        FileNotFoundError: the file does not exist.
        IsADirectoryError: the path is a directory (a ``DirectoryError``, also a ``ValueError``).
        ValueError: empty, truncated or corrupt file (gzip CRC, trailing garbage), not NIfTI,
            invalid header field (named in the message), not 3D, non-finite voxels.

    Example:
        >>> vol = read_nifti("imagesTr/spleen_2.nii.gz")  # doctest: +SKIP
        >>> vol.array.shape, vol.array.dtype  # doctest: +SKIP
        ((512, 512, 90), dtype('int16'))
    """
    path = os.fspath(path)
    with _open_regular(path) as f:
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            raise ValueError(f"{path}: empty file (0 bytes), not a NIfTI file")
        gz = f.read(2) == MAGIC
        f.seek(0)
        buf, head = _read_gz(f, path, size) if gz else _read_raw(f, path, size)
    arr = _voxel_array(buf, head, path, np.dtype(scaled_dtype))
    if check_nan and arr.dtype.kind == "f":
        _check_finite(arr, path)
    return NiftiVolume(array=arr, affine=head.affine, header=head.hdr, path=path)


def _open_regular(path: str) -> BinaryIO:
    """``open(path, "rb")`` once ``path`` is known to be a regular file (a FIFO would block)."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file") from None
    if stat.S_ISDIR(mode):
        raise DirectoryError(f"{path}: is a directory, not a NIfTI file")
    if not stat.S_ISREG(mode):
        raise ValueError(f"{path}: not a regular file (a pipe, socket or device), not a NIfTI file")
    return open(path, "rb")


def _checked_header(head: bytes | bytearray, path: str) -> _Header:
    """Parse and check every header field the decode uses, before anything is allocated."""
    hdr = parse_header(head, path)
    layout = data_layout(hdr, path)
    check_extensions(hdr, head, layout, path)
    return _Header(hdr, layout, best_affine(hdr, len(layout.shape), path), slope_inter(hdr, path))


def _read_raw(f: BinaryIO, path: str, size: int) -> tuple[np.ndarray, _Header]:
    """An uncompressed ``.nii``: the header checked against the file's size, then one ``readinto``."""
    head = _checked_header(f.read(_HEAD), path)
    end = head.layout.end
    if end > size:
        raise ValueError(
            f"{path}: truncated file: {size} bytes, the header ({head.layout.describe()} from "
            f"vox_offset={head.layout.offset}) declares {end}"
        )
    if size > end:
        raise _longer_than_declared(path, head.layout, size)
    buf = np.empty(end, dtype=np.uint8)  # numpy: huge pages, few faults
    f.seek(0)
    if (got := f.readinto(buf)) < end:  # the file shrank since it was measured
        raise ValueError(f"{path}: truncated file: read {got} bytes, the header declares {end}")
    return buf, head


def _read_gz(f: BinaryIO, path: str, size: int) -> tuple[np.ndarray, _Header]:
    """Decode a gzip stream into one uint8 array sized from the checked NIfTI header.

    The output is numpy memory (transparent huge pages: first-touch page faults otherwise cost a
    third of the decode) and the input streams through in 1 MiB reads: no whole-file copy. The
    whole stream is decoded, so every gzip trailer is verified, even past the voxels.
    """
    reader = GzipReader(f, path)
    first = bytearray()
    while len(first) < _HEAD and (piece := reader.read(_HEAD - len(first))):
        first += piece
    head = _checked_header(first, path)
    end = head.layout.end
    if end > MAX_RATIO * size:
        raise ValueError(
            f"{path}: invalid NIfTI header: {head.layout.describe()} from vox_offset={head.layout.offset} "
            f"declares {end} bytes, more than a {size}-byte gzip file can decode to ({MAX_RATIO}x)"
        )
    trusted = isize_hint(f) == end % 2**32  # one member whose trailer agrees with the header
    cap = end if trusted else min(end, CHUNK)
    out = np.empty(max(cap, len(first)), dtype=np.uint8)
    pos = len(first)
    out[:pos] = np.frombuffer(first, dtype=np.uint8)
    while pos < end and (piece := reader.read(min(CHUNK, end - pos))):
        if pos + len(piece) > len(out):  # only where the trailer's size disagreed with the header
            out = _grown(out, pos, min(end, 2 * len(out)))
        out[pos : pos + len(piece)] = np.frombuffer(piece, dtype=np.uint8)
        pos += len(piece)
    if pos < end:
        raise ValueError(
            f"{path}: truncated file: the gzip data holds {pos} bytes, the header "
            f"({head.layout.describe()} from vox_offset={head.layout.offset}) declares {end}"
        )
    got = pos + reader.drain()  # pos > end where the first read (the header) held all the data
    if got > end:
        raise _longer_than_declared(path, head.layout, got)
    return out, head


def _longer_than_declared(path: str, layout: Layout, got: int) -> ValueError:
    """Data past the voxels the header declares: a header that does not describe its data (a wrong
    ``dim``, ``datatype`` or ``vox_offset``), so the voxels it would give are not the file's."""
    return ValueError(
        f"{path}: the data holds {got} bytes, {got - layout.end} more than the header ({layout.describe()} "
        f"from vox_offset={layout.offset}) declares ({layout.end}): the header does not match its data"
    )


def _grown(out: np.ndarray, used: int, capacity: int) -> np.ndarray:
    new = np.empty(capacity, dtype=np.uint8)
    new[:used] = out[:used]
    return new


def _voxel_array(buf: np.ndarray, head: _Header, path: str, scaled_dtype: np.dtype) -> np.ndarray:
    """A 3D ``(X, Y, Z)`` Fortran-order view of the voxels, scaled when the header asks."""
    shape = _spatial_shape(head.layout.shape, path)
    dtype, offset = head.layout.dtype, head.layout.offset
    count = shape[0] * shape[1] * shape[2]
    arr = np.frombuffer(buf, dtype=dtype, count=count, offset=offset).reshape(shape, order="F")
    if not dtype.isnative or offset % dtype.itemsize:
        arr = arr.astype(dtype.newbyteorder("="), order="F")
    if head.scaling is not None:
        arr = _scaled(arr, *head.scaling, scaled_dtype)
    return arr


def _scaled(arr: np.ndarray, slope: float, inter: float, dtype: np.dtype) -> np.ndarray:
    """``dtype(arr * slope + inter)`` computed in float64, a few slices at a time.

    nibabel (so MONAI's reader) scales in float64 and MONAI casts the result to its dtype (float32
    by default); scaling in float32 rounds twice and gives other values (one ulp off for slope 0.1).
    """
    out = np.empty(arr.shape, dtype=dtype, order="F")
    step = max(1, _SCALE_SLAB // max(1, arr.shape[0] * arr.shape[1]))
    with np.errstate(over="ignore"):  # an overflow to inf is reported by the finite check
        for z in range(0, arr.shape[2], step):
            slab = arr[:, :, z : z + step].astype(np.float64)
            if slope != 1.0:  # as nibabel's apply_read_scaling
                slab *= slope
            if inter != 0.0:
                slab += inter
            out[:, :, z : z + step] = slab
    return out


def _check_finite(arr: np.ndarray, path: str) -> None:
    """``ValueError`` naming the counts when ``arr`` holds NaN or ±inf."""
    if np.isfinite(arr).all():
        return
    nan, pos, neg = (int(np.count_nonzero(f(arr))) for f in (np.isnan, np.isposinf, np.isneginf))
    raise ValueError(
        f"{path}: {nan + pos + neg} of {arr.size} voxels are NaN or infinite ({nan} NaN, {pos} +inf, "
        f"{neg} -inf); fix the file or pass check_nan=False to fastpipe's LoadImaged (a MONAI chain: "
        "CacheDataset(..., translate=False) keeps MONAI's LoadImaged, which loads them)"
    )


def _spatial_shape(shape: tuple[int, ...], path: str) -> tuple[int, int, int]:
    """``shape`` as 3D, dropping trailing singleton dims; ``ValueError`` for 2D or true 4D+ data."""
    dims = list(shape)
    while len(dims) > 3 and dims[-1] == 1:
        dims.pop()
    if len(dims) != 3:
        kind = f"{len(dims)}D"
        raise ValueError(f"{path}: expected a 3D volume, got {kind} data of shape {shape}")
    return dims[0], dims[1], dims[2]
