"""GzipReader against Python's ``gzip.decompress``: the same bytes for every stream it accepts.

Members are written here byte by byte, with the optional header fields (FEXTRA, FNAME, FCOMMENT,
FHCRC), zero padding, trailing bytes, a flipped byte and a truncation drawn by hypothesis, and the
reader is run with tiny reads so that member headers arrive split across reads, as a later member's
header does where it straddles a 1 MiB read of a real file. Examples are derandomised.
"""

from __future__ import annotations

import gzip
import io
import struct
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastpipe.transforms._gzip as gz
from fastpipe.transforms._nifti import read_nifti

sys.path.insert(0, str(Path(__file__).parent))  # pytest 9 imports test modules without adding their folder
from _nifti_corrupt import decoded, structured_volume  # noqa: E402
from _nifti_files import affine, write  # noqa: E402
from _nifti_mutations import FCOMMENT, FEXTRA, FHCRC, FNAME, member  # noqa: E402


def gunzip(blob: bytes, read: int = 1 << 16) -> bytes:
    reader = gz.GzipReader(io.BytesIO(blob), "x.gz")
    return b"".join(iter(lambda: reader.read(read), b""))


@pytest.mark.parametrize("flags", [FHCRC, FHCRC | FEXTRA, FHCRC | FEXTRA | FNAME | FCOMMENT])
@pytest.mark.parametrize("chunk", [1, 5, 11, 17])
def test_a_header_split_across_reads_is_read(monkeypatch, flags, chunk):
    """isal fails a valid FHCRC header given to it in two pieces ("CRC check failed", "invalid
    deflate block"): a later member's header straddling a 1 MiB read refused a valid file."""
    monkeypatch.setattr(gz, "CHUNK", chunk)
    payload = bytes(range(256)) * 4
    blob = member(payload[:300], flags) + member(payload[300:], flags)
    assert gunzip(blob) == gzip.decompress(blob) == payload


def test_a_second_member_header_on_the_1mib_read_boundary(tmp_path):
    """The real case: member 1 and zero padding end 5 bytes before 1 MiB; member 2 has FHCRC and FNAME."""
    lab = structured_volume((128, 128, 40), np.uint8)
    raw = decoded(write(tmp_path / "l.nii", lab, affine()))
    cut = len(raw) // 2
    head = member(raw[:cut], FHCRC | FNAME, level=0)
    pad = gz.CHUNK - 5 - len(head)
    blob = head + bytes(pad) + member(raw[cut:], FHCRC | FNAME)
    assert pad > 0 and blob.index(b"\x1f\x8b", len(head)) == gz.CHUNK - 5
    path = tmp_path / "l.nii.gz"
    path.write_bytes(blob)
    np.testing.assert_array_equal(read_nifti(path).array, lab)


def test_a_wrong_header_crc_is_named():
    """A member header whose FHCRC does not match was reported as a trailer CRC/size mismatch."""
    blob = bytearray(member(b"voxels" * 50, FHCRC | FNAME))
    blob[12] ^= 1  # a byte of the file name
    with pytest.raises(ValueError, match=r"x.gz: corrupt gzip header in member 1: its header CRC \(FHCRC\)"):
        gunzip(bytes(blob))


@settings(max_examples=300, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(
    payload=st.binary(max_size=2000),
    cuts=st.lists(st.integers(0, 2000), max_size=3),
    flags=st.lists(st.integers(0, 31), min_size=4, max_size=4),
    pads=st.lists(st.integers(0, 3), min_size=4, max_size=4),
    tail=st.binary(max_size=3),
    flip=st.none() | st.tuples(st.integers(0, 10**6), st.integers(1, 255)),
    cut=st.none() | st.integers(1, 10**6),
    chunk=st.sampled_from([1, 3, 17, 1 << 20]),
)
def test_same_bytes_as_python_gzip(payload, cuts, flags, pads, tail, flip, cut, chunk):
    cuts = sorted({min(c, len(payload)) for c in cuts})
    parts = [payload[a:b] for a, b in zip([0, *cuts], [*cuts, len(payload)], strict=True)]
    blob = b"".join(member(p, flags[i % 4]) + bytes(pads[i % 4]) for i, p in enumerate(parts)) + tail
    if flip is not None:
        at = flip[0] % len(blob)
        blob = blob[:at] + bytes([blob[at] ^ flip[1]]) + blob[at + 1 :]
    if cut is not None:
        blob = blob[: max(1, cut % (len(blob) + 1))]
    try:
        want = gzip.decompress(blob)
    except (OSError, EOFError, zlib.error):
        want = None
    gz.CHUNK, saved = chunk, gz.CHUNK
    try:
        got = gunzip(blob, read=7)
    except ValueError as err:
        assert "x.gz" in str(err)
        got = None
    finally:
        gz.CHUNK = saved
    if want is not None and got is None and flip is not None and any(f & FHCRC for f in flags):
        return  # a damaged header that FHCRC guards: Python's gzip does not check the header CRC
    assert got == want


@pytest.mark.parametrize("fhcrc", [True, False])
def test_a_header_longer_than_header_max(fhcrc):
    """A file name past 1 MiB: without FHCRC isal reads the header in pieces; with FHCRC it cannot (it
    fails such a header in pieces), and the error said 'corrupt gzip data ... Invalid deflate block'."""
    payload = bytes(range(256)) * 8
    head = b"\x1f\x8b\x08" + bytes([FNAME | (FHCRC if fhcrc else 0)]) + b"\0\0\0\0\0\xff"
    head += b"n" * (gz.HEADER_MAX + 10) + b"\0"
    head += struct.pack("<H", zlib.crc32(head) & 0xFFFF) if fhcrc else b""
    blob = head + member(payload)[10:]
    assert gzip.decompress(blob) == payload
    if not fhcrc:
        assert gunzip(blob) == payload
        return
    with pytest.raises(ValueError, match=r"x.gz: unsupported gzip header in member 1: it has a header CRC"):
        gunzip(blob)
