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

from fastpipe.transforms._bridge import FromMonaid, ToMonaid
from fastpipe.transforms._translate import Context, is_monai, translate
from fastpipe.transforms.compose import flatten, split_chain
from fastpipe.transforms.utility import device_point

log = logging.getLogger("fastpipe")

SWAPPED, MONAI, FASTPIPE, OTHER, INSERTED = "MONAI -> fastpipe", "MONAI", "fastpipe", "callable", "inserted"


@dataclass
class Step:
    """One line of the plan: the chain position (``None`` for inserted steps), name, origin, stage, note."""

    pos: int | None
    name: str
    origin: str
    stage: str = "cached"
    note: str = ""


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
    return {SWAPPED: "fastpipe", FASTPIPE: "fastpipe", MONAI: "monai"}.get(origin)


def _track_meta(orig: Any, current: bool) -> bool:
    """MONAI's metadata tracking after ``orig``: an ``EnsureTyped(track_meta=...)`` switches it."""
    flag = getattr(getattr(orig, "converter", None), "track_meta", None)
    return current if flag is None or not is_monai(orig) else bool(flag)


def _translate_prefix(prefix: list[Any], ctx: Context, enabled: bool) -> list[tuple[Any, Step]]:
    out = []
    for i, t in enumerate(prefix):
        new, reason = translate(t, ctx) if enabled and is_monai(t) else (t, "")
        out.append((new, Step(i + 1, type(t).__name__, _origin(t, new), "cached", reason)))
    return out


def _translate_suffix(suffix: list[Any], start: int, ctx: Context, enabled: bool) -> list[tuple[Any, Step]]:
    out, stopped = [], False
    for i, t in enumerate(suffix):
        new, reason = t, ""
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
    pairs: list[tuple[Any, Step]], originals: list[Any], ctx: Context, track: bool
) -> tuple[list[tuple[Any, Step]], str | None, bool]:
    """Insert ``ToMonaid``/``FromMonaid`` where the chain passes between fastpipe and MONAI transforms;
    also returns the side the chain ends on and MONAI's metadata tracking there."""
    out, world = [], None
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
    if translate_monai and is_monai(transform) and getattr(transform, "lazy", False) is True:
        log.info("fastpipe: a MONAI Compose with lazy=True resamples differently; its transforms are kept")
        translate_monai = False
    flat = flatten(transform)
    prefix_o, suffix_o = split_chain(flat)
    ctx = Context(items=items)
    pre = _translate_prefix(prefix_o, ctx, translate_monai)
    suf = _translate_suffix(suffix_o, len(prefix_o), ctx, translate_monai)
    swapped = [s.name for _, s in pre + suf if s.origin == SWAPPED]
    if swapped:
        pre = _finish_prefix(pre, prefix_o, suf, ctx)
    plan = Plan([t for t, _ in pre], [t for t, _ in suf], [s for _, s in pre], swapped)
    _fuse_suffix(plan, suf)
    if swapped:
        kept = [f"{s.name} ({s.note})" for s in plan.steps if s.origin == MONAI and s.note]
        log.info(
            "fastpipe: MONAI transforms swapped for fastpipe's: %s; kept as MONAI: %s",
            ", ".join(swapped), "; ".join(kept) or "none",
        )  # fmt: skip
    return plan


def _finish_prefix(pre: list, prefix_o: list, suf: list, ctx: Context) -> list:
    """Bridges inside the prefix, MONAI's float32 where no step made it, and a bridge to the suffix."""
    pre, world, track = _bridged(pre, prefix_o, ctx, _monai_track_meta())
    cast = sorted(ctx.float_keys - ctx.nearest_keys)
    if cast and world != "monai":  # (MONAI's side got float32 from ToMonaid already)
        note = f"{cast}: MONAI's LoadImaged dtype"
        pre.append((ToMonaid(cast, track_meta=False), Step(None, "AsFloat32", INSERTED, note=note)))
    first = _world(suf[0][1].origin) if suf else None
    if world == "monai" and first == "fastpipe":
        pre.append(_from_monai())
    elif world != "monai" and first == "monai":
        pre.append(_to_monai(ctx.float_keys, track))
    return pre


def _fuse_suffix(plan: Plan, suf: list[tuple[Any, Step]]) -> None:
    """Fuse the suffix (``fuse_random``, when fastpipe has it) and mark each step's stage and reason."""
    import fastpipe.transforms as T

    fuse = getattr(T, "fuse_random", None)
    if fuse is not None:
        plan.suffix = list(fuse(plan.suffix))
    steps = [s for _, s in suf]
    n_fused = len(steps) - len(plan.suffix)
    if plan.batched:
        steps[0].stage = "batched"
        for s in steps[1 : 1 + n_fused]:
            s.stage, s.note = "fused", f"fused into {steps[0].name}"
    rest = steps[1 + n_fused :] if plan.batched else steps
    for j, s in enumerate(rest):
        if j == 0 and not s.note:
            s.note = f"{s.name} has no batched form" + (" here" if plan.batched else "")
        elif j > 0 and not s.note:
            s.note = f"after {rest[0].name}, which runs per item"
    plan.steps.extend(steps)


def step_devices(plan: Plan, cache_device: torch.device) -> list[str]:
    """The device each step of ``plan.steps`` runs on: the host until the prefix's device point."""
    out, dev, objs = [], torch.device("cpu"), list(plan.prefix)
    for i, s in enumerate(plan.steps):
        if s.stage == "cached":
            found = device_point(objs[i]) if i < len(objs) else None
            dev = found or dev
            out.append(str(dev))
        else:
            out.append(str(cache_device))
    return out
