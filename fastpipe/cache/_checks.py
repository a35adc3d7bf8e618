"""Checks a dataset makes when it is built, so a user's first mistake fails at once and names itself.

- :func:`check_items`: a list of paths (or any non-dict item) where a keyed chain expects dicts.
- :func:`check_device_points`: a ``ToDeviced("cuda:0")`` in a chain on a machine without that GPU.
- :func:`check_items_left`: ``on_error="skip"`` that skipped every item.
- :func:`check_monai_only`: MONAI ``CacheDataset`` arguments fastpipe takes but does not act on.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch

from fastpipe.transforms.utility import device_point

#: The item shape a keyed chain (``LoadImaged(keys)`` and friends) expects, for error messages.
ITEM_SHAPE = "a dict per item, e.g. {'image': 'img1.nii.gz', 'label': 'seg1.nii.gz'} (MONAI's datalist)"


def _keyed(chain: Iterable[Any]) -> bool:
    """Whether some transform of the chain reads items by key (MONAI's dictionary transforms)."""
    return any(getattr(getattr(t, "inner", t), "keys", None) is not None for t in chain)


def check_items(items: Sequence[Any], chain: Iterable[Any]) -> None:
    """Raise ``TypeError`` for an item that is a path, or not a dict where the chain reads keys.

    Args:
        items: the data list as given (not a map-style dataset).
        chain: every transform of the chain, deterministic and random.

    Example:
        >>> check_items(["img1.nii.gz"], [])
        Traceback (most recent call last):
        ...
        TypeError: data item 0 is a str ('img1.nii.gz'), not a dict: ...
    """
    keyed = _keyed(chain)
    for i, item in enumerate(items):
        is_path = isinstance(item, (str, bytes, os.PathLike))
        if is_path or (keyed and not isinstance(item, Mapping)):
            raise TypeError(
                f"data item {i} is a {type(item).__name__} ({item!r:.80}), not a dict: the data list needs "
                f"{ITEM_SHAPE}; fastpipe.datasets.load_decathlon_datalist(folder) builds one from an MSD folder"
            )


def check_device_points(chain: Iterable[Any]) -> None:
    """Raise ``ValueError`` for a ``ToDeviced``/``EnsureTyped(device=...)`` on a CUDA device that is absent.

    Checked when the dataset is built, so a CPU-only torch fails here and not 50 lines into a cache
    fill, in an error that names a healthy data file.
    """
    for t in chain:
        dev = device_point(t)
        if dev is None or dev.type != "cuda":
            continue
        name = type(getattr(t, "inner", t)).__name__
        if not torch.cuda.is_available():
            raise ValueError(
                f"{name}({str(dev)!r}) but CUDA is not available (torch {torch.__version__}); "
                "use 'cpu' or drop the step"
            )
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise ValueError(
                f"{name}({str(dev)!r}) but this machine has {count} CUDA device(s) (cuda:0..cuda:{count - 1})"
            )


def check_items_left(kept: int, skipped: Mapping[int, str], total: int) -> None:
    """Raise ``ValueError`` when a fill with ``on_error="skip"`` left no item, saying what was skipped and why.

    Args:
        kept: items left after the fill.
        skipped: ``{index: message}`` of the items skipped (``FillReport.skipped``).
        total: items the fill was given.
    """
    if kept > 0 or not skipped:
        return
    shown = list(skipped.values())[:3]
    more = f"; ... and {len(skipped) - len(shown)} more" if len(skipped) > len(shown) else ""
    raise ValueError(
        f"on_error='skip' skipped all {len(skipped)} of {total} items, so the dataset is empty: "
        + "; ".join(shown)
        + more
    )


def check_monai_only(hash_as_key: bool, runtime_cache: Any) -> None:
    """Warn, saying what fastpipe does instead, for MONAI ``CacheDataset`` options it takes but does not act on.

    ``hash_as_key=True`` (one entry per distinct item) and ``runtime_cache`` (entries computed at first
    read, shared by processes) change only MONAI's memory and timing, never the values read, so a MONAI
    script runs; ``as_contiguous`` and ``hash_func`` alone need no word (same values, layout or unused).
    """
    notes = []
    if hash_as_key:
        notes.append(
            "hash_as_key=True: every item gets its own entry, duplicates included (MONAI's share one)"
        )
    if runtime_cache:
        notes.append(
            f"runtime_cache={runtime_cache!r}: the cache is filled when the dataset is made, by num_workers "
            "threads, and worker processes read it shared (MONAI computes entries at their first read)"
        )
    if notes:
        warnings.warn(
            "CacheDataset: " + "; ".join(notes) + "; the items read are the same", UserWarning, stacklevel=3
        )
