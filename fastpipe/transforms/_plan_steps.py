"""The steps of a plan (:class:`Step`: one line of ``Plan.describe()``) and how the random part's steps
are staged: batched, fused into the batched op, or per item, each with the reason it is there."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fastpipe.transforms._per_crop import runs_on_batch

INTENSITY_WHY = "the gather computes in float32; MONAI in the key's dtype, casting as it does"
SWAPPED, MONAI, FASTPIPE, OTHER, INSERTED = "MONAI -> fastpipe", "MONAI", "fastpipe", "callable", "inserted"
FLOAT_STEPS = ("RandShiftIntensityd", "RandScaleIntensityd", "RandGaussianNoised", "RandAdjustContrastd")


@dataclass
class Step:
    """One line of the plan: the chain position (``None`` for inserted steps), name, origin, stage, note."""

    pos: int | None
    name: str
    origin: str
    stage: str = "cached"
    note: str = ""
    obj: Any = field(default=None, repr=False, compare=False)  # the transform this step runs


def mark_suffix(plan: Any, rest: list[Step], absorbed: list[Step]) -> None:
    """Stages and reasons of the random part (of ``plan``, a ``_plan.Plan``); steps fused into the
    batched op are listed after it."""
    crop = rest[0].name if rest else "the crop"
    for s in absorbed:
        pad = s.name == "SpatialPadd"
        s.stage = "fused"
        s.note = f"absorbed into {crop}'s gather (no padded copy cached)" if pad else f"fused into {crop}"
        if hasattr(s.obj, "fused_term"):  # RandScaleIntensityd, RandShiftIntensityd
            s.note += f" for float32 keys; keys of another dtype per crop after it ({INTENSITY_WHY})"
    if plan.batched:
        rest[0].stage = "batched"
        size = tuple(getattr(rest[0].obj, "spatial_size", ()))
        on_batch = 1
        cut = set(getattr(rest[0].obj, "keys", ()))
        while on_batch < len(rest) and runs_on_batch(rest[on_batch].obj, size):
            whole = getattr(rest[on_batch].obj, "whole_batch", False)  # picks entries, any values
            uncut = [] if whole else [k for k in getattr(rest[on_batch].obj, "keys", ()) if k not in cut]
            if uncut:  # those keys hold the item's own value once per crop, not a stacked batch
                rest[on_batch].note = f"names {uncut} (not cut by {rest[0].name}); runs per crop"
                break
            step = rest[on_batch]
            step.stage = "batched"
            drawn = "one draw for all crops, only the fired crops change"
            what = drawn if callable(getattr(step.obj, "draw", None)) else "one conversion for all crops"
            step.note = step.note or f"on the stacked batch: {what}"
            on_batch += 1
        rest = [rest[0], *absorbed, *rest[1:]]
        per_item = rest[on_batch + len(absorbed) :]
    else:
        per_item = rest
    own = [s for s in per_item if s.pos is not None]  # the chain's steps, not the inserted bridges
    for j, s in enumerate(own):
        if j == 0 and not s.note:
            s.note = _why_per_item(s, plan.batched)
        elif j > 0 and not s.note:
            s.note = f"after {own[0].name}, which runs per item"
    plan.steps.extend(rest)


def _why_per_item(step: Step, after_batched: bool) -> str:
    """Why the first per-item step is not part of a batched op (a MONAI step kept carries its own reason)."""
    if after_batched and step.origin in (SWAPPED, FASTPIPE):
        return "not fused into the batched op here (its order or options); runs per crop"
    if step.origin in (SWAPPED, FASTPIPE):
        return f"{step.name} has no batched form"
    if step.origin == MONAI:
        return "MONAI's transform, run as given (translate=False)"
    return "a callable without a batched form"
