"""NIfTI-1/2 reading: nibabel parses the header, isal decodes gzip straight into one buffer.

The voxel data is never copied after decoding: ``np.frombuffer`` views the decoded bytearray
in the file's Fortran order (x fastest), so ``read_nifti`` costs one gzip decode (or one
``readinto`` for ``.nii``) plus, only where the header asks for it, the ``scl_slope``/``scl_inter``
scaling. Every error names the file and the problem.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from typing import BinaryIO

import nibabel as nib
import numpy as np
from isal import igzip_lib

_GZIP_MAGIC = b"\x1f\x8b"
_CHUNK = 1 << 20  # decode in 1 MiB pieces so each piece is copied while still in cache
_HEAD = 544  # enough decoded bytes for a NIfTI-2 header plus the extension flag
_HEADER_CLASSES = {348: nib.Nifti1Header, 540: nib.Nifti2Header}
_NIFTI_MAGICS = (b"n+1\x00", b"n+2\x00")


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


def read_nifti(path: str | os.PathLike, check_nan: bool = True) -> NiftiVolume:
    """Read a 3D ``.nii`` or ``.nii.gz`` volume (gzip is detected from the bytes, not the name).

    Args:
        path: the file.
        check_nan: raise ``ValueError`` when a floating-point volume holds NaN voxels (default True).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: truncated or corrupt gzip, not a NIfTI file, not 3D, NaN voxels.

    Example:
        >>> vol = read_nifti("imagesTr/spleen_2.nii.gz")  # doctest: +SKIP
        >>> vol.array.shape, vol.array.dtype  # doctest: +SKIP
        ((512, 512, 90), dtype('int16'))
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such file")
    with open(path, "rb") as f:
        gz = f.read(2) == _GZIP_MAGIC
        f.seek(0)
        if gz:
            buf = _gunzip(f, path)
        else:
            buf = np.empty(os.fstat(f.fileno()).st_size, dtype=np.uint8)  # numpy: huge pages, few faults
            f.readinto(buf)
    hdr = _parse_header(buf, path)
    arr = _voxel_array(buf, hdr, path)
    if check_nan and arr.dtype.kind == "f" and np.isnan(arr).any():
        n = int(np.isnan(arr).sum())
        raise ValueError(f"{path}: {n} of {arr.size} voxels are NaN; fix the file or pass check_nan=False")
    return NiftiVolume(array=arr, affine=hdr.get_best_affine().astype(np.float64), header=hdr, path=path)


def _next_piece(dec: igzip_lib.IgzipDecompressor, f: BinaryIO, max_len: int) -> bytes | None:
    """One decoded piece of at most ``max_len`` bytes (input fed in 1 MiB reads); None at the end."""
    if dec.eof:
        return None
    data = b""
    if dec.needs_input:
        data = f.read(_CHUNK)
        if not data:
            return None
    piece = dec.decompress(data, max_len)
    if not piece and not dec.eof and not dec.needs_input:  # no progress: never spin on a broken stream
        raise igzip_lib.IsalError("decoder made no progress")
    return piece


def _gunzip(f: BinaryIO, path: str) -> np.ndarray:
    """Decode a gzip stream into one preallocated uint8 array sized from the NIfTI header.

    The output is numpy memory (transparent huge pages: first-touch page faults otherwise cost a
    third of the decode) and the input streams through in 1 MiB reads: no whole-file copy.
    """
    dec = igzip_lib.IgzipDecompressor(flag=igzip_lib.DECOMP_GZIP)
    try:
        head = bytearray()
        while len(head) < _HEAD and (piece := _next_piece(dec, f, _HEAD - len(head))) is not None:
            head += piece
        hdr = _parse_header(head, path)
        size = int(hdr.get_data_offset()) + _data_nbytes(hdr)
        out = np.empty(max(size, len(head)), dtype=np.uint8)
        pos = len(head)
        out[:pos] = np.frombuffer(head, dtype=np.uint8)
        while pos < size and (piece := _next_piece(dec, f, min(_CHUNK, size - pos))) is not None:
            out[pos : pos + len(piece)] = np.frombuffer(piece, dtype=np.uint8)
            pos += len(piece)
    except igzip_lib.IsalError as err:
        raise ValueError(f"{path}: corrupt gzip data ({err})") from err
    if pos < size:
        raise ValueError(
            f"{path}: truncated file: gzip stream ended after {pos} of {size} bytes the header declares"
        )
    return out


