"""Checked gzip decoding: every member decoded to its end, CRC32 and ISIZE verified, no trailing garbage.

isal's ``IgzipDecompressor`` (``DECOMP_GZIP``) verifies a member's CRC32 and ISIZE trailer itself
when it is driven to the end of the member, at no measurable cost beside the inflate. This module
drives it that far for every member, so a flipped bit anywhere in the stream is an error, never
wrong voxels. The accepted format is the one ``gzip.decompress`` accepts:

- one or more gzip members back to back (RFC 1952 allows several; ``cat a.gz b.gz`` makes them);
- zero bytes after a member are padding and are skipped (``gzip -d`` does the same);
- any other byte after a member must start a new member, otherwise the file is rejected as
  trailing garbage.

Every error is a ``ValueError`` that names the file and says what is wrong: ``truncated file``
(the file ends inside a member), ``CRC check failed``, ``corrupt gzip header`` (its FHCRC), ``corrupt gzip
data``, ``trailing garbage`` or ``unsupported gzip header`` (FHCRC with optional fields past 1 MiB).
"""

from __future__ import annotations

import os
import struct
import zlib
from typing import BinaryIO

from isal import igzip_lib

MAGIC = b"\x1f\x8b"
CHUNK = 1 << 20  # compressed bytes per read
HEADER_MAX = 1 << 20  # a member header (FEXTRA, FNAME, FCOMMENT) gathered into one piece up to this size
#: Deflate cannot expand input more than 1032-fold (one 258-byte match per 2 bits), so a gzip file
#: of n bytes decodes to at most ``MAX_RATIO * n`` bytes: a sound bound for a header's claims.
MAX_RATIO = 1032
_ISAL_CHECKSUM_ERROR = "Error -6"  # isal's ISAL_INCORRECT_CHECKSUM: CRC32 or ISIZE mismatch


