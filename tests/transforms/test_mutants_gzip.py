"""Checked gzip decoding: behaviour that mutation testing found unchecked (``fastpipe.transforms._gzip``)."""

from __future__ import annotations

import io
import struct

import pytest

import fastpipe.transforms._gzip as gz

PLAIN = b"\x1f\x8b\x08\x00\0\0\0\0\0\xff"  # a member header without optional fields: 10 bytes


def gunzip(blob: bytes) -> bytes:
    reader = gz.GzipReader(io.BytesIO(blob), "x.gz")
    return b"".join(iter(lambda: reader.read(1 << 16), b""))


@pytest.mark.parametrize(
    "head,length",
    [
        (PLAIN, 10),
        (PLAIN[:3] + b"\x04" + PLAIN[4:] + struct.pack("<H", 0), 12),  # FEXTRA of length 0
        (PLAIN[:3] + b"\x04" + PLAIN[4:] + struct.pack("<H", 3) + b"abc", 15),
        (PLAIN[:3] + b"\x08" + PLAIN[4:] + b"a.nii\0", 16),  # FNAME
        (PLAIN[:3] + b"\x02" + PLAIN[4:] + b"\0\0", 12),  # FHCRC
    ],
)
def test_header_len_of_a_buffer_holding_exactly_the_header_and_one_byte_less(head, length):
    assert gz.header_len(head) == length
    assert gz.header_len(head + b"rest") == length
    assert gz.header_len(head[:-1]) is None


@pytest.mark.parametrize("blob", [b"", b"\x1f", b"\x1f\x8b", b"\x1f\x8b\x08", PLAIN[:9]])
def test_a_file_cut_inside_its_first_header_is_a_truncated_file(blob):
    with pytest.raises(ValueError, match="x.gz: truncated file"):
        gunzip(blob)


def test_a_damaged_deflate_block_is_named_corrupt_data_not_a_crc_failure():
    blob = PLAIN + b"\xff" * 16 + bytes(8)  # block type 3: reserved, invalid
    with pytest.raises(ValueError, match=r"x.gz: corrupt gzip data in member 1 \("):
        gunzip(blob)


@pytest.mark.parametrize("size", [0, 3, 17])
def test_isize_hint_of_a_file_shorter_than_a_member_is_none_and_the_position_is_kept(tmp_path, size):
    path = tmp_path / "short.gz"
    path.write_bytes(bytes(range(size)))
    with open(path, "rb") as f:
        f.seek(min(size, 2))
        assert gz.isize_hint(f) is None
        assert f.tell() == min(size, 2)


def test_isize_hint_reads_the_last_four_bytes(tmp_path):
    path = tmp_path / "one.gz"
    path.write_bytes(PLAIN + b"\x03\x00" + struct.pack("<II", 0, 123456))
    with open(path, "rb") as f:
        assert gz.isize_hint(f) == 123456 and f.tell() == 0
    path.write_bytes(bytes(14) + struct.pack("<I", 7))  # 18 bytes: a 10-byte header and an 8-byte trailer
    with open(path, "rb") as f:
        assert gz.isize_hint(f) == 7
