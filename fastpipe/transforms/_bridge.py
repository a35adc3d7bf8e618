"""Hand data between fastpipe's and MONAI's transforms in one translated chain.

fastpipe's transforms keep plain tensors with the affine in ``{key}_meta_dict``; MONAI's read it
from a ``MetaTensor``. Where a translated chain passes from one to the other, the plan inserts one
of these steps so that an untranslated MONAI transform sees what MONAI's own chain would have given
it (affine, metadata, and ``float32`` voxels where MONAI's ``LoadImaged`` would have made them), and
a fastpipe transform after it sees its plain tensors and metadata dicts again.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import torch

from fastpipe._meta import META_SUFFIX, meta_key, trace_key
from fastpipe.transforms._dict import spacing_of


class ToMonaid:
    """fastpipe item -> MONAI item: plain tensors with a metadata dict become ``MetaTensor`` objects.

    Args:
        float_keys: keys whose voxels become ``float32`` (MONAI's ``LoadImaged`` default dtype).
        float32_keys: keys whose floating voxels (float64, float16) become ``float32``, integer ones
            staying as they are (a label fastpipe resamples with ``nearest`` keeps its integer dtype).
        track_meta: make ``MetaTensor`` objects (default True); False keeps plain tensors, as MONAI does
            after ``EnsureTyped(track_meta=False)``.
    """

    def __init__(
        self, float_keys: Iterable[str] = (), track_meta: bool = True, float32_keys: Iterable[str] = ()
    ) -> None:
        self.float_keys = tuple(sorted(float_keys))
        self.float32_keys = tuple(sorted(float32_keys))
        self.track_meta = track_meta

    def __call__(self, data: dict[str, Any]) -> dict[str, Any]:
        from monai.data import MetaTensor

        d = dict(data)
        for key in [k for k in d if not str(k).endswith(META_SUFFIX)]:
            v = d.get(key)  # None: a trace key popped below
            if not isinstance(v, torch.Tensor) or isinstance(v, MetaTensor):
                continue
            if v.dtype != torch.float32 and (
                key in self.float_keys
                and not v.is_floating_point()
                or key in (*self.float_keys, *self.float32_keys)
                and v.is_floating_point()
            ):
                v = v.float()
            meta = d.get(meta_key(key)) if self.track_meta else None
            if isinstance(meta, dict) and "affine" in meta:
                v = _meta_tensor(v, meta, d.pop(trace_key(key), None))
                d[meta_key(key)] = v.meta  # one dict, as MONAI's LoadImaged(image_only=False) gives it
            d[key] = v
        return d

    def __repr__(self) -> str:
        narrow = f", float32_keys={list(self.float32_keys)}" if self.float32_keys else ""
        return f"ToMonaid(float_keys={list(self.float_keys)}, track_meta={self.track_meta}{narrow})"


def _meta_tensor(v: torch.Tensor, meta: dict[str, Any], ops: Any = None) -> Any:
    """``v`` as a ``MetaTensor`` carrying ``meta`` in MONAI's form: ``pixdim`` as the NIfTI header's
    eight values (``[1:4]`` the current spacing, as MONAI keeps it; ``[0]`` the qfac sign of the
    file's affine), and ``ops`` (the item's ``{key}_transforms``) as its ``applied_operations``, so that
    MONAI's steps trace after what came before (and MONAI's ``Spacingd``, which updates every
    ``{key}_*`` dict of the item, meets no list there)."""
    from monai.data import MetaTensor

    affine = torch.as_tensor(meta["affine"], dtype=torch.float64)
    rest = {k: m for k, m in meta.items() if k not in ("affine", "pixdim")}
    pixdim = meta.get("pixdim")
    if _is_header_pixdim(pixdim):  # the loader's header values, kept current: a copy, as MONAI writes into it
        rest["pixdim"] = pixdim.clone() if isinstance(pixdim, torch.Tensor) else pixdim.copy()
    else:  # no header (an item built in memory): MONAI's form from the affine
        original = np.asarray(meta.get("original_affine", affine), dtype=np.float64)
        qfac = -1.0 if np.linalg.det(original[:3, :3]) < 0 else 1.0
        spacing = spacing_of(affine.cpu().numpy())
        rest["pixdim"] = np.array([qfac, *spacing, 1.0, 1.0, 1.0, 1.0], dtype=np.float32)
    return MetaTensor(
        v, affine=affine, meta=rest, applied_operations=list(ops) if isinstance(ops, list) else None
    )


class FromMonaid:
    """MONAI item -> fastpipe item: each ``MetaTensor`` becomes a plain tensor plus ``{key}_meta_dict``."""

    def __call__(self, data: dict[str, Any]) -> dict[str, Any]:
        from monai.data import MetaTensor

        d = dict(data)
        for key in list(d):
            v = d[key]
            if isinstance(v, MetaTensor):
                affine = torch.as_tensor(v.affine.as_tensor() if hasattr(v.affine, "as_tensor") else v.affine)
                affine = affine.to(torch.float64).cpu()
                meta = {k: m for k, m in v.meta.items() if k != "affine"}
                pixdim = meta.get("pixdim")  # MONAI's own value, as its transforms left it
                if not _is_header_pixdim(pixdim):
                    pixdim = spacing_of(affine.numpy())
                d[meta_key(key)] = {**meta, "affine": affine, "pixdim": pixdim}
                if v.applied_operations:  # MONAI's place for a plain tensor's trace (Invertd reads it)
                    d[trace_key(key)] = list(v.applied_operations)
                d[key] = v.as_tensor()
        return d

    def __repr__(self) -> str:
        return "FromMonaid()"


def _is_header_pixdim(pixdim: Any) -> bool:
    """Whether ``pixdim`` is MONAI's ``meta["pixdim"]`` (the header's ``[qfac, x, y, z, ...]``)."""
    return isinstance(pixdim, (np.ndarray, torch.Tensor)) and pixdim.ndim == 1 and pixdim.shape[0] >= 4


class MonaiComposeRange:
    """Transforms ``start:end`` of a MONAI ``Compose`` run by that ``Compose`` itself, so its own
    ``lazy``, ``map_items`` and ``unpack_items`` settings hold (its ``__call__(start=, end=)``, as
    MONAI's ``CacheDataset`` runs the cached part and the rest of such a chain).

    Args:
        compose: the MONAI ``Compose``.
        start, end: the range (``end=None``: to the end).
        random: whether the range holds a random step (the part after the cache).
    """

    def __init__(self, compose: Any, start: int, end: int | None, random: bool) -> None:
        self.compose, self.start, self.end, self.random = compose, start, end, random

    def __call__(self, data: Any) -> Any:
        return self.compose(data, start=self.start, end=self.end, threading=True)

    def set_random_state(self, seed: int | None = None, state: Any = None) -> MonaiComposeRange:
        self.compose.set_random_state(seed=seed, state=state)
        return self

    def __repr__(self) -> str:
        end = "" if self.end is None else self.end
        return f"MonaiComposeRange({type(self.compose).__name__}[{self.start}:{end}])"


def monai_compose_parts(compose: Any) -> tuple[list[Any], list[Any]]:
    """``(cached part, rest)`` of a MONAI ``Compose`` kept whole, split where MONAI's ``CacheDataset``
    splits it: at its first ``RandomizableTrait`` step or step that is not a MONAI ``Transform``."""
    from monai.transforms import RandomizableTrait, Transform

    first = compose.get_index_of_first(
        lambda t: isinstance(t, RandomizableTrait) or not isinstance(t, Transform)
    )
    if first is None:
        return [MonaiComposeRange(compose, 0, None, random=False)], []
    head = [MonaiComposeRange(compose, 0, first, random=False)] if first > 0 else []
    return head, [MonaiComposeRange(compose, first, None, random=True)]