class GzipReader:
    """Decoded bytes of a gzip file, in pieces, with every member's trailer verified.

    Args:
        f: the file, opened ``"rb"`` and positioned at its first byte.
        path: the file's name, for error messages.

    Example:
        >>> with open("img.nii.gz", "rb") as f:  # doctest: +SKIP
        ...     r = GzipReader(f, "img.nii.gz")
        ...     data = b"".join(iter(lambda: r.read(1 << 20), b""))
    """

    def __init__(self, f: BinaryIO, path: str) -> None:
        self._f, self._path = f, path
        self._dec = igzip_lib.IgzipDecompressor(flag=igzip_lib.DECOMP_GZIP)
        self._pending = b""  # compressed bytes read from the file but not yet given to the decoder
        self._consumed = 0  # compressed bytes read from the file so far
        self._member = 1
        self._done = False
        self._header_open = True  # the decoder has not been given this member's whole header yet

    def read(self, max_len: int) -> bytes:
        """At most ``max_len`` (> 0) decoded bytes; ``b""`` only once the whole file is verified."""
        while not self._done:
            if self._dec.eof:
                self._next_member()
                continue
            data = b""
            if self._dec.needs_input:
                data = self._input()
            try:
                piece = self._dec.decompress(data, max_len)
            except igzip_lib.IsalError as err:
                raise self._decode_error(err) from err
            if piece:
                return piece
            if not self._dec.eof and not self._dec.needs_input:  # never spin on a broken stream
                raise ValueError(f"{self._path}: corrupt gzip data in member {self._member}: decoder stalled")
        return b""

    def drain(self, max_len: int = CHUNK) -> int:
        """Decode (and drop) the rest of the file, verifying it; returns how many bytes were dropped."""
        dropped = 0
        while piece := self.read(max_len):
            dropped += len(piece)
        return dropped

    def _input(self) -> bytes:
        data, self._pending = self._pending or self._read(), b""
        if not data:
            raise ValueError(
                f"{self._path}: truncated file: the gzip stream ends after {self._consumed} bytes, "
                f"inside member {self._member} before its CRC32/size trailer"
            )
        if self._header_open:  # isal fails a valid FHCRC header that arrives in two pieces: one piece
            while header_len(data) is None and len(data) < HEADER_MAX and (more := self._read()):
                data += more
            self._header_open = False
            self._check_header_crc(data)
        return data

    def _check_header_crc(self, data: bytes) -> None:
        """A header CRC (FHCRC) that does not match its header: isal would call it a trailer CRC error.

        A header with FHCRC longer than ``HEADER_MAX`` (a file name or comment over 1 MiB) cannot be
        handed to isal in one piece, and isal fails it in pieces as ``Invalid deflate block``: named here."""
        n = header_len(data)
        if n is None and len(data) >= HEADER_MAX and data[3] & 2:
            raise ValueError(
                f"{self._path}: unsupported gzip header in member {self._member}: it has a header CRC "
                f"(FHCRC) and its optional fields (FEXTRA, FNAME, FCOMMENT) run past {HEADER_MAX} bytes "
                "(or its flags byte is damaged)"
            )
        if (
            n is not None
            and data[3] & 2
            and zlib.crc32(data[: n - 2]) & 0xFFFF != int.from_bytes(data[n - 2 : n], "little")
        ):
            raise ValueError(
                f"{self._path}: corrupt gzip header in member {self._member}: its header CRC (FHCRC) does not "
                "match the header"
            )

    def _read(self) -> bytes:
        data = self._f.read(CHUNK)
        self._consumed += len(data)
        return data

    def _next_member(self) -> None:
        """After a member's verified end: skip zero padding, then start the next member or finish."""
        rest = self._dec.unused_data
        while True:
            rest = rest.lstrip(b"\x00")
            if len(rest) >= len(MAGIC):
                break
            more = self._f.read(CHUNK)
            self._consumed += len(more)
            if not more:
                break
            rest += more
        if not rest:
            self._done = True
            return
        if not rest.startswith(MAGIC):
            at = self._consumed - len(rest)
            raise ValueError(
                f"{self._path}: trailing garbage after gzip member {self._member}: bytes {rest[:8]!r} "
                f"at offset {at} start no gzip member (only zero padding may follow the last member)"
            )
        self._dec = igzip_lib.IgzipDecompressor(flag=igzip_lib.DECOMP_GZIP)
        self._pending = rest
        self._member += 1
        self._header_open = True

    def _decode_error(self, err: Exception) -> ValueError:
        if str(err).startswith(_ISAL_CHECKSUM_ERROR) or "checksum" in str(err).lower():
            return ValueError(
                f"{self._path}: CRC check failed in gzip member {self._member}: "
                "the trailer's CRC32 or size does not match the decoded data"
            )
        return ValueError(f"{self._path}: corrupt gzip data in member {self._member} ({err})")


def header_len(buf: bytes) -> int | None:
    """Bytes of the gzip member header (RFC 1952) that ``buf`` starts with; None while ``buf`` ends inside it."""
    if len(buf) < 10:
        return None
    flags, at = buf[3], 10
    if flags & 4:  # FEXTRA: a 2-byte length, then that many bytes
        if len(buf) < at + 2:
            return None
        at += 2 + int.from_bytes(buf[at : at + 2], "little")
    for bit in (8, 16):  # FNAME, FCOMMENT: zero-terminated
        if flags & bit:
            end = buf.find(b"\0", at)
            if end < 0:
                return None
            at = end + 1
    at += 2 if flags & 2 else 0  # FHCRC
    return at if len(buf) >= at else None


def isize_hint(f: BinaryIO) -> int | None:
    """The last member's ISIZE (decoded size mod 2**32) from the file's last 4 bytes; None if too short.

    Only a hint: it is the whole stream's size only for a single member without padding. The file
    position is restored.
    """
    pos = f.tell()
    try:
        if os.fstat(f.fileno()).st_size < 18:  # smallest gzip member: 10-byte header + 8-byte trailer
            return None
        f.seek(-4, os.SEEK_END)
        return struct.unpack("<I", f.read(4))[0]
    finally:
        f.seek(pos)
