"""What fingerprints are made of: the type tables, the error, and which code is a library's.

Shared by the walker (:mod:`fastpipe.cache._fingerprint_walk`) and its code half
(:mod:`fastpipe.cache._fingerprint_code`); the public entry points are in :mod:`fastpipe.cache._fingerprint`.
"""

from __future__ import annotations

import concurrent.futures
import enum
import functools
import importlib
import io
import logging
import os
import queue
import random
import re
import sys
import sysconfig
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
_SCRIPTS = ("__main__", "__mp_main__")
#: where the standard library's modules live (a module of that name elsewhere is the user's own)
_STDLIB_DIRS = tuple(
    {os.path.realpath(p) + os.sep for p in (sysconfig.get_paths()["stdlib"], os.path.dirname(os.__file__))}
)
_SKIP_CLASS_ATTRS = {"__dict__", "__weakref__", "__module__", "__doc__", "__qualname__", "__slots__"}


class UnfingerprintableError(ValueError):
    """An object whose output-determining state cannot be hashed (so it cannot key a persistent cache)."""


def library_of(module: str | None) -> str | None:
    """``"numpy==2.1.0"``, ``"python3.11"`` for the standard library, or ``None`` for user code.

    The script being run (``__main__``, ``__mp_main__`` in a spawned worker) is user code even when it
    sets a ``__version__``: its functions are hashed by their code, not by that version; so is a module
    of your own named like a standard-library one (``profile.py`` first on the path).
    """
    top = (module or "").split(".")[0]
    if top in _SCRIPTS:
        return None
    if top in ("builtins", "_operator", "_functools") or top in sys.stdlib_module_names and _in_stdlib(top):
        return f"python{sys.version_info[0]}.{sys.version_info[1]}"
    version = getattr(sys.modules.get(top), "__version__", None)
    return f"{top}=={version}" if isinstance(version, str) else None


def _in_stdlib(top: str) -> bool:
    """Whether the loaded module ``top`` is the standard library's (built in, or a file under its folder)."""
    path = getattr(sys.modules.get(top), "__file__", None)
    return path is None or _under_stdlib(path)


@functools.lru_cache(maxsize=1024)
def _under_stdlib(path: str) -> bool:
    return os.path.realpath(path).startswith(_STDLIB_DIRS)  # once per file: walks ask it for every function


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
