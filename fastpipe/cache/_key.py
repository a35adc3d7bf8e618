"""Persistent-cache keys of input items: what the item's files hold, the chain, the version.

The key of an item is a sha256 of ``fastpipe.__version__`` and a hash of fastpipe's sources
(:func:`code_version`), the entry format, the chain fingerprint
(:func:`fastpipe.cache._fingerprint.chain_fingerprint`) and the item: every string (or path) value that
names an existing regular file (``~`` expanded, as loaders expand it) stands for that file, one that
names a folder for every file under it, a tuple apart from a list (a transform can tell them apart,
and an entry hands the value on as it was), every other value for its
:func:`~fastpipe.cache._fingerprint.fingerprint`. How a file stands in the key is ``persist_key``:

- ``"content"`` (default): its absolute path and a blake2b hash of its bytes (the compressed bytes of a
  ``.nii.gz``: hashing is cheap beside decoding them). Any change of content changes the key, whatever
  the file's times say. It costs one read of every source file per item per run, cache hit or not.
- ``"stat"``: its absolute path, size, mtime, ctime and inode; no read. An edit restoring size and mtime
  (``cp -p``, ``rsync -a``, ``tar x``) still changes the ctime, which no user-space tool can set back,
  so it is caught on a local POSIX filesystem, at the filesystem's timestamp granularity (a few
  milliseconds on Linux). A filesystem that does not keep ctime (some network and FUSE filesystems)
  can serve a stale entry. Copying or moving the data set, or a ``chmod``, invalidates every entry.

A file that is the header of a two-file image (a NIfTI/Analyze ``.hdr``/``.img`` pair, a MetaImage
``.mhd``, a detached NRRD ``.nhdr``) also stands for its data files, in either mode (see
:func:`companion_files`): one file, a ``LIST`` of slice files, or the files a printf pattern names.
A string naming a folder (a DICOM series, say) stands for the relative name and state of every file
under it, in either mode: a file added, removed, renamed or changed inside changes the key.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastpipe.cache._fingerprint import UnfingerprintableError, fingerprint

PERSIST_KEYS = ("content", "stat")
#: fastpipe's own sources: they enter the version of a key (an edit without a version bump, a git pull)
_PACKAGE_ROOT = Path(__file__).resolve().parent.parent
_FORMAT = "fpc2"
_CHUNK = 1 << 20
_HEADER = 1 << 16  # MetaImage and NRRD headers are text lines: a .mha/.nrrd's voxels follow them
#: header/data pairs read as one image: the data file keys the item with the header (and back)
_PAIRS = {".hdr.gz": ".img.gz", ".img.gz": ".hdr.gz", ".hdr": ".img", ".img": ".hdr"}
#: headers that may name their data files elsewhere: MetaImage's ``ElementDataFile =``, NRRD's ``data file:``
_MHD = re.compile(rb"^[ \t]*ElementDataFile[ \t]*=[ \t]*(\S[^\r\n]*?)[ \t\r]*$", re.MULTILINE)
_NRRD = re.compile(rb"^[ \t]*data ?file[ \t]*:[ \t]*(\S[^\r\n]*?)[ \t\r]*$", re.MULTILINE)
_DETACHED = {".mhd": _MHD, ".mha": _MHD, ".nhdr": _NRRD, ".nrrd": _NRRD}
#: a printf integer field of a file-name pattern (``slice_%03d.raw``)
_PRINTF_INT = re.compile(r"%[-+ #0]*\d*[diu]")


@dataclass(frozen=True)
class EntryOwner:
    """Whose a persistent entry is: its key, the item's index (informative) and its source files."""

    key: str
    index: int | None
    sources: tuple[str, ...]


def check_persist_key(persist_key: str) -> str:
    """``persist_key`` if it is one of :data:`PERSIST_KEYS`, else a ``ValueError``."""
    if persist_key not in PERSIST_KEYS:
        raise ValueError(f"persist_key must be one of {PERSIST_KEYS}, got {persist_key!r}")
    return persist_key


