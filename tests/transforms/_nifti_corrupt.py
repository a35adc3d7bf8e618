"""Byte-level NIfTI corruption for the safety and fuzz tests: header fields, gzip members, flips."""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np

GZIP_MAGIC = b"\x1f\x8b"
_HEADER_DTYPES = {348: nib.nifti1.header_dtype, 540: nib.nifti2.header_dtype}


def decoded(path: str | Path) -> bytes:
    """The file's NIfTI bytes: gunzipped when the file is gzip."""
    raw = Path(path).read_bytes()
    return gzip.decompress(raw) if raw[:2] == GZIP_MAGIC else raw


def encode(data: bytes, gz: bool) -> bytes:
    """``data`` as a one-member gzip stream (mtime 0) when ``gz``, else unchanged."""
    return gzip.compress(data, compresslevel=6, mtime=0) if gz else data


def set_fields(data: bytes, **fields) -> bytes:
    """NIfTI bytes (little-endian NIfTI-1 or -2) with header fields replaced.

    A value is a scalar, an array for the whole field, or a ``{index: value}`` dict for entries
    of an array field: ``set_fields(raw, dim={3: -5}, vox_offset=np.nan)``.
    """
    buf = bytearray(data)
    dtype = _HEADER_DTYPES[int(np.frombuffer(buf, "<i4", 1)[0])]
    hdr = np.ndarray((), dtype=dtype, buffer=buf)
    for name, value in fields.items():
        if isinstance(value, dict):
            for i, v in value.items():
                hdr[name][i] = v
        else:
            hdr[name] = value
    return bytes(buf)


def rewrite(src: str | Path, dst: str | Path, gz: bool | None = None, **fields) -> str:
    """Write ``src`` with ``fields`` replaced to ``dst`` (gzip when ``gz``; default: as ``src`` was)."""
    raw = Path(src).read_bytes()
    gz = raw[:2] == GZIP_MAGIC if gz is None else gz
    Path(dst).write_bytes(encode(set_fields(decoded(src), **fields), gz))
    return str(dst)


def flip(data: bytes, pos: int, mask: int) -> bytes:
    """``data`` with byte ``pos`` XOR ``mask``."""
    out = bytearray(data)
    out[pos] ^= mask
    return bytes(out)


def deflate_span(gz: bytes) -> tuple[int, int]:
    """``(start, end)`` of the deflate data of a one-member gzip stream without optional fields."""
    assert gz[:2] == GZIP_MAGIC and gz[3] == 0, "expected a plain gzip header"
    return 10, len(gz) - 8


def members(data: bytes, cuts: list[int]) -> bytes:
    """``data`` as several gzip members, split at ``cuts`` (sorted offsets into ``data``)."""
    bounds = [0, *cuts, len(data)]
    return b"".join(gzip.compress(data[a:b], mtime=0) for a, b in zip(bounds[:-1], bounds[1:], strict=True))


def structured_volume(shape: tuple[int, ...], dtype, seed: int = 0) -> np.ndarray:
    """Smooth blobs plus noise: compresses like a real scan (long matches and literals)."""
    rng = np.random.default_rng(seed)
    grids = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    r2 = sum(g * g for g in grids)
    vol = 200 * (r2 < 0.6) + 80 * (r2 < 0.2) + rng.normal(0, 5, shape)
    if np.dtype(dtype).kind == "u":
        vol = (r2 < 0.5).astype(np.uint8) + (r2 < 0.1)
    return np.asarray(vol).astype(dtype)
