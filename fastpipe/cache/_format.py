"""The on-disk form of a persistent-cache entry: raw tensor bytes plus JSON, nothing that can run code.

File: ``MAGIC | payload length (8 bytes, little endian) | payload | crc32 of the payload (4 bytes)``.
The payload is in the safetensors layout (:mod:`fastpipe.cache._safetensors_layout`): every tensor (and numpy array) of the entry as raw bytes, and in its
string metadata one JSON document ``{"format", "key", "index", "sources", "tree"}``. ``key`` is the
entry's cache key, ``index`` and ``sources`` name the item it was computed from, and ``tree`` is the
entry with each tensor replaced by a reference to a stored tensor. Reading parses JSON and tensor
bytes only: a file from anyone who can write to the folder can at worst be rejected, never executed.

The tree encoding is tagged, so that what is read back is what was written, types included:

==========================================  =========================================================
value                                       JSON
==========================================  =========================================================
``None``, ``bool``, ``int``, ``str``        itself
``float``                                   itself; ``{"$float": "nan" | "inf" | "-inf"}`` if not finite
``list``                                    a JSON array
``tuple``                                   ``{"$tuple": [...]}``
``dict``                                    ``{"$dict": [[key, value], ...]}`` (keys: str, int, bool, None)
``torch.Tensor`` (exactly that type)        ``{"$tensor": "3"}``: stored tensor 3 (the same object once)
``numpy.ndarray`` / numpy scalar (numeric)  ``{"$ndarray": "4", "dtype": "<i8"}`` / ``{"$npscalar": ...}``
numpy string arrays / scalars (``S``, ``U``)  ``{"$npbytes": "5", "dtype": "|S80", "shape": [], "scalar": true}``
``torch.dtype``, ``torch.device``           ``{"$dtype": "float32"}``, ``{"$device": "cpu"}``
an enum of ``monai.utils.enums``            ``{"$enum": "SpaceKeys", "value": "RAS"}`` (also as a dict key)
a MONAI ``MetaTensor``                      ``{"$metatensor": "6", "meta": ..., "ops": ..., "is_batch": false}``
==========================================  =========================================================

Reading a MetaTensor or an enum imports ``monai.data`` / ``monai.utils.enums``, modules named here,
never by the file. Anything else (an object, a set, another enum, a string subclass, a numpy object
array) raises :class:`UnstorableEntryError` naming where it sits in the entry, when the entry is
written. Tensors are stored detached, on the CPU and contiguous: values, dtype and shape round-trip;
``requires_grad``, strides and memory shared between two different tensor objects do not.
"""

from __future__ import annotations

import enum
import importlib
import json
import math
import zlib
from typing import Any

import numpy as np
import torch

from fastpipe.cache._safetensors_layout import LayoutError, pack, unpack

MAGIC = b"FPCACHE2"
FORMAT = 2
_HEAD = len(MAGIC) + 8
_DICT_KEYS = (str, int, bool, type(None))
_ENUM_MODULE = "monai.utils.enums"  # the only module whose enums entries hold (MONAI meta dicts)
_TAG_KEYS = {
    "$ndarray": ("dtype",), "$npscalar": ("dtype",), "$npbytes": ("dtype", "shape", "scalar"),
    "$enum": ("value",), "$metatensor": ("meta", "ops", "is_batch"),
}  # fmt: skip


class UnstorableEntryError(ValueError):
    """An entry holds a value the persistent-cache format does not store (raised when writing)."""


class CorruptEntryError(ValueError):
    """A persistent-cache file is not a valid entry (raised when reading; never loaded)."""


