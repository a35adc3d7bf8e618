"""Naming a failed item: which of its files failed, and the errors raised for fills, rounds and reads.

An item names several files (``{"image": ..., "label": ...}``); when one fails, the message must
name that one, not the item's first. :func:`failed_file` finds it from the exception (an
``OSError``'s ``filename``, else the item's file named in the messages of the exception chain).
:func:`run_suffix` and :func:`run_batch` run the random suffix on a read and turn a failure into a
:class:`~fastpipe.cache.errors.TransformError` naming the item index, the file and the transform.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from fastpipe._meta import META_SUFFIX, item_name
from fastpipe._tensors import map_tensors
from fastpipe.cache.errors import ItemError, TransformError, item_error
from fastpipe.profiling.nvtx_ranges import transform_name
from fastpipe.transforms.compose import apply_transform

_CHAIN_DEPTH = 8  # causes/contexts looked through for a file name


def _files(item: Any) -> dict[str, str]:
    """``key -> path`` for every file the item names (inputs, and ``filename_or_obj`` of its meta dicts)."""
    if not isinstance(item, dict):
        return {}
    files: dict[str, str] = {}
    for k, v in item.items():
        if isinstance(v, (str, os.PathLike)) and _looks_like_path(os.fspath(v)):
            files.setdefault(str(k), os.fspath(v))
        elif str(k).endswith(META_SUFFIX) and isinstance(v, dict) and v.get("filename_or_obj"):
            files.setdefault(str(k)[: -len(META_SUFFIX)], str(v["filename_or_obj"]))
    return files


def _looks_like_path(s: Any) -> bool:
    """A folder in it, or a name with an extension: not a word such as ``"ct"`` that any message may hold."""
    return isinstance(s, str) and ("/" in s or os.sep in s or "." in os.path.basename(s).strip("."))


def _chain(err: BaseException) -> list[BaseException]:
    out: list[BaseException] = []
    e: BaseException | None = err
    while e is not None and len(out) < _CHAIN_DEPTH and e not in out:
        out.append(e)
        e = e.__cause__ or e.__context__
    return out


def failed_file(item: Any, err: BaseException) -> tuple[str | None, str]:
    """``(key, file)`` of the item's file that ``err`` is about; ``(None, item_name(item))`` when unknown.

    Example:
        >>> failed_file({"image": "/d/i.nii.gz", "label": "/d/l.nii.gz"}, ValueError("/d/l.nii.gz: truncated"))
        ('label', '/d/l.nii.gz')
    """
    files = _files(item)
    chain = _chain(err)
    for e in chain:
        name = getattr(e, "file", None) if isinstance(e, ItemError) else getattr(e, "filename", None)
        for key, path in files.items():
            if name is not None and str(name) in (path, os.path.abspath(path)):
                return _fullest(files, key)
    texts = [str(e) for e in chain]
    found = [(len(p), k) for k, p in files.items() if any(p in t for t in texts)]
    if found:
        return _fullest(files, max(found)[1])  # the longest: "/d/a.nii" is inside "/d/a.nii.gz"
    return None, item_name(item)


def _fullest(files: dict[str, str], key: str) -> tuple[str, str]:
    """The longest path naming the same file as ``files[key]`` (a bare name vs its meta dict's path).

    Two paths name the same file when they are equal or one ends with the other after a separator
    (``spleen_2.nii.gz`` and ``/d/imagesTr/spleen_2.nii.gz``); a shared file name in two folders
    (``imagesTr/spleen_2.nii.gz``, ``labelsTr/spleen_2.nii.gz``: the MSD layout) is two files.
    """
    path = os.path.normpath(files[key])
    same = [(len(p), k) for k, p in files.items() if _same_file(os.path.normpath(p), path)]
    key = max(same)[1]
    return key, files[key]


def _same_file(a: str, b: str) -> bool:
    return a == b or a.endswith(os.sep + b) or b.endswith(os.sep + a)


def describe_failure(index: Any, item: Any, err: BaseException) -> str:
    """``item 3 (/data/lab3.nii.gz, key 'label'): ValueError: ...`` for logs and errors.

    The key is named when the item holds more than one file.
    """
    key, name = failed_file(item, err)
    paths = [os.path.normpath(p) for p in _files(item).values()]
    several = any(not _same_file(p, paths[0]) for p in paths[1:])
    where = f"{name}, key {key!r}" if key is not None and several else name
    return f"item {index} ({where}): {type(err).__name__}: {err}"


def failure(base: type[ItemError], what: str, index: Any, item: Any, err: BaseException) -> ItemError:
    """``base`` (also an instance of ``type(err)``) with message ``"{what} {describe_failure(...)}"``."""
    key, name = failed_file(item, err)
    return item_error(
        base, f"{what} {describe_failure(index, item, err)}", err, index=index, file=name, key=key
    )


def _read_error(err: Exception, transform: Any, index: Any, items: Sequence[Any]) -> ItemError:
    name = transform_name(transform)
    if isinstance(index, list):
        names = ", ".join(failed_file(it, err)[1] for it in items)
        message = f"{name} failed on the batch of items {index} ({names}): {type(err).__name__}: {err}"
        return item_error(TransformError, message, err, index=index, file=names, transform=name)
    key, file = failed_file(items[0], err)
    message = f"{name} failed reading {describe_failure(index, items[0], err)}"
    return item_error(TransformError, message, err, index=index, file=file, key=key, transform=name)


def run_suffix(suffix: Sequence[Any], entry: Any, index: int) -> Any:
    """Run the transforms of ``suffix`` on the entry of item ``index``.

    Raises:
        TransformError: a transform failed; also an instance of the error's own type (see
            :mod:`fastpipe.cache.errors`), naming the item index, its file and the transform.
    """
    for t in suffix:
        item = entry
        try:
            entry = apply_transform(t, entry)
        except Exception as err:  # noqa: BLE001 - re-raised naming the item
            first = item[0] if isinstance(item, list) and item else item
            raise _read_error(err, t, index, [first]) from err
    return entry


def batch_step_error(err: Exception, transform: Any, entries: list[Any], indices: list[int]) -> ItemError:
    """The :class:`TransformError` for a step after a batched op failing on the batch of ``indices``."""
    return _read_error(err, transform, list(indices), entries)


def run_batch(transform: Any, entries: list[Any], indices: list[int]) -> Any:
    """``transform.batch_call(entries)``; a failure raises :class:`TransformError` naming the batch."""
    try:
        return transform.batch_call(entries)
    except Exception as err:  # noqa: BLE001 - re-raised naming the items
        raise _read_error(err, transform, list(indices), entries) from err


def compute_uncached(core: Any, item: Any, index: int) -> Any:
    """``core.compute(item)`` for an item read without a cache entry, on the chain's device as a cached
    entry is read (a persistent entry loads on the CPU); a failure names the item."""
    try:
        entry = core.compute(item)
    except Exception as err:  # noqa: BLE001 - re-raised naming the item
        step = getattr(err, "fastpipe_failed_step", None)  # the prefix transform (CacheCore's FAILED_STEP)
        what = "the deterministic chain (item not cached) failed reading"
        error = failure(TransformError, f"{step} of {what}" if step else what, index, item, err)
        error.transform = step
        raise error from err
    if core.device.type == "cpu":
        return entry
    return map_tensors(entry, lambda t: t.to(core.device))
