"""Fingerprints of transforms for persistent-cache keys: a hash of what determines their output.

:func:`fingerprint` walks an object and hashes (blake2b):

- plain values (``None``, numbers, strings, bytes), enums, torch/numpy dtypes and devices: type and value;
- tensors and arrays: type, dtype, shape and a hash of their bytes (a MONAI ``MetaTensor`` also its
  ``meta`` dict, affine included, and its applied and pending operations);
- lists, tuples, dicts, sets: their items (dicts and sets in a sorted order);
- Python functions (lambdas, closures): bytecode, constants, names, defaults, keyword defaults, the
  contents of closure cells, and the values of the globals the code reads (functions it calls included,
  recursively);
- ``functools.partial``: function, arguments and keywords; bound methods: function and object;
- objects: their class and their attributes (``__dict__`` and ``__slots__``), recursively; a
  ``torch.nn.Module`` also its ``state_dict()``. Private attributes (``_x``) are hashed too, since
  libraries keep settings there (MONAI's ``LoadImaged`` holds every option in ``_loader``), but on a
  best-effort basis: a private part that cannot be hashed stands for its type. Known per-call state
  of library classes (:data:`_PER_CALL_STATE`: the file names a MONAI image reader read last) is left out;
- a user-defined class: the code of its methods and its class-level data (``_private`` names too,
  best effort, as for objects); library code (the standard library, or a package with a
  ``__version__``, such as fastpipe, MONAI, torch, numpy): its name and the package version instead
  (a MONAI image reader also the version of the package that decodes its files: nibabel, ITK...);
- random states (numpy, torch, ``random``): their type only, since a deterministic prefix draws nothing;
  likewise locks, events, threads, thread-local storage, queues, executors, loggers and open files
  (state, not parameters).

An object it cannot see into, i.e. one with no attributes whose ``repr`` holds a memory address (a C
handle such as a ``zlib`` compressor), or anything nested deeper than :data:`MAX_DEPTH` or larger than :data:`MAX_NODES` parts,
raises :class:`UnfingerprintableError` naming the path to it. A global value the code reads that is an
instance of a library class (a MONAI transform) is hashed as far as it can be, else by its type; a
module of your own that the code reads stands for its attributes the code names; a function under
``functools.lru_cache`` or ``functools.wraps`` for the function it wraps.

Example:
    >>> fingerprint(lambda x: x > 0) != fingerprint(lambda x: x > 0.9)
    True
"""

from __future__ import annotations

import concurrent.futures
import enum
import functools
import hashlib
import importlib
import io
import logging
import queue
import random
import re
import sys
import threading
import types
from typing import Any

import numpy as np
import torch

MAX_DEPTH = 24
MAX_NODES = 200_000
_ADDRESS = re.compile(r"(?: at|@) 0x[0-9a-fA-F]+")
_PLAIN = (bool, int, float, complex, str, bytes, type(None))
_NAMES = (torch.dtype, torch.device, np.dtype)
_BUILTIN_CALLABLES = (
    types.BuiltinFunctionType, types.MethodWrapperType, types.WrapperDescriptorType,
    types.MethodDescriptorType, types.ClassMethodDescriptorType, np.ufunc,
)  # fmt: skip
_DATA_OR_CODE = (
    type, types.FunctionType, types.ModuleType, functools.partial, enum.Enum, torch.Tensor, np.ndarray,
    np.generic, list, tuple, dict, set, frozenset, *_PLAIN, *_NAMES,
)  # fmt: skip
_RANDOM_STATES = (np.random.RandomState, np.random.Generator, torch.Generator, random.Random)
_STATE_TYPES = (  # synchronisation, logging, workers, open files: state, not parameters
    type(threading.Lock()), type(threading.RLock()), threading.Condition, threading.Event,
    threading.Semaphore, threading.Thread, threading.local, queue.Queue, concurrent.futures.Executor,
    logging.Logger, logging.Handler, io.IOBase,
)  # fmt: skip
#: Attributes that library classes set on every call (``module.Class`` -> names): left out of the
#: fingerprint, so using a transform before a dataset is built does not change the dataset's keys.
_PER_CALL_STATE = {"monai.data.image_reader.ImageReader": ("filenames",)}
#: image readers (``module.Class``) -> the package that decodes their files (its version keys them)
_READER_BACKENDS = {
    "monai.data.image_reader.NibabelReader": "nibabel",
    "monai.data.image_reader.ITKReader": "itk",
    "monai.data.image_reader.PydicomReader": "pydicom",
    "monai.data.image_reader.PILReader": "PIL",
    "monai.data.image_reader.NrrdReader": "nrrd",
    "fastpipe.transforms.io.LoadImaged": "nibabel",  # fastpipe's NIfTI reader parses headers with it
}
_SKIP_CLASS_ATTRS = {"__dict__", "__weakref__", "__module__", "__doc__", "__qualname__", "__slots__"}


