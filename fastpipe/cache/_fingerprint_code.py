"""Fingerprints of code: functions (bytecode, constants, defaults, closures, the globals they read),
modules of your own, and classes of your own (methods and class-level data); library code by name and
version. A mixin of the walker (:mod:`fastpipe.cache._fingerprint_walk`).
"""

from __future__ import annotations

import functools
import types
from typing import Any

from fastpipe.cache._fingerprint_base import (
    _DATA_OR_CODE,
    _SKIP_CLASS_ATTRS,
    MAX_DEPTH,
    UnfingerprintableError,
    _qualname,
    library_of,
    reader_backend,
)


class CodeWalk:
    """The code half of the walker: ``walk``, ``emit``, ``_subdigest`` and ``_private`` are the walker's."""

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
            base_lib = library_of(klass.__module__)
            if base_lib is not None:  # inherited library code (a MONAI transform's __call__): its version
                self.emit(f"base:{_qualname(klass)}:{base_lib}{reader_backend(klass)}")
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


def _global_names(co: types.CodeType) -> set[str]:
    names = set(co.co_names)
    for const in co.co_consts:
        if isinstance(const, types.CodeType):
            names |= _global_names(const)
    return names
