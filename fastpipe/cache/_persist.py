"""Persistent cache across runs: one file per item, keyed by its input files, the chain and the version.

The key of an item hashes (a) ``(path, size, mtime_ns)`` of every string value of the input item that
names an existing file, and the other plain values, (b) :func:`chain_fingerprint` of the deterministic
prefix (type and public attributes of each transform), and (c) ``fastpipe.__version__``. Changing any
of them gives a new key, so stale entries are simply never looked up.

File format: ``MAGIC | payload length (8 bytes, little endian) | payload (torch.save) | crc32 (4 bytes)``.
It is written to a temporary file in the same folder, flushed, then ``os.replace``d into place, so a
crash mid-write leaves at worst a temporary file. A file whose magic, length or checksum does not
match is treated as missing (and recomputed), never loaded as valid.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import re
import tempfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

log = logging.getLogger(__name__)
MAGIC = b"FPCACHE1"
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


def stable_repr(obj: Any, depth: int = 0) -> str:
    """A repr of ``obj`` that is the same across runs: no memory addresses, tensors by content hash."""
    if depth > 4:
        return type(obj).__qualname__
    if isinstance(obj, torch.Tensor):
        data = obj.detach().cpu().contiguous().numpy().tobytes()
        return f"tensor({obj.dtype},{tuple(obj.shape)},{hashlib.sha1(data).hexdigest()})"
    if isinstance(obj, np.ndarray):
        return f"ndarray({obj.dtype},{obj.shape},{hashlib.sha1(obj.tobytes()).hexdigest()})"
    if isinstance(obj, (str, int, float, bool, type(None), torch.dtype, torch.device, np.dtype)):
        return repr(obj)
    if isinstance(obj, dict):
        items = sorted((str(k), stable_repr(v, depth + 1)) for k, v in obj.items())
        return "{" + ",".join(f"{k}:{v}" for k, v in items) + "}"
    if isinstance(obj, (list, tuple, set, frozenset)):
        parts = [stable_repr(v, depth + 1) for v in obj]
        return (
            type(obj).__name__
            + "("
            + ",".join(sorted(parts) if isinstance(obj, (set, frozenset)) else parts)
            + ")"
        )
    if callable(obj) and not hasattr(obj, "__dict__"):
        return getattr(obj, "__qualname__", type(obj).__qualname__)
    attrs = getattr(obj, "__dict__", None)
    if attrs is None:
        return _ADDRESS.sub("", repr(obj))
    public = {k: v for k, v in attrs.items() if not k.startswith("_")}
    name = f"{type(obj).__module__}.{type(obj).__qualname__}"
    if callable(obj) and hasattr(obj, "__code__"):  # a plain function: its name and code
        return f"{obj.__module__}.{obj.__qualname__}:{hashlib.sha1(obj.__code__.co_code).hexdigest()}"
    return name + stable_repr(public, depth + 1)


def chain_fingerprint(transforms: list[Any]) -> str:
    """A stable hash of a deterministic chain: each transform's type and public attributes."""
    # look through profiling wrappers: switching NVTX ranges on must not invalidate a persistent cache
    return hashlib.sha256(
        "|".join(stable_repr(getattr(t, "inner", t)) for t in transforms).encode()
    ).hexdigest()


def _input_repr(value: Any) -> str:
    if isinstance(value, str) and os.path.isfile(value):
        st = os.stat(value)
        return f"file({os.path.abspath(value)},{st.st_size},{st.st_mtime_ns})"
    if isinstance(value, dict):
        return (
            "{"
            + ",".join(f"{k}:{_input_repr(v)}" for k, v in sorted(value.items(), key=lambda kv: str(kv[0])))
            + "}"
        )
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_input_repr(v) for v in value) + "]"
    return stable_repr(value)


def item_key(item: Any, chain_fp: str, version: str) -> str:
    """The cache key of one input item under a chain fingerprint and a fastpipe version."""
    return hashlib.sha256(f"{version}|{chain_fp}|{_input_repr(item)}".encode()).hexdigest()


class PersistentCache:
    """Entries on disk under ``root``, one ``{key}.fpc`` file each, written atomically and checksummed.

    Threading contract: different keys may be loaded and saved from several threads at once.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.loads = 0
        self.saves = 0
        self.rejected = 0

    def path(self, key: str) -> Path:
        """The file of ``key``."""
        return self.root / f"{key}.fpc"

    def load(self, key: str) -> Any | None:
        """The entry stored under ``key`` on the CPU, or ``None`` when absent, partial or corrupt."""
        path = self.path(key)
        try:
            blob = path.read_bytes()
        except FileNotFoundError:
            return None
        payload = _unwrap(blob)
        if payload is None:
            self.rejected += 1
            log.warning("persistent cache entry %s is truncated or corrupt; recomputing it", path)
            return None
        self.loads += 1
        return torch.load(io.BytesIO(payload), map_location="cpu", weights_only=False)

    def save(self, key: str, entry: Any) -> None:
        """Store ``entry`` under ``key``: temporary file, fsync, then an atomic rename."""
        buf = io.BytesIO()
        torch.save(entry, buf)
        payload = buf.getbuffer()
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=f".{key[:16]}-", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(MAGIC + len(payload).to_bytes(8, "little"))
                f.write(payload)
                f.write(zlib.crc32(payload).to_bytes(4, "little"))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path(key))
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        self.saves += 1


def _unwrap(blob: bytes) -> memoryview | None:
    head = len(MAGIC) + 8
    if len(blob) < head + 4 or blob[: len(MAGIC)] != MAGIC:
        return None
    n = int.from_bytes(blob[len(MAGIC) : head], "little")
    if len(blob) != head + n + 4:
        return None
    payload = memoryview(blob)[head : head + n]
    if zlib.crc32(payload) != int.from_bytes(blob[head + n :], "little"):
        return None
    return payload