class UnfingerprintableError(ValueError):
    """An object whose output-determining state cannot be hashed (so it cannot key a persistent cache)."""


def fingerprint(obj: Any, name: str = "object") -> str:
    """A hex digest that changes whenever anything listed in the module docstring changes.

    Raises:
        UnfingerprintableError: ``obj`` holds something that cannot be hashed; the message names its path.
    """
    walker = _Walker()
    walker.walk(obj, name, 0)
    return walker.hexdigest()


def chain_fingerprint(transforms: list[Any]) -> str:
    """The fingerprint of a deterministic chain (torch's version included); profiling wrappers
    (``.inner``) are looked through.

    Raises:
        UnfingerprintableError: naming the transform (position and type) and the part that cannot be hashed.
    """
    # torch runs fastpipe's and MONAI's transforms alike: a new torch can compute other values
    parts = [f"torch=={torch.__version__}"]
    for i, t in enumerate(transforms):
        t = getattr(t, "inner", t)  # switching NVTX ranges on must not invalidate a persistent cache
        try:
            parts.append(fingerprint(t, f"transform {i} ({_qualname(type(t))})"))
        except UnfingerprintableError as err:
            raise UnfingerprintableError(
                f"cannot key a persistent cache on this chain: {err}. Make the attribute private "
                "(a leading underscore) if it does not change the output, or do not pass persist_dir"
            ) from None
    return hashlib.sha256("|".join(parts).encode()).hexdigest()


def library_of(module: str | None) -> str | None:
    """``"numpy==2.1.0"``, ``"python3.11"`` for the standard library, or ``None`` for user code."""
    top = (module or "").split(".")[0]
    if top in sys.stdlib_module_names or top in ("builtins", "_operator", "_functools"):
        return f"python{sys.version_info[0]}.{sys.version_info[1]}"
    version = getattr(sys.modules.get(top), "__version__", None)
    return f"{top}=={version}" if isinstance(version, str) else None


def reader_backend(cls: type) -> str:
    """``"+nibabel==5.3.2"`` for a MONAI image reader class (or fastpipe's ``LoadImaged``) that decodes
    through that package, else ``""``.

    The reader's package decodes the voxels (nibabel's scaling, orientation): its version keys the
    entries a kept MONAI reader computed. A missing package stands as ``"absent"``.
    """
    package = _READER_BACKENDS.get(_qualname(cls))
    if package is None:
        return ""
    try:
        module = sys.modules.get(package) or importlib.import_module(package)
    except ImportError:
        return f"+{package}==absent"
    return f"+{package}=={getattr(module, '__version__', None)}"


def _qualname(obj: Any) -> str:
    return f"{getattr(obj, '__module__', None)}.{getattr(obj, '__qualname__', type(obj).__qualname__)}"


