"""The fingerprint walker: one walk over an object, hashing what determines a transform's output.

See :mod:`fastpipe.cache._fingerprint` for what is hashed and how; the code half (functions, classes)
is :mod:`fastpipe.cache._fingerprint_code`.
"""

from __future__ import annotations

import collections
import enum
import functools
import hashlib
import sys
import types
from typing import Any

import numpy as np
import torch

from fastpipe.cache._fingerprint_base import (
    _ADDRESS,
    _BUILTIN_CALLABLES,
    _NAMES,
    _PER_CALL_STATE,
    _PLAIN,
    _RANDOM_STATES,
    _STATE_TYPES,
    MAX_DEPTH,
    MAX_NODES,
    UnfingerprintableError,
    _qualname,
    library_of,
)
from fastpipe.cache._fingerprint_code import CodeWalk


class Walker(CodeWalk):
    """One walk: a hash, a count of parts, and the objects seen (a revisit hashes as a back reference)."""

    def __init__(self) -> None:
        self._hash = hashlib.blake2b(digest_size=32)
        self._nodes = 0
        self._seen: dict[int, int] = {}
        self._keep: list[Any] = []  # seen objects stay alive, so an id is never reused during the walk

    def hexdigest(self) -> str:
        return self._hash.hexdigest()

    def _subdigest(self, obj: Any, path: str, depth: int) -> str:
        """The digest of ``obj`` alone (to sort dict keys and set items), counted in this walk's bounds."""
        sub = Walker()
        sub._nodes = self._nodes
        sub.walk(obj, path, depth)
        self._nodes = sub._nodes
        return sub.hexdigest()

    def emit(self, token: str) -> None:
        self._hash.update(token.encode("utf-8", "surrogatepass") + b"\0")

    def walk(self, obj: Any, path: str, depth: int) -> None:
        self._nodes += 1
        if depth > MAX_DEPTH or self._nodes > MAX_NODES:
            limit = f"nested deeper than {MAX_DEPTH}" if depth > MAX_DEPTH else f"more than {MAX_NODES} parts"
            raise UnfingerprintableError(f"{path}: {limit} (cannot be fingerprinted)")
        t = type(obj)
        if isinstance(obj, enum.Enum):
            self.emit(f"enum:{_qualname(t)}.{obj.name}")
            if library_of(t.__module__) is None:  # an enum of your own: its values are yours to edit
                self.walk(obj.value, f"{path}.value", depth + 1)
            return None
        if t in _PLAIN or isinstance(obj, _NAMES):
            return self.emit(f"{t.__name__}:{obj!r}")
        if isinstance(obj, _PLAIN):  # a subclass of a plain type: its class and plain value
            base = next(b for b in _PLAIN if isinstance(obj, b))
            return self.emit(f"{_qualname(t)}:{base.__repr__(obj)}")
        if t is object:  # a bare sentinel: no state
            return self.emit("object()")
        if isinstance(obj, _RANDOM_STATES):  # a deterministic prefix draws nothing from it
            return self.emit(f"random-state:{_qualname(t)}")
        if isinstance(obj, _STATE_TYPES):
            return self.emit(f"state:{_qualname(t)}")
        if isinstance(obj, np.generic):
            return self.emit(f"np:{obj.dtype.str}:{obj.tobytes().hex()}")
        if id(obj) in self._seen:
            return self.emit(f"ref:{self._seen[id(obj)]}")
        self._seen[id(obj)] = len(self._seen)
        self._keep.append(obj)
        self._dispatch(obj, path, depth + 1)

    def _dispatch(self, obj: Any, path: str, depth: int) -> None:
        if isinstance(obj, torch.Tensor):
            return self._tensor(obj, path, depth)
        if isinstance(obj, np.ndarray):
            return self._array(obj, path, depth)
        if isinstance(obj, (list, tuple, dict, set, frozenset)):
            return self._container(obj, path, depth)
        if isinstance(obj, functools.partial):
            self.emit("partial")
            for name in ("func", "args", "keywords"):
                self.walk(getattr(obj, name), f"{path}.{name}", depth)
            return None
        self._callable_or_object(obj, path, depth)

    def _callable_or_object(self, obj: Any, path: str, depth: int) -> None:
        if isinstance(obj, types.MethodType):
            self.walk(obj.__func__, f"{path}.__func__", depth)
            return self.walk(obj.__self__, f"{path}.__self__", depth)
        if isinstance(obj, types.FunctionType):
            return self._function(obj, path, depth)
        if isinstance(obj, types.ModuleType):
            return self.emit(f"module:{obj.__name__}:{library_of(obj.__name__)}")
        if isinstance(obj, _BUILTIN_CALLABLES):
            self.emit(f"lib:{_qualname(obj)}:{library_of(getattr(obj, '__module__', None))}")
            owner = getattr(obj, "__self__", None)  # a builtin method bound to an object: the object too
            if owner is not None and not isinstance(owner, (types.ModuleType, type)):
                self.walk(owner, f"{path}.__self__", depth)
            return None
        if isinstance(obj, type):
            return self._class(obj, path, depth)
        if isinstance(obj, types.CodeType):
            return self._code(obj, path, depth)
        self._object(obj, path, depth)

    def _tensor(self, t: torch.Tensor, path: str, depth: int) -> None:
        data = t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy()
        digest = hashlib.blake2b(data, digest_size=16).hexdigest()
        self.emit(f"tensor:{_qualname(type(t))}:{t.dtype}:{tuple(t.shape)}:{digest}")
        meta = getattr(t, "meta", None)
        if isinstance(meta, dict):  # a MONAI MetaTensor: its affine and metadata shape the output too
            self.walk(dict(meta), f"{path}.meta", depth)
            for name in ("applied_operations", "pending_operations"):
                self.walk(list(getattr(t, name, None) or ()), f"{path}.{name}", depth)

    def _array(self, a: np.ndarray, path: str, depth: int) -> None:
        if a.dtype.hasobject:
            self.emit(f"ndarray-object:{a.shape}")
            return self.walk(a.tolist(), f"{path}.tolist()", depth)
        digest = hashlib.blake2b(np.ascontiguousarray(a).tobytes(), digest_size=16).hexdigest()
        self.emit(f"ndarray:{a.dtype.str}:{a.shape}:{digest}")

    def _container(self, obj: Any, path: str, depth: int) -> None:
        """A list, tuple, dict or set: its items; of a subclass, also its class (the code of one of your
        own) and attributes (``defaultdict.default_factory``), best effort as private attributes."""
        if isinstance(obj, (list, tuple)):
            self.emit(f"{_qualname(type(obj))}[{len(obj)}")
            for i, v in enumerate(obj):
                self.walk(v, f"{path}[{i}]", depth)
            self.emit("]")
        elif isinstance(obj, dict):
            self._mapping(obj, path, depth)
        else:
            tokens = sorted(self._subdigest(v, f"{path} item", depth) for v in obj)
            self.emit(f"{_qualname(type(obj))}{{{','.join(tokens)}}}")
        if type(obj) in (list, tuple, dict, set, frozenset):
            return
        extras = {"__class__": type(obj), **getattr(obj, "__dict__", {})}
        if isinstance(obj, collections.defaultdict):
            extras["default_factory"] = obj.default_factory
        for name, value in sorted(extras.items(), key=lambda kv: str(kv[0])):
            self._private(str(name), value, f"{path}.{name}", depth)

    def _mapping(self, obj: dict, path: str, depth: int) -> None:
        keyed = sorted(((self._subdigest(k, f"{path} key", depth), k) for k in obj), key=lambda p: p[0])
        self.emit(f"{_qualname(type(obj))}{{{len(keyed)}")
        for token, k in keyed:
            self.emit(token)
            self.walk(obj[k], f"{path}[{k!r}]", depth)
        self.emit("}")

    def _object(self, obj: Any, path: str, depth: int) -> None:
        cls = type(obj)
        self.walk(cls, f"{path}.__class__", depth)
        attrs = _public_attributes(obj)
        if isinstance(obj, torch.nn.Module):  # weights and submodules live in private dicts
            attrs.update({"state_dict()": obj.state_dict(), "children()": dict(obj.named_children())})
        if not attrs and not hasattr(obj, "__dict__"):
            text = repr(obj)
            if _ADDRESS.search(text):
                raise UnfingerprintableError(
                    f"{path} is a {_qualname(cls)} without attributes or a stable repr ({text[:60]})"
                )
            return self.emit(f"repr:{text}")
        for name in sorted(attrs):
            self.emit(f"attr:{name}")
            self.walk(attrs[name], f"{path}.{name}", depth)
        wrapped = getattr(obj, "__dict__", {}).get("__wrapped__")
        if wrapped is not None:  # functools.lru_cache, functools.wraps: the function it calls
            self.emit("wraps")
            self.walk(wrapped, f"{path}.__wrapped__", depth)
        for name, value in sorted(_private_attributes(obj).items()):
            self._private(name, value, f"{path}.{name}", depth)

    def _private(self, name: str, value: Any, path: str, depth: int, owner: str = "") -> None:
        """A private attribute (of an object, or class-level data of a class of your own), best effort.

        Libraries keep settings there (MONAI's LoadImaged holds every option in ``_loader``, Spacingd
        its ``_lazy``), and so do user classes (``_SCALE = 2``), so they must change the key; a part
        that cannot be hashed (a handle, a lock inside a cache) stands for its type instead of refusing
        the chain, and state made on first use (MONAI's thread-local ``_tracing``) is left out.
        """
        if isinstance(value, (*_STATE_TYPES, *_RANDOM_STATES)):
            return None
        try:
            token = self._subdigest(value, path, depth)
        except UnfingerprintableError:
            token = f"opaque:{_qualname(type(value))}"
        self.emit(f"private:{owner}.{name}:{token}" if owner else f"private:{name}:{token}")


