"""The plan of a dataset's chain: what is cached, what is batched, what runs per item, and why.

:func:`build_plan` flattens a chain (fastpipe or MONAI ``Compose``, list, callable), swaps each MONAI
transform that fastpipe implements with the same semantics for fastpipe's (``_translate.py``),
splits it at the first random transform, and fuses what follows the crop where the transforms
allow it (``fastpipe.transforms.fuse_random`` when present). The random suffix is translated up to
the first transform fastpipe does not know: from there on the steps stay as given and run per item
(per crop after a batched crop), so the fast path ends at them. :meth:`Plan.describe` says so.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from fastpipe._chain import inlined, unwrapped
from fastpipe.transforms._bridge import FromMonaid, ToMonaid, monai_compose_parts
from fastpipe.transforms._plan_steps import (
    FASTPIPE,
    FLOAT_STEPS,
    INSERTED,
    MONAI,
    OTHER,
    SWAPPED,
    Step,
    mark_suffix,
)
from fastpipe.transforms._translate import Context, is_monai, translate
from fastpipe.transforms.compose import flatten, split_chain

log = logging.getLogger("fastpipe")


@dataclass
class Plan:
    """``prefix`` (cached) and ``suffix`` (``suffix[0]`` batched when it has ``batch_call``) to run."""

    prefix: list[Any]
    suffix: list[Any]
    steps: list[Step] = field(default_factory=list)
    swapped: list[str] = field(default_factory=list)

    @property
    def batched(self) -> bool:
        """Whether the suffix starts with a batched op (one call per batch of cached items)."""
        return bool(self.suffix) and callable(getattr(self.suffix[0], "batch_call", None))

    def describe(self, device: torch.device | str = "cpu") -> str:
        """The plan as text: one line per step with its stage, device, origin and the reason it is there."""
        from fastpipe.transforms._plan_text import render

        return render(self, torch.device(device))

    def summary(self) -> str:
        """One short line: counts per stage and where the fast path ends."""
        from fastpipe.transforms._plan_text import summary

        return summary(self)


def _origin(orig: Any, new: Any) -> str:
    if new is not orig:
        return SWAPPED
    if is_monai(orig):
        return MONAI
    return FASTPIPE if type(orig).__module__.split(".")[0] == "fastpipe" else OTHER


def _world(origin: str) -> str | None:
    """Which items a step takes. A plain callable in a chain with MONAI's steps (the only chains the plan
    bridges) takes what MONAI's chain hands it: ``MetaTensor`` objects."""
    return {SWAPPED: "fastpipe", FASTPIPE: "fastpipe", MONAI: "monai", OTHER: "monai"}.get(origin)


def _track_meta(orig: Any, current: bool) -> bool:
    """MONAI's metadata tracking after ``orig``: an ``EnsureTyped(track_meta=...)`` switches it."""
    flag = getattr(getattr(orig, "converter", None), "track_meta", None)
    return current if flag is None or not is_monai(orig) else bool(flag)


def _translate_prefix(prefix: list[Any], ctx: Context, enabled: bool) -> list[tuple[Any, Step]]:
    out = []
    for i, t in enumerate(prefix):
        ctx.following = prefix[i + 1 :]  # LoadImaged reads what handles its keys next
        new, reason = translate(t, ctx) if enabled and is_monai(t) else (t, "")
        out.append((new, Step(i + 1, type(t).__name__, _origin(t, new), "cached", reason)))
    return out


def _translate_suffix(suffix: list[Any], start: int, ctx: Context, enabled: bool) -> list[tuple[Any, Step]]:
    out, stopped = [], False
    for i, t in enumerate(suffix):
        new, reason, ctx.following = t, "", suffix[i + 1 :]
        if enabled and is_monai(t) and not stopped:
            new, reason = translate(t, ctx)
            stopped = new is t
        out.append((new, Step(start + i + 1, type(t).__name__, _origin(t, new), "per item", reason)))
    return out


def _to_monai(keys: Any, track: bool) -> tuple[Any, Step]:
    return ToMonaid(keys, track), Step(None, "ToMonaid", INSERTED, note="to MONAI's MetaTensor")


def _from_monai() -> tuple[Any, Step]:
    return FromMonaid(), Step(None, "FromMonaid", INSERTED, note="MetaTensor to fastpipe's tensors")


