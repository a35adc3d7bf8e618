"""Text of a :class:`fastpipe.transforms._plan.Plan`: ``describe()`` and the one-line summary."""

from __future__ import annotations

from typing import Any

import torch

from fastpipe.transforms.spatial import OrientSpacingd, fuse_spatial
from fastpipe.transforms.utility import device_point

STAGE_TITLES = {
    "cached": "cached, once per item (the deterministic prefix)",
    "batched": "batched, one call per batch (all crops of all items in one op)",
    "fused": "batched, one call per batch (all crops of all items in one op)",
    "per item": "per item (each crop when after the batched op)",
}


def _one_pass_notes(plan: Any) -> dict[int, str]:
    """``id`` of each prefix step that ``fuse_spatial`` runs as one pass with the next step."""
    return {
        id(t.orientation): "one pass with the next Spacingd"
        for t in fuse_spatial(list(plan.prefix))
        if isinstance(t, OrientSpacingd)
    }


def step_devices(plan: Any, cache_device: torch.device) -> list[str]:
    """The device each step of ``plan.steps`` runs on: the host until the prefix's device point."""
    out, dev = [], torch.device("cpu")
    for s in plan.steps:
        if s.stage == "cached":
            dev = device_point(s.obj) or dev
            out.append(str(dev))
        else:
            out.append(str(cache_device))
    return out


def fast_path_end(plan: Any) -> str:
    """Where the fast path ends, in words."""
    per_item = [s for s in plan.steps if s.stage == "per item" and s.pos is not None]  # not the bridges
    if not per_item:
        return "every step is cached or batched"
    first = per_item[0]
    where = "after the batched op, per crop" if plan.batched else "per item"
    return f"ends at step {first.pos} {first.name} ({first.note}); {len(per_item)} step(s) run {where}"


def render(plan: Any, cache_device: torch.device) -> str:
    """The plan, one line per step, grouped by stage."""
    devices = step_devices(plan, cache_device)
    one_pass = _one_pass_notes(plan)
    lines = [f"plan: {len(plan.swapped)} MONAI transform(s) swapped for fastpipe's; cache on {cache_device}"]
    title = None
    width = max([len(s.name) for s in plan.steps] + [8])
    for i, s in enumerate(plan.steps):
        if STAGE_TITLES[s.stage] != title:
            title = STAGE_TITLES[s.stage]
            lines.append(f"  {title}:")
        pos = f"{s.pos:>3}." if s.pos is not None else "  +."
        note = "; ".join(n for n in (s.note, one_pass.get(id(s.obj), "")) if n)
        lines.append(f"   {pos} {s.name:<{width}}  {s.origin:<17}  on {devices[i]:<7} {note}".rstrip())
    lines.append(f"  fast path: {fast_path_end(plan)}")
    return "\n".join(lines)


def summary(plan: Any) -> str:
    """``"7 cached, 1 batched (+4 fused), 0 per item"`` plus where the fast path ends."""
    count = {k: sum(s.stage == k for s in plan.steps if s.pos is not None) for k in STAGE_TITLES}
    text = f"{count['cached']} cached, {count['batched']} batched (+{count['fused']} fused), {count['per item']} per item"
    return text if not count["per item"] else f"{text}; fast path {fast_path_end(plan).split(';')[0]}"
