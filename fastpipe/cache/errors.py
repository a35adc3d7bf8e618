"""Errors for one bad data item: they name the item, and stay catchable by their cause's type.

When a transform fails on an item, fastpipe raises an :class:`ItemError` whose message names the
item index, the file that failed and (on reads) the transform, with the original exception chained
as ``__cause__``. The raised object is an instance of the fastpipe class *and* of the cause's class,
so code written for the bare transform keeps working: a ``ValueError`` from a corrupt file raised
during a cache fill is caught by ``except CacheFillError``, ``except RuntimeError`` and
``except ValueError`` alike. The combined classes are made once per pair and pickle (e.g. from a
``DataLoader`` worker process) by their two bases.

Not mixed in: ``StopIteration``/``StopAsyncIteration`` (an error must never end a loop silently),
and on reads ``IndexError``, which ends a plain ``for x in dataset`` loop as if the data were over.

Example:
    >>> err = item_error(CacheFillError, "cache fill failed on item 3 (a.nii.gz)", ValueError("bad dims"))
    >>> isinstance(err, ValueError), isinstance(err, CacheFillError), isinstance(err, RuntimeError)
    (True, True, True)
"""

from __future__ import annotations

import copyreg
import threading
from typing import Any

_NEVER_MIXED = (StopIteration, StopAsyncIteration)


class ItemError(Exception):
    """A transform failed on one data item.

    Args:
        message: what failed, naming the item and file.
        index: the item's index (a list of indices for a batch; default ``None``: unknown).
        file: the file that failed, or the item's name (default ``None``).
        key: the item key whose file failed, e.g. ``"label"`` (default ``None``: unknown).
        transform: name of the failing transform (default ``None``: unknown).

    ``category`` is the cause's class mixed into the raised class (``None`` for a plain one).
    """

    category: type[BaseException] | None = None
    not_mixed: tuple[type[BaseException], ...] = ()

    def __init__(
        self,
        message: str = "",
        index: Any = None,
        file: str | None = None,
        key: str | None = None,
        transform: str | None = None,
    ) -> None:
        super().__init__(message)
        self.index, self.file, self.key, self.transform = index, file, key, transform

    def __str__(self) -> str:  # KeyError and OSError would print their arguments otherwise
        return str(self.args[0]) if self.args else ""


class CacheFillError(ItemError, RuntimeError):
    """The deterministic chain failed on one item during a cache fill (the cause is chained)."""


class ReplacementError(ItemError, RuntimeError):
    """The deterministic chain failed on an item prepared for the next SmartCache round (cause chained)."""


class TransformError(ItemError, RuntimeError):
    """A transform failed while an item was read (the random suffix, or the prefix of an uncached item)."""

    not_mixed = (IndexError,)


class _Categorised(type):
    """Metaclass of the classes made by :func:`categorised_class`; they pickle by their two bases."""

    def __repr__(cls) -> str:
        category = cls.category.__name__ if cls.category else "?"
        return f"<class '{cls.__module__}.{cls.__name__}' (also {category})>"


_classes: dict[tuple[type, type], type] = {}
_classes_lock = threading.Lock()


def categorised_class(base: type[ItemError], category: type[BaseException] | None) -> type[ItemError]:
    """``base`` combined with ``category`` (made once per pair); ``base`` itself where they cannot mix.

    Args:
        base: an :class:`ItemError` subclass.
        category: the cause's class (default for an :class:`ItemError` cause: its own ``category``).
    """
    if category is not None and issubclass(category, ItemError):
        category = category.category
    if (
        category is None
        or not issubclass(category, Exception)
        or issubclass(category, _NEVER_MIXED + base.not_mixed)
        or issubclass(base, category)
    ):
        return base
    with _classes_lock:
        cls = _classes.get((base, category))
        if cls is None:
            try:
                cls = _Categorised(
                    base.__name__,
                    (base, category),
                    {"__module__": base.__module__, "__qualname__": base.__qualname__, "category": category},
                )
            except TypeError:  # e.g. a C exception type that cannot be subclassed
                cls = base
            _classes[(base, category)] = cls
    return cls


def _reduce_class(cls: type) -> tuple[Any, tuple[type, type | None]]:
    return categorised_class, (cls.__bases__[0], cls.category)


copyreg.pickle(_Categorised, _reduce_class)


def item_error(base: type[ItemError], message: str, cause: BaseException, **info: Any) -> ItemError:
    """An instance of ``base`` that is also an instance of ``type(cause)``, naming the item.

    Args:
        base: :class:`CacheFillError`, :class:`ReplacementError` or :class:`TransformError`.
        message: the full message.
        cause: the original exception (raise the result ``from cause``).
        **info: ``index``, ``file``, ``key``, ``transform`` (see :class:`ItemError`).
    """
    cls = categorised_class(base, type(cause))
    try:
        err = cls(message, **info)
    except Exception:  # noqa: BLE001 - a category whose __new__ wants other arguments: plain base
        return base(message, **info)
    if cls is not base:
        _copy_fields(cause, err)
    return err


def _copy_fields(cause: BaseException, err: ItemError) -> None:
    """Give ``err`` the cause's attributes (``errno``/``filename`` of an ``OSError``, custom fields)."""
    if isinstance(cause, OSError):
        err.errno, err.strerror, err.filename = cause.errno, cause.strerror, cause.filename
    own = {k: getattr(err, k) for k in ("index", "file", "key", "transform")}
    err.__dict__.update({k: v for k, v in getattr(cause, "__dict__", {}).items() if not k.startswith("__")})
    err.__dict__.update(own)