def _bridged(
    pairs: list[tuple[Any, Step]], originals: list[Any], ctx: Context, track: bool, world: str | None = None
) -> tuple[list[tuple[Any, Step]], str | None, bool]:
    """Insert ``ToMonaid``/``FromMonaid`` where the chain passes between fastpipe and MONAI transforms
    (``world``: the side it starts on); also returns the side it ends on and MONAI's metadata tracking there."""
    out = []
    for (t, step), orig in zip(pairs, originals, strict=True):
        w = _world(step.origin)
        if world == "fastpipe" and w == "monai":
            out.append(_to_monai(ctx.float_keys, track))
        elif world == "monai" and w == "fastpipe":
            out.append(_from_monai())
        world = w or world
        track = _track_meta(orig, track)
        out.append((t, step))
    return out, world, track


def _monai_track_meta() -> bool:
    try:
        from monai.data.meta_obj import get_track_meta
    except ImportError:
        return True
    return bool(get_track_meta())


def build_plan(transform: Any, translate_monai: bool = True, items: Sequence[Any] | None = None) -> Plan:
    """The plan of ``transform`` for a dataset over ``items`` (``None`` when they come from a dataset).

    Args:
        transform: a fastpipe/MONAI ``Compose``, a list of callables, or one callable.
        translate_monai: swap MONAI transforms for fastpipe's where the semantics are the same (default True).
        items: the data items, used to check that fastpipe reads their files (default ``None``).

    Example:
        >>> plan = build_plan([lambda d: d])
        >>> len(plan.prefix), plan.suffix
        (1, [])
    """
    prefix_o, suffix_o, translate_monai, monai_chain = _split(transform, translate_monai)
    ctx = Context(items=items, numpy_keys=_array_keys(items))
    pre = _translate_prefix(prefix_o, ctx, translate_monai)
    # a step after the crop that makes a key float (EnsureTyped(dtype=...) at the end) comes too late
    # for the crop's fused intensity steps: only the cached prefix's steps spare a key MONAI's float32
    settled = set(ctx.settled_keys)
    suf = _translate_suffix(suffix_o, len(prefix_o), ctx, translate_monai)
    ctx.settled_keys = settled
    swapped = [s.name for _, s in pre + suf if s.origin == SWAPPED]
    if swapped:
        pre = _finish_prefix(pre, prefix_o, suf, ctx)
        suf = _bridge_suffix(suf, suffix_o, prefix_o, ctx)
    for t, step in pre + suf:
        step.obj = t
    plan = _fused_plan([s for _, s in pre + suf], swapped, monai_chain)
    if swapped:
        kept = [f"{s.name} ({s.note})" for s in plan.steps if s.origin == MONAI and s.note]
        log.info(
            "fastpipe: MONAI transforms swapped for fastpipe's: %s; kept as MONAI: %s",
            ", ".join(swapped), "; ".join(kept) or "none",
        )  # fmt: skip
    return plan


def _array_keys(items: Sequence[Any] | None) -> set[str]:
    """Keys whose values are numpy arrays in the items (fastpipe's transforms need tensors there)."""
    import numpy as np

    return {
        str(k)
        for it in items or ()
        if isinstance(it, dict)
        for k, v in it.items()
        if isinstance(v, np.ndarray)
    }


def _split(transform: Any, translate_monai: bool) -> tuple[list, list, bool, bool]:
    """``(prefix, suffix, translate, monai_chain)``: the chain split at its first random step, whether
    to translate it, and whether it follows MONAI's rule for plain callables."""
    monai_chain = False
    if is_monai(transform) and not inlined(transform):  # lazy=True, map_items=False, unpack_items=True
        prefix_o, suffix_o = monai_compose_parts(transform)
        translate_monai = False
    else:
        flat = [unwrapped(t) for t in flatten(transform)]  # NVTX wrappers: plan the transforms themselves
        # a chain holding MONAI transforms follows MONAI's rule: a plain callable (not fastpipe's, not
        # MONAI's, no ``random`` flag) runs on every read (mark_deterministic(fn) lets it be cached);
        # a chain of fastpipe transforms and callables follows fastpipe's (cached unless mark_random)
        monai_chain = is_monai(transform) or any(is_monai(t) for t in flat)
        prefix_o, suffix_o = split_chain(flat, plain_is_random=monai_chain)
    return prefix_o, suffix_o, translate_monai, monai_chain