def _parse_header(buf: bytes | bytearray | np.ndarray, path: str) -> nib.Nifti1Header:
    """The nibabel header of ``buf``; ``ValueError`` when ``buf`` is not single-file NIfTI-1/2."""
    if len(buf) < 4:
        raise ValueError(f"{path}: not a NIfTI file (only {len(buf)} bytes)")
    sizes = {endian: struct.unpack(f"{endian}i", bytes(buf[:4]))[0] for endian in "<>"}
    endian = next((e for e, n in sizes.items() if n in _HEADER_CLASSES), None)
    if endian is None:
        raise ValueError(f"{path}: not a NIfTI file (first bytes {bytes(buf[:8])!r} are no NIfTI-1/2 header)")
    klass = _HEADER_CLASSES[sizes[endian]]
    nbytes = klass.template_dtype.itemsize
    if len(buf) < nbytes:
        raise ValueError(f"{path}: truncated file: {len(buf)} bytes, a NIfTI header needs {nbytes}")
    try:
        hdr = klass(binaryblock=bytes(buf[:nbytes]), endianness=endian, check=True)
    except Exception as err:  # nibabel raises several HeaderDataError flavours
        raise ValueError(f"{path}: not a valid NIfTI header ({err})") from err
    if bytes(hdr["magic"].tobytes()[:4]) not in _NIFTI_MAGICS:
        raise ValueError(
            f"{path}: NIfTI magic {hdr['magic']!r} is not single-file (n+1/n+2); .hdr/.img pairs unsupported"
        )
    return hdr


def _data_nbytes(hdr: nib.Nifti1Header) -> int:
    """Bytes of voxel data the header declares."""
    return int(np.prod(hdr.get_data_shape(), dtype=np.int64)) * hdr.get_data_dtype().itemsize


def _voxel_array(buf: np.ndarray, hdr: nib.Nifti1Header, path: str) -> np.ndarray:
    """A 3D ``(X, Y, Z)`` Fortran-order view of the voxels, scaled when the header asks."""
    shape = _spatial_shape(tuple(int(s) for s in hdr.get_data_shape()), path)
    dtype = hdr.get_data_dtype()
    if dtype.kind not in "iuf" or dtype.fields is not None:
        raise ValueError(f"{path}: voxel type {dtype} is not supported (expected an integer or float type)")
    offset, count = int(hdr.get_data_offset()), int(np.prod(shape, dtype=np.int64))
    if len(buf) < offset + count * dtype.itemsize:
        raise ValueError(
            f"{path}: truncated file: {len(buf)} bytes, header declares {offset + count * dtype.itemsize}"
        )
    arr = np.frombuffer(buf, dtype=dtype, count=count, offset=offset).reshape(shape, order="F")
    if not dtype.isnative or offset % dtype.itemsize:
        arr = arr.astype(dtype.newbyteorder("="), order="F")
    slope, inter = hdr.get_slope_inter()
    if slope is not None and (slope != 1.0 or inter != 0.0):
        arr = arr.astype(np.float32, order="F")
        arr *= np.float32(slope)
        arr += np.float32(inter)
    return arr


def _spatial_shape(shape: tuple[int, ...], path: str) -> tuple[int, int, int]:
    """``shape`` as 3D, dropping trailing singleton dims; ``ValueError`` for 2D or true 4D+ data."""
    dims = list(shape)
    while len(dims) > 3 and dims[-1] == 1:
        dims.pop()
    if len(dims) != 3:
        kind = f"{len(dims)}D"
        raise ValueError(f"{path}: expected a 3D volume, got {kind} data of shape {shape}")
    return dims[0], dims[1], dims[2]