class _Walker:
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
        sub = _Walker()
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
            return self.emit(f"enum:{_qualname(t)}.{obj.name}")
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
        if isinstance(obj, (list, tuple)):
            self.emit(f"{_qualname(type(obj))}[{len(obj)}")
            for i, v in enumerate(obj):
                self.walk(v, f"{path}[{i}]", depth)
            return self.emit("]")
        if isinstance(obj, dict):
            return self._mapping(obj, path, depth)
        if isinstance(obj, (set, frozenset)):
            tokens = sorted(self._subdigest(v, f"{path} item", depth) for v in obj)
            return self.emit(f"{_qualname(type(obj))}{{{','.join(tokens)}}}")
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

    def _mapping(self, obj: dict, path: str, depth: int) -> None:
        keyed = sorted(((self._subdigest(k, f"{path} key", depth), k) for k in obj), key=lambda p: p[0])
        self.emit(f"{_qualname(type(obj))}{{{len(keyed)}")
        for token, k in keyed:
            self.emit(token)
            self.walk(obj[k], f"{path}[{k!r}]", depth)
        self.emit("}")

    def _function(self, fn: types.FunctionType, path: str, depth: int) -> None:
        lib = library_of(fn.__module__)
        self.emit(f"function:{_qualname(fn)}:{lib}")
        if lib is None:  # user code: what it computes (library code: its name and version say that)
            self._code(fn.__code__, path, depth)
            names = _global_names(fn.__code__)
            for name in sorted(names):
                if name in fn.__globals__:
                    self._global(name, fn.__globals__[name], f"{path}.<global {name}>", depth, names)
            self.walk(fn.__defaults__, f"{path}.__defaults__", depth)
            self.walk(fn.__kwdefaults__, f"{path}.__kwdefaults__", depth)
        for name, cell in zip(fn.__code__.co_freevars, fn.__closure__ or (), strict=True):
            try:
                value = cell.cell_contents
            except ValueError:  # an empty cell: a name not yet bound in the enclosing scope
                self.emit(f"empty-cell:{name}")
                continue
            if not self._own_module(value, f"{path}.<closure {name}>", depth, _global_names(fn.__code__)):
                self.walk(value, f"{path}.<closure {name}>", depth)

    def _global(self, name: str, value: Any, path: str, depth: int, names: set[str] = frozenset()) -> None:
        """A global the code reads. A module of your own also stands for its attributes the code names
        (``helpers.normalize(x)`` reads ``helpers.normalize``, and that function's globals in turn); an
        instance of a library class (a MONAI transform, a logger) is hashed as far as it can be, else
        by its type."""
        self.emit(f"global:{name}")
        if self._own_module(value, path, depth, names):
            return None
        if not isinstance(value, _DATA_OR_CODE) and library_of(type(value).__module__) is not None:
            try:
                token = self._subdigest(value, path, depth)
            except UnfingerprintableError:
                token = f"{_qualname(type(value))}"
            return self.emit(f"library-object:{token}")
        self.walk(value, path, depth)

    def _own_module(self, value: Any, path: str, depth: int, names: set[str]) -> bool:
        """Hash a module of your own (not a library) with its attributes among ``names``; ``False`` for anything else."""
        if not isinstance(value, types.ModuleType) or library_of(value.__name__) is not None:
            return False
        self.walk(value, path, depth)
        if depth < MAX_DEPTH:
            for attr in sorted(names):
                if not attr.startswith("__") and attr in vars(value):
                    self._global(attr, vars(value)[attr], f"{path}.{attr}", depth + 1, names)
        return True

    def _code(self, co: types.CodeType, path: str, depth: int) -> None:
        self.emit(f"code:{co.co_argcount}:{co.co_kwonlyargcount}:{co.co_flags}:{co.co_code.hex()}")
        self.emit(f"names:{co.co_names}:{co.co_varnames}:{co.co_freevars}:{co.co_cellvars}")
        for i, const in enumerate(co.co_consts):
            self.walk(const, f"{path}.<const {i}>", depth)

    def _class(self, cls: type, path: str, depth: int) -> None:
        lib = library_of(cls.__module__)
        self.emit(f"class:{_qualname(cls)}:{lib}{reader_backend(cls)}")
        if lib is not None:
            return
        for klass in cls.__mro__:
            if library_of(klass.__module__) is not None:
                continue
            for name, value in sorted(vars(klass).items()):
                value = value.fget if isinstance(value, property) else value
                value = value.__func__ if isinstance(value, (staticmethod, classmethod)) else value
                value = value.func if isinstance(value, functools.cached_property) else value
                if name in _SKIP_CLASS_ATTRS or name.startswith("__") and not callable(value):
                    continue
                if name.startswith("_") and not callable(value):  # ``_SCALE = 2``: a setting, best effort
                    self._private(name, value, f"{_qualname(klass)}.{name}", depth, klass.__qualname__)
                    continue
                self.emit(f"attr:{klass.__qualname__}.{name}")
                self.walk(value, f"{_qualname(klass)}.{name}", depth)

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


def _global_names(co: types.CodeType) -> set[str]:
    names = set(co.co_names)
    for const in co.co_consts:
        if isinstance(const, types.CodeType):
            names |= _global_names(const)
    return names