def _finish_prefix(pre: list, prefix_o: list, suf: list, ctx: Context) -> list:
    """Bridges inside the prefix, MONAI's float32 where no step makes it, and a bridge to the suffix."""
    pre, world, track = _bridged(pre, prefix_o, ctx, _monai_track_meta())
    # a nearest-resampled key keeps its integer dtype, unless a random intensity step of fastpipe's
    # names it: that computes in float32, as MONAI's float32 voxels have it (MONAI's Spacingd returns
    # float32 whatever LoadImaged's dtype, so with dtype=None too)
    shifted = {k for t, s in suf if s.origin == SWAPPED and s.name in FLOAT_STEPS for k in t.keys}
    monai_float = ctx.float_keys | (ctx.nearest_keys & shifted)
    cast = sorted(monai_float - (ctx.nearest_keys - shifted) - ctx.settled_keys)
    narrow = sorted(ctx.float_keys - set(cast))  # float64/float16 files: float32, as MONAI loads them
    loads = [i for i, (_, s) in enumerate(pre) if s.origin == SWAPPED and s.name == "LoadImaged"]
    if (cast or narrow) and loads:  # right after loading, as MONAI's LoadImaged gives float32
        note = (
            f"{cast}: MONAI's float32 (LoadImaged, Spacingd), no later step makes them float" if cast else ""
        )
        note += (
            ("; " if note else "") + f"{narrow}: float32 when the file holds other floats" if narrow else ""
        )
        step = ToMonaid(cast, track_meta=False, float32_keys=narrow)
        pre.insert(loads[-1] + 1, (step, Step(None, "AsFloat32", INSERTED, note=note)))
    first = _world(suf[0][1].origin) if suf else None
    if world == "monai" and first == "fastpipe":
        pre.append(_from_monai())
    elif world != "monai" and first == "monai":
        pre.append(_to_monai(ctx.float_keys, track))
    return pre


def _bridge_suffix(suf: list, suffix_o: list, prefix_o: list, ctx: Context) -> list:
    """Bridges inside the random part: a MONAI step after fastpipe's batched crop gets MONAI's
    ``MetaTensor`` crops (each with its crop's affine), as it does in the prefix."""
    track = _monai_track_meta()
    for orig in prefix_o:
        track = _track_meta(orig, track)
    first = _world(suf[0][1].origin) if suf else None
    out, _, _ = _bridged(suf, suffix_o, ctx, track, world=first)
    for _, step in out:
        if step.pos is None:  # an inserted bridge runs where its neighbours do: per crop
            step.stage = "per item"
    return out


def _fuse_random() -> Any:
    """fastpipe's ``fuse_random`` (random suffix and pad fused into the crop), or ``None`` where absent."""
    import fastpipe.transforms as T

    fuse = getattr(T, "fuse_random", None)
    if fuse is None:
        try:
            from fastpipe.transforms._fuse_random import fuse_random as fuse
        except ImportError:
            return None
    return fuse


def _fused_plan(steps: list[Step], swapped: list[str], plain_is_random: bool = False) -> Plan:
    """Fuse the chain of ``steps`` (``fuse_random``), split it again (by the same rule), and mark each
    step's stage and reason."""
    chain = [s.obj for s in steps]
    fuse = _fuse_random()
    fused = list(fuse(chain)) if fuse is not None else chain
    prefix, suffix = split_chain(fused, plain_is_random=plain_is_random)
    placed = {id(t) for t in fused}
    new = [t for t in fused if id(t) not in {id(c) for c in chain}]  # copies made by the fusion
    absorbed: list[Step] = []
    for s in steps:
        if id(s.obj) in placed:
            continue
        same_type = [t for t in new if type(t) is type(s.obj)]
        if same_type:  # the crop, now a fused copy
            s.obj = same_type[0]
            new.remove(same_type[0])
        else:
            absorbed.append(s)
    in_prefix = {id(t) for t in prefix}
    cached = [s for s in steps if id(s.obj) in in_prefix and s not in absorbed]
    for s in cached:
        if getattr(s.obj, "compact_keys", ()):  # fastpipe.transforms._compact_indices
            note = f"{list(s.obj.compact_keys)}: foreground list + background count (crop draws background by rejection)"
            s.note = f"{s.note}; {note}" if s.note else note
    rest = [s for s in steps if id(s.obj) not in in_prefix and s not in absorbed]
    plan = Plan(prefix, suffix, cached, swapped)
    mark_suffix(plan, rest, absorbed)
    return plan
