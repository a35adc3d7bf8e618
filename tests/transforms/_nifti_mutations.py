"""Small valid NIfTI files in many encodings, and the seeded byte mutations of the mutation fuzz test.

``clean_files`` writes NIfTI-1 volumes of eight dtypes, NIfTI-2, a scaled volume (``scl_slope`` 0.1,
``scl_inter`` -1024), a qform-only oblique volume and a big-endian one, each as ``.nii`` and as four
gzip encodings: plain, one member with every optional header field (FHCRC, FEXTRA, FNAME, FCOMMENT),
three members with zero padding between them, and stored (level 0) blocks. ``mutate`` damages bytes
the way disks, networks and tools do: a flipped bit, an overwritten byte or run, inserted or deleted
bytes, a truncation, junk appended; positions lean to the first and last bytes (gzip header, NIfTI
header, gzip trailer).
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
from _nifti_corrupt import structured_volume
from _nifti_files import affine

FHCRC, FEXTRA, FNAME, FCOMMENT = 2, 4, 8, 16
SHAPE = (9, 7, 5)
DTYPES = (np.int16, np.uint8, np.int8, np.uint16, np.int32, np.int64, np.float32, np.float64)
#: mutations that change a file's length: an uncompressed ``.nii`` then no longer has the size its
#: header declares, so one of them alone must always be refused
LENGTH_CHANGING = ("insert", "delete", "truncate", "append")


def member(payload: bytes, flags: int = 0, level: int = 6) -> bytes:
    """One gzip member with the optional header fields ``flags`` asks for (a valid header CRC)."""
    head = b"\x1f\x8b\x08" + bytes([flags]) + b"\0\0\0\0\0\xff"
    head += struct.pack("<H", 6) + b"BC\x02\0\0\0" if flags & FEXTRA else b""
    head += b"img.nii\0" if flags & FNAME else b""
    head += b"a comment\0" if flags & FCOMMENT else b""
    head += struct.pack("<H", zlib.crc32(head) & 0xFFFF) if flags & FHCRC else b""
    deflate = zlib.compressobj(level, zlib.DEFLATED, -15)
    body = deflate.compress(payload) + deflate.flush()
    return head + body + struct.pack("<II", zlib.crc32(payload), len(payload) & 0xFFFFFFFF)


def encodings(raw: bytes) -> dict[str, bytes]:
    """``raw`` (a ``.nii``) as itself and in four gzip encodings."""
    half = len(raw) // 2
    return {
        ".nii": raw,
        ".nii.gz": gzip.compress(raw, mtime=0),
        "_fields.nii.gz": member(raw, FHCRC | FEXTRA | FNAME | FCOMMENT),
        "_members.nii.gz": member(raw[:100], FNAME)
        + member(raw[100:half], FHCRC)
        + bytes(3)
        + member(raw[half:], FEXTRA),
        "_stored.nii.gz": member(raw, FHCRC, level=0),
    }


def _nii(tmp: Path, name: str, img: nib.Nifti1Image) -> bytes:
    path = tmp / f"{name}.nii"
    nib.save(img, str(path))
    return path.read_bytes()


def volumes(tmp: Path) -> dict[str, bytes]:
    """The clean ``.nii`` bytes of each volume, by name."""
    oblique = affine((0.8, 0.9, 2.5), "LPS", angle_deg=10)
    out = {}
    for dt in DTYPES:
        data = structured_volume(SHAPE, dt, seed=1)
        out[np.dtype(dt).name] = _nii(
            tmp, np.dtype(dt).name, nib.Nifti1Image(data, oblique, dtype=data.dtype)
        )
    out["nifti2"] = _nii(tmp, "n2", nib.Nifti2Image(structured_volume(SHAPE, np.float32, 2), oblique))
    scaled = nib.Nifti1Image(structured_volume(SHAPE, np.int16, 3), np.eye(4))
    scaled.header.set_slope_inter(0.1, -1024.0)
    out["scaled"] = _nii(tmp, "scaled", scaled)
    qform = nib.Nifti1Image(structured_volume(SHAPE, np.int16, 4), None)
    qform.header.set_qform(affine((1.0, 1.0, 2.0), "RAS", angle_deg=20), 1)
    qform.header.set_sform(None, 0)
    out["qform"] = _nii(tmp, "qform", qform)
    big = nib.Nifti1Image(structured_volume(SHAPE, np.int16, 5), oblique, nib.Nifti1Header(endianness=">"))
    out["big_endian"] = _nii(tmp, "be", big)
    return out


def clean_files(tmp: Path) -> dict[str, bytes]:
    """Every volume in every encoding: file name -> bytes."""
    return {
        f"{name}{ext}": data for name, raw in volumes(tmp).items() for ext, data in encodings(raw).items()
    }


def mutate(data: bytes, rng: np.random.Generator) -> tuple[bytes, str, int]:
    """``data`` damaged once: the damaged bytes, the kind of damage, and where."""
    n, region = len(data), int(rng.integers(0, 5))
    pos = int(
        rng.integers(0, min(n, 32))
        if region == 0
        else rng.integers(max(0, n - 12), n)
        if region == 1
        else rng.integers(0, n)
    )
    out = bytearray(data)
    kind = ("bit", "byte", "run", "insert", "delete", "truncate", "append")[int(rng.integers(0, 7))]
    junk = rng.integers(0, 256, int(rng.integers(1, 8)), dtype=np.uint8).tobytes()
    if kind == "bit":
        out[pos] ^= 1 << int(rng.integers(0, 8))
    elif kind == "byte":
        out[pos] = (out[pos] + int(rng.integers(1, 256))) % 256
    elif kind == "run":
        out[pos : pos + len(junk)] = junk[: n - pos]
    elif kind == "insert":
        out[pos:pos] = junk
    elif kind == "delete":
        del out[pos : pos + len(junk)]
    elif kind == "truncate":
        del out[pos:]
    else:
        out += junk
    return bytes(out), kind, pos