def entry_owner(
    item: Any, index: int | None, chain_fp: str, version: str, persist_key: str = "content"
) -> EntryOwner:
    """The :class:`EntryOwner` of ``item`` (its key and source files) under a chain and a version.

    Raises:
        ValueError: ``persist_key`` is not ``"content"`` or ``"stat"``, or a value of ``item`` cannot be
            fingerprinted.
        OSError: a source file cannot be read (``"content"``).
    """
    check_persist_key(persist_key)
    sources: list[str] = []
    text = _input_repr(item, persist_key, sources)
    key = hashlib.sha256(
        f"{version}|{_FORMAT}|{chain_fp}|{text}".encode("utf-8", "surrogateescape")
    ).hexdigest()
    return EntryOwner(key, index, tuple(sources))


@functools.cache
def code_version() -> str:
    """``fastpipe.__version__`` plus a hash of fastpipe's Python sources, read once per process.

    The version alone is not bumped by a ``git pull`` or an edit of an editable install, yet a fixed
    transform computes other values: its old entries must not be reused.
    """
    from fastpipe import __version__

    h = hashlib.blake2b(digest_size=8)
    for root, dirs, names in os.walk(_PACKAGE_ROOT):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in sorted(n for n in names if n.endswith(".py")):
            path = os.path.join(root, name)
            h.update(os.path.relpath(path, _PACKAGE_ROOT).encode() + b"\0")
            with open(path, "rb") as f:
                h.update(f.read())
    return f"{__version__}+src.{h.hexdigest()}"


def item_snapshot(item: Any) -> Any:
    """``item``'s mappings and sequences copied (as dicts and lists: the same key), their values shared:
    the item as it is now, for a key taken again after a compute whose first transform assigns into
    the item (``d["image"] = load(...)``).
    """
    if isinstance(item, Mapping):
        return {k: item_snapshot(v) for k, v in item.items()}
    if isinstance(item, tuple):  # a tuple stays one: it keys apart from a list (see _input_repr)
        return tuple(item_snapshot(v) for v in item)
    if isinstance(item, Sequence) and not isinstance(item, (str, bytes, bytearray)):
        return [item_snapshot(v) for v in item]
    return item


def item_key(item: Any, chain_fp: str, version: str, persist_key: str = "content") -> str:
    """The cache key of one input item under a chain fingerprint and a fastpipe version."""
    return entry_owner(item, None, chain_fp, version, persist_key).key


def _input_repr(value: Any, persist_key: str, sources: list[str], where: str = "item") -> str:
    """The text of ``value`` in an item's key; ``where`` names it in errors (``item['meta'][0]``)."""
    if isinstance(value, (str, os.PathLike)):
        path = os.path.expanduser(
            os.fspath(value)
        )  # "~/a.nii.gz": loaders expand it (MONAI's LoadImaged does)
        if os.path.isfile(path):
            path = os.path.abspath(path)
            parts = []
            for name in (path, *companion_files(path)):  # a header's data file changes the item too
                sources.append(name)
                parts.append(f"file({name},{_file_state(name, persist_key)})")
            return "+".join(parts)
        if os.path.isdir(path):  # a series folder (DICOM): every file in it, by relative name
            path = os.path.abspath(path)
            sources.append(path)
            files = sorted(os.path.join(root, name) for root, _, names in os.walk(path) for name in names)
            states = ",".join(f"{os.path.relpath(f, path)}={_member_state(f, persist_key)}" for f in files)
            return f"dir({path},[{states}])"
    if isinstance(value, Mapping):  # a dict, or a config's mapping (OmegaConf's DictConfig)
        # a key by its fingerprint (type and value): {1: v} is not {"1": v}, as a transform sees them
        keyed = sorted(((_value_fp(k, f"a key of {where}"), k) for k in value), key=lambda p: p[0])
        parts = (f"{fp}:{_input_repr(value[k], persist_key, sources, f'{where}[{k!r}]')}" for fp, k in keyed)
        return "{" + ",".join(parts) + "}"
    if isinstance(value, (str, bytes, bytearray)) or not isinstance(value, Sequence):
        return _value_fp(value, where)
    text = ",".join(_input_repr(v, persist_key, sources, f"{where}[{i}]") for i, v in enumerate(value))
    # a tuple keys apart from a list: a transform may tell them apart, and an entry passes the value on
    # as it is (a list run's entry would serve a list to the tuple's item)
    return f"({text})" if isinstance(value, tuple) else f"[{text}]"