def encode_entry(entry: Any, key: str, index: int | None, sources: list[str]) -> list[bytes | memoryview]:
    """The file of ``entry``, recorded as the entry of ``key`` for item ``index`` (``sources``), as buffers.

    Tensor bytes are not copied: write the buffers out before changing the entry's tensors in place.

    Raises:
        UnstorableEntryError: the entry holds a value the format does not store (the message says where).
    """
    enc = _Encoder()
    tree = enc.encode(entry, "entry")
    doc = {"format": FORMAT, "key": key, "index": index, "sources": list(sources), "tree": tree}
    try:
        parts = pack(enc.tensors, {"fastpipe": json.dumps(doc, allow_nan=False)})
    except TypeError as err:
        raise UnstorableEntryError(str(err)) from None
    size = sum(len(p) if isinstance(p, bytes) else p.nbytes for p in parts)
    crc = 0
    for p in parts:
        crc = zlib.crc32(p, crc)
    return [MAGIC + size.to_bytes(8, "little"), *parts, crc.to_bytes(4, "little")]


def decode_entry(blob: bytes | bytearray | memoryview) -> tuple[Any, dict[str, Any]]:
    """``(entry, record)`` from file bytes; ``record`` holds ``key``, ``index`` and ``sources``.

    The entry's tensors are views of ``blob`` (pass a ``bytearray`` for writable tensors, no copy).

    Raises:
        CorruptEntryError: wrong magic (an older format included), length or checksum, or a payload
            that is not this format's safetensors + JSON.
    """
    mv = memoryview(blob).cast("B")
    if len(mv) < _HEAD + 4 or mv[: len(MAGIC)] != MAGIC:
        raise CorruptEntryError(f"not a {MAGIC.decode()} file (another format, or truncated)")
    n = int.from_bytes(mv[len(MAGIC) : _HEAD], "little")
    if len(mv) != _HEAD + n + 4:
        raise CorruptEntryError(f"payload length {n} does not match the file size {len(mv)} (truncated?)")
    payload = mv[_HEAD : _HEAD + n]
    if zlib.crc32(payload) != int.from_bytes(mv[_HEAD + n :], "little"):
        raise CorruptEntryError("checksum mismatch")
    try:
        tensors, metadata = unpack(payload)
        doc = json.loads(metadata["fastpipe"])
    except (LayoutError, KeyError, ValueError, RecursionError) as err:
        raise CorruptEntryError(f"unreadable payload ({type(err).__name__}: {err})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or "tree" not in doc:
        raise CorruptEntryError("payload metadata is not a fastpipe entry")
    try:
        entry = _Decoder(tensors).decode(doc["tree"])
    except CorruptEntryError:
        raise
    except (ValueError, TypeError, SyntaxError, RecursionError) as err:  # e.g. a shape not fitting its bytes
        raise CorruptEntryError(f"inconsistent entry ({type(err).__name__}: {err})") from None
    return entry, {k: doc.get(k) for k in ("key", "index", "sources")}


class _Encoder:
    """Walks an entry: tensors go to ``self.tensors``, the rest becomes tagged JSON."""

    def __init__(self) -> None:
        self.tensors: dict[str, torch.Tensor] = {}
        self._names: dict[int, tuple[str, Any]] = {}  # id(tensor) -> (name, tensor): one copy per object

    def encode(self, v: Any, where: str) -> Any:
        t = type(v)
        if v is None or t in (bool, int, str):
            return v
        if t is float:
            return v if math.isfinite(v) else {"$float": repr(v)}
        if t is list:
            return [self.encode(x, f"{where}[{i}]") for i, x in enumerate(v)]
        if t is tuple:
            return {"$tuple": [self.encode(x, f"{where}[{i}]") for i, x in enumerate(v)]}
        if t is dict:
            return {"$dict": [self._pair(k, x, where) for k, x in v.items()]}
        if t is torch.Tensor:
            return {"$tensor": self._store(v, where)}
        if t is np.ndarray or isinstance(v, np.generic):
            return self._numpy(v, where)
        if t is torch.dtype:
            return {"$dtype": str(v).removeprefix("torch.")}
        if t is torch.device:
            return {"$device": str(v)}
        if (t.__module__, t.__qualname__) == ("monai.data.meta_tensor", "MetaTensor"):
            return self._metatensor(v, where)
        if isinstance(v, enum.Enum) and t.__module__ == _ENUM_MODULE:
            return {"$enum": t.__qualname__, "value": self.encode(v.value, where)}
        raise UnstorableEntryError(
            f"{where} is a {t.__module__}.{t.__qualname__}, which the format does not store"
        )

    def _pair(self, k: Any, x: Any, where: str) -> list[Any]:
        if type(k) in _DICT_KEYS:
            return [k, self.encode(x, f"{where}[{k!r}]")]
        if isinstance(k, enum.Enum) and type(k).__module__ == _ENUM_MODULE:
            return [self.encode(k, where), self.encode(x, f"{where}[{k!r}]")]
        raise UnstorableEntryError(
            f"{where} has a key of type {type(k).__qualname__} (str/int/bool/None only)"
        )

    def _metatensor(self, v: Any, where: str) -> dict[str, Any]:
        """A MONAI ``MetaTensor``: its data, ``meta`` dict, ``applied_operations`` and ``is_batch``."""
        return {
            "$metatensor": self._store(v.as_tensor(), where),
            "meta": self.encode(dict(v.meta), f"{where}.meta"),
            "ops": self.encode(list(v.applied_operations), f"{where}.applied_operations"),
            "is_batch": bool(v.is_batch),
        }

    def _store(self, v: torch.Tensor, where: str) -> str:
        if id(v) in self._names:
            return self._names[id(v)][0]
        name = str(len(self.tensors))
        if v.is_sparse or v.is_quantized or v.layout != torch.strided:
            raise UnstorableEntryError(f"{where} is a {v.layout} tensor (dense tensors only)")
        self.tensors[name] = v.detach().cpu().resolve_conj().resolve_neg().contiguous()
        self._names[id(v)] = (name, v)  # keeps v alive, so its id is not reused during the walk
        return name

    def _numpy(self, v: Any, where: str) -> dict[str, Any]:
        arr = np.asarray(v)
        scalar = type(v) is not np.ndarray
        if arr.dtype.kind in "SU":  # fixed-width strings (NIfTI header fields): raw bytes
            raw = torch.from_numpy(np.frombuffer(np.ascontiguousarray(arr).tobytes(), dtype=np.uint8).copy())
            info = {"dtype": arr.dtype.str, "shape": list(arr.shape), "scalar": scalar}
            return {"$npbytes": self._store(raw, where), **info}
        if arr.dtype.kind not in "biufc":
            raise UnstorableEntryError(f"{where} is a numpy {arr.dtype} value (numbers and strings only)")
        tag = "$npscalar" if scalar else "$ndarray"
        native = np.array(arr, dtype=arr.dtype.newbyteorder("="), order="C")  # 0-d stays 0-d
        try:
            t = torch.from_numpy(native)
        except TypeError:  # longdouble, complex256: no torch dtype holds them
            raise UnstorableEntryError(f"{where} is a numpy {arr.dtype} value torch does not hold") from None
        return {tag: self._store(t, where), "dtype": arr.dtype.str}


class _Decoder:
    """The inverse of :class:`_Encoder`; anything it does not expect is a :class:`CorruptEntryError`."""

    def __init__(self, tensors: dict[str, torch.Tensor]) -> None:
        self.tensors = tensors

    def decode(self, v: Any) -> Any:
        if v is None or type(v) in (bool, int, float, str):
            return v
        if type(v) is list:
            return [self.decode(x) for x in v]
        if type(v) is not dict or not v:
            raise CorruptEntryError(f"unexpected JSON value {str(v)[:80]!r}")
        tag = next(iter(v))
        if set(v) != {tag, *_TAG_KEYS.get(tag, ())}:
            raise CorruptEntryError(f"unexpected JSON object {str(v)[:80]!r}")
        return self._tagged(tag, v[tag], v)

    def _tagged(self, tag: str, x: Any, v: dict[str, Any]) -> Any:
        if tag == "$float" and x in ("nan", "inf", "-inf"):
            return float(x)
        if tag == "$tuple" and type(x) is list:
            return tuple(self.decode(e) for e in x)
        if tag == "$dict" and type(x) is list:
            return {self._key(p): self.decode(p[1]) for p in x}
        if tag == "$tensor":
            return self._tensor(x)
        if tag in ("$ndarray", "$npscalar") and _numeric_dtype(v.get("dtype")):
            arr = self._tensor(x).numpy().astype(np.dtype(v["dtype"]), copy=False)
            return arr if tag == "$ndarray" else arr[()]
        if tag == "$dtype" and isinstance(getattr(torch, str(x), None), torch.dtype):
            return getattr(torch, x)
        if tag == "$device" and type(x) is str:
            return torch.device(x)
        if (
            tag == "$npbytes"
            and _string_dtype(v["dtype"])
            and _shape(v["shape"])
            and type(v["scalar"]) is bool
        ):
            arr = np.frombuffer(self._tensor(x).numpy().tobytes(), dtype=np.dtype(v["dtype"]))
            arr = arr.reshape(v["shape"])  # a size mismatch raises ValueError: corrupt
            return arr[()] if v["scalar"] else arr.copy()
        if tag == "$enum" and type(x) is str:
            return _monai_enum(x, self.decode(v["value"]))
        if tag == "$metatensor":
            return self._metatensor(x, v)
        raise CorruptEntryError(f"unexpected tag {tag!r}")

    def _metatensor(self, name: Any, v: dict[str, Any]) -> Any:
        meta, ops = self.decode(v["meta"]), self.decode(v["ops"])
        if type(meta) is not dict or type(ops) is not list or type(v["is_batch"]) is not bool:
            raise CorruptEntryError("bad MetaTensor record")
        out = _monai("monai.data").MetaTensor(self._tensor(name), meta=meta, applied_operations=ops)
        out.is_batch = v["is_batch"]
        return out

    def _key(self, pair: Any) -> Any:
        if type(pair) is not list or len(pair) != 2:
            raise CorruptEntryError(f"bad dict item {str(pair)[:80]!r}")
        key = pair[0] if type(pair[0]) in _DICT_KEYS else self.decode(pair[0])
        if type(key) not in _DICT_KEYS and not isinstance(key, enum.Enum):
            raise CorruptEntryError(f"bad dict key {str(pair[0])[:80]!r}")
        return key

    def _tensor(self, name: Any) -> torch.Tensor:
        if type(name) is not str or name not in self.tensors:
            raise CorruptEntryError(f"reference to a missing tensor {name!r}")
        return self.tensors[name]


def _monai(module: str) -> Any:
    """A MONAI module named here (never by a file) for MetaTensor and enum records."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise CorruptEntryError("the entry holds MONAI types but MONAI is not installed") from None


def _monai_enum(name: str, value: Any) -> enum.Enum:
    cls = getattr(_monai(_ENUM_MODULE), name, None) if name.isidentifier() else None
    if not (isinstance(cls, type) and issubclass(cls, enum.Enum)):
        raise CorruptEntryError(f"unknown enum {name!r}")
    try:
        return cls(value)
    except ValueError:
        raise CorruptEntryError(f"{value!r} is not a {name}") from None


def _shape(shape: Any) -> bool:
    return type(shape) is list and all(type(d) is int and d >= 0 for d in shape)


def _string_dtype(spec: Any) -> bool:
    try:
        return type(spec) is str and np.dtype(spec).kind in "SU"
    except (TypeError, ValueError, SyntaxError):  # numpy parses some dtype strings with ast
        return False


def _numeric_dtype(spec: Any) -> bool:
    try:
        return type(spec) is str and np.dtype(spec).kind in "biufc"
    except (TypeError, ValueError, SyntaxError):  # numpy parses some dtype strings with ast
        return False