def _public_attributes(obj: Any) -> dict[str, Any]:
    attrs = {k: v for k, v in getattr(obj, "__dict__", {}).items() if not str(k).startswith("_")}
    for klass in type(obj).__mro__:
        slots = vars(klass).get("__slots__", ())
        for name in [slots] if isinstance(slots, str) else slots:
            if not name.startswith("_") and hasattr(obj, name):
                attrs[name] = getattr(obj, name)
    for qualname, names in _PER_CALL_STATE.items():
        module, _, cls = qualname.rpartition(".")
        klass = getattr(sys.modules.get(module), cls, None)  # only once the library is imported
        if isinstance(klass, type) and isinstance(obj, klass):
            for name in names:
                attrs.pop(name, None)
    return attrs


def _private_attributes(obj: Any) -> dict[str, Any]:
    """``obj``'s ``_x`` attributes (not dunders, not name-mangled ``__x`` state), from ``__dict__`` and slots."""

    def private(name: str) -> bool:
        return name.startswith("_") and not name.startswith("__") and not name.endswith("__")

    attrs = {k: v for k, v in getattr(obj, "__dict__", {}).items() if isinstance(k, str) and private(k)}
    for klass in type(obj).__mro__:
        slots = vars(klass).get("__slots__", ())
        for name in [slots] if isinstance(slots, str) else slots:
            if private(name) and hasattr(obj, name):
                attrs[name] = getattr(obj, name)
    return attrs