def _value_fp(value: Any, where: str) -> str:
    """The fingerprint of an item's value; a value that has none names its place in the item."""
    try:
        return fingerprint(value, where)
    except UnfingerprintableError as err:
        raise UnfingerprintableError(
            f"cannot key this item for the persistent cache: {err}. Give the item plain values "
            "(paths, numbers, strings, arrays) or do not pass persist_dir"
        ) from None


def companion_files(path: str) -> list[str]:
    """The files that hold the data of header file ``path``, when they exist: the ``.img`` of a
    NIfTI/Analyze ``.hdr`` (and the ``.hdr`` of an ``.img``, gzipped pairs too), the data files a MetaImage
    ``.mhd``/``.mha`` or an NRRD ``.nhdr``/``.nrrd`` names. A reader of the header reads them, so they key the item.
    """
    lower = path.lower()
    for suffix, other in _PAIRS.items():
        if lower.endswith(suffix):
            stem = path[: -len(suffix)]
            return [p for p in dict.fromkeys((stem + other, stem + other.upper())) if os.path.isfile(p)][:1]
    for suffix, pattern in _DETACHED.items():
        if lower.endswith(suffix):
            return _data_files(path, pattern)
    return []


def _data_files(path: str, pattern: re.Pattern[bytes]) -> list[str]:
    """The existing data files the data-file field of header ``path`` names, relative to its folder: one
    file; ``LIST`` (the lines after the field, one file each); or a printf pattern with its range
    (``slice_%03d.raw 1 40 1``), for which every file of its folder the pattern can name stands.
    """
    with open(path, "rb") as f:
        head = f.read(_HEADER)
        if pattern is _NRRD:  # an attached NRRD's header ends at its first blank line; its data follows
            head = re.split(rb"\r?\n\r?\n", head, maxsplit=1)[0]
        found = pattern.search(head)
        if not found:
            return []
        value = found.group(1).decode("utf-8", "replace")
        folder = os.path.dirname(path)
        if value.split()[0] == "LIST":  # a header of names only: read to its end
            rest = (head[found.end() :] + f.read()).decode("utf-8", "replace")
            names = [line.strip() for line in rest.splitlines() if line.strip()]
        elif "%" in value and not os.path.isfile(os.path.join(folder, value)):
            names = _pattern_matches(folder, value.split()[0])
        else:
            names = [value]
    files = (os.path.join(folder, name) for name in names)
    return [p for p in dict.fromkeys(files) if p != path and os.path.isfile(p)]


def _pattern_matches(folder: str, pattern: str) -> list[str]:
    """The names (relative to ``folder``) of the files that ``pattern``'s integer fields can print: a
    superset of the range the header gives, so a file of the range that changes, comes or goes changes the key."""
    sub, name = os.path.split(pattern)
    regex = re.compile(r"-?\d+".join(re.escape(part) for part in _PRINTF_INT.split(name)))
    try:
        names = sorted(os.listdir(os.path.join(folder, sub)))
    except OSError:
        return []
    return [os.path.join(sub, n) for n in names if regex.fullmatch(n)]


def _member_state(path: str, persist_key: str) -> str:
    """The state of a file found in a folder; one that cannot be read (a dangling link, no permission)
    by its error, as a series reader that skips it sees it (ITK's), not a failed fill."""
    try:
        return _file_state(path, persist_key)
    except OSError as err:
        return f"unreadable:{type(err).__name__}"


def _file_state(path: str, persist_key: str) -> str:
    if persist_key == "stat":
        st = os.stat(path)
        return f"{st.st_size},{st.st_mtime_ns},{st.st_ctime_ns},{st.st_ino}"
    h = hashlib.blake2b(digest_size=32)
    buf = bytearray(_CHUNK)
    view = memoryview(buf)
    with open(path, "rb") as f:
        while n := f.readinto(buf):
            h.update(view[:n])
    return f"blake2b:{h.hexdigest()}"
