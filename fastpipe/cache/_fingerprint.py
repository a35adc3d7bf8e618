"""Fingerprints of transforms for persistent-cache keys: a hash of what determines their output.

:func:`fingerprint` walks an object and hashes (blake2b):

- plain values (``None``, numbers, strings, bytes), enums, torch/numpy dtypes and devices: type and value;
- tensors and arrays: type, dtype, shape and a hash of their bytes (a MONAI ``MetaTensor`` also its
  ``meta`` dict, affine included, and its applied and pending operations);
- lists, tuples, dicts, sets: their items (dicts and sets in a sorted order); of a subclass, also its
  class and attributes (a ``defaultdict``'s factory), best effort as private attributes;
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

import hashlib
from typing import Any

import torch

from fastpipe._chain import unwrapped
from fastpipe.cache._fingerprint_base import (
    MAX_DEPTH,
    MAX_NODES,
    UnfingerprintableError,
    _qualname,
    library_of,
    reader_backend,
)
from fastpipe.cache._fingerprint_walk import Walker

__all__ = [
    "MAX_DEPTH", "MAX_NODES", "UnfingerprintableError", "chain_fingerprint", "fingerprint", "library_of",
    "reader_backend",
]  # fmt: skip


def fingerprint(obj: Any, name: str = "object") -> str:
    """A hex digest that changes whenever anything listed in the module docstring changes.

    Raises:
        UnfingerprintableError: ``obj`` holds something that cannot be hashed; the message names its path.
    """
    walker = Walker()
    walker.walk(obj, name, 0)
    return walker.hexdigest()


def chain_fingerprint(transforms: list[Any]) -> str:
    """The fingerprint of a deterministic chain (torch's version included); fastpipe's profiling
    wrappers are looked through (any other transform's ``.inner`` is one of its attributes).

    Raises:
        UnfingerprintableError: naming the transform (position and type) and the part that cannot be hashed.
    """
    # torch runs fastpipe's and MONAI's transforms alike: a new torch can compute other values
    parts = [f"torch=={torch.__version__}"]
    for i, t in enumerate(transforms):
        t = unwrapped(t)  # switching NVTX ranges on must not invalidate a persistent cache
        try:
            parts.append(fingerprint(t, f"transform {i} ({_qualname(type(t))})"))
        except UnfingerprintableError as err:
            raise UnfingerprintableError(
                f"cannot key a persistent cache on this chain: {err}. Make the attribute private "
                "(a leading underscore) if it does not change the output, or do not pass persist_dir"
            ) from None
    return hashlib.sha256("|".join(parts).encode()).hexdigest()
