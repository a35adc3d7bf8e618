"""The safetensors layout, written without copies and read as zero-copy views, validated like untrusted input.

Layout (https://huggingface.co/docs/safetensors): an 8-byte little-endian header length ``N``, ``N``
bytes of JSON ``{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {str: str}}``
(padded with spaces to a multiple of 8), then the tensor bytes. Tensors are laid out by decreasing
element size, so each starts aligned to its element size. The ``safetensors`` package reads what
:func:`pack` writes and :func:`unpack` reads what it writes (tested); doing it here avoids its two
copies of every tensor on write and its copy on read, which tripled the time to save or load an entry.
"""

from __future__ import annotations

import json
import math
from typing import Any

import torch

_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
    "U64": torch.uint64, "U32": torch.uint32, "U16": torch.uint16, "U8": torch.uint8,
    "BOOL": torch.bool, "C64": torch.complex64,
    "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2,
}  # fmt: skip
_CODES = {dtype: code for code, dtype in _DTYPES.items()}
_MAX_HEADER = 100 * 2**20


class LayoutError(ValueError):
    """Bytes that are not a valid safetensors payload."""


def pack(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> list[bytes | memoryview]:
    """The payload of ``tensors`` (contiguous CPU tensors) and ``metadata`` as a list of buffers."""
    order = sorted(tensors, key=lambda name: (-tensors[name].element_size(), name))
    header: dict[str, Any] = {"__metadata__": metadata}
    offset = 0
    for name in order:
        t = tensors[name]
        if t.dtype not in _CODES:
            raise TypeError(f"tensor {name!r} has dtype {t.dtype}, which safetensors does not store")
        nbytes = t.numel() * t.element_size()
        header[name] = {
            "dtype": _CODES[t.dtype],
            "shape": list(t.shape),
            "data_offsets": [offset, offset + nbytes],
        }
        offset += nbytes
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return [len(text).to_bytes(8, "little"), text, *(_bytes_of(tensors[name]) for name in order)]


def unpack(payload: memoryview) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """``(tensors, metadata)``: tensors are views of ``payload`` (of a copy when it is read-only).

    Raises:
        LayoutError: a header that is not this layout, or offsets, shapes or dtypes that do not fit.
    """
    if payload.readonly:  # tensors must not alias memory Python treats as immutable
        payload = memoryview(bytearray(payload))
    if len(payload) < 8:
        raise LayoutError("shorter than the 8-byte header length")
    n = int.from_bytes(payload[:8], "little")
    if n > min(len(payload) - 8, _MAX_HEADER):
        raise LayoutError(f"header length {n} exceeds the payload of {len(payload)} bytes")
    try:
        header = json.loads(bytes(payload[8 : 8 + n]))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise LayoutError(f"header is not JSON: {err}") from None
    if type(header) is not dict:
        raise LayoutError("header is not a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    if type(metadata) is not dict or not all(type(v) is str for v in metadata.values()):
        raise LayoutError("__metadata__ is not a string-to-string map")
    data = payload[8 + n :]
    return {name: _view(data, name, spec) for name, spec in header.items()}, metadata


def _bytes_of(t: torch.Tensor) -> memoryview:
    if t.numel() == 0:
        return memoryview(b"")
    return memoryview(t.reshape(-1).view(torch.uint8).numpy())


def _view(data: memoryview, name: str, spec: Any) -> torch.Tensor:
    if type(spec) is not dict or spec.get("dtype") not in _DTYPES:
        raise LayoutError(f"tensor {name!r}: bad entry {str(spec)[:80]}")
    shape, offsets, dtype = spec.get("shape"), spec.get("data_offsets"), _DTYPES[spec["dtype"]]
    if type(shape) is not list or not all(type(d) is int and d >= 0 for d in shape):
        raise LayoutError(f"tensor {name!r}: bad shape {shape!r}")
    if type(offsets) is not list or len(offsets) != 2 or not all(type(o) is int for o in offsets):
        raise LayoutError(f"tensor {name!r}: bad data_offsets {offsets!r}")
    begin, end = offsets
    nbytes = math.prod(shape) * dtype.itemsize
    if not 0 <= begin <= end <= len(data) or end - begin != nbytes:
        raise LayoutError(
            f"tensor {name!r}: offsets {offsets} do not hold {shape} {dtype} in {len(data)} bytes"
        )
    if nbytes == 0:
        return torch.empty(shape, dtype=dtype)
    return torch.frombuffer(data, dtype=torch.uint8, count=nbytes, offset=begin).view(dtype).reshape(shape)
