"""The crop kernel's per-launch tables, and one host-to-device copy for the tables of several launches.

A launch of ``kernels/crop_pos_neg.cu`` reads a volume table, the crops' starts and volume indices,
one axis code per crop, the intensity terms and an error flag. Those made on the host (all but the
sampler's starts, which are on the device already) are laid out in one byte buffer, 8-byte items
first, and moved with one pinned :func:`~fastpipe.ops._device.to_device`: a batch of several keys
then costs one small copy, not one per table and key, and no fill launch for the flag.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from fastpipe.ops._device import to_device
from fastpipe.ops.crop import intensity_params

INT_MAX = 2**31 - 1
IDENTITY_CODE = 0 | 1 << 3 | 2 << 6  # output axis a reads source axis a, forward


class Launch(NamedTuple):
    """The tensors one launch reads and writes (they must outlive it); ``err`` holds the bounds flag."""

    vols: torch.Tensor
    starts: torch.Tensor
    vol_index: torch.Tensor
    codes: torch.Tensor
    inten: torch.Tensor
    err: torch.Tensor
    out: torch.Tensor | None


def axis_codes(n: int, flips, axes, device) -> torch.Tensor:
    """Per crop one int32: output axis ``a`` in bits ``3a..3a+2`` as ``source axis | 4 * flipped``."""
    if axes is None and flips is None:
        return torch.full((n,), IDENTITY_CODE, dtype=torch.int32, device=device)
    c = torch.arange(3, device=device).expand(n, 3) if axes is None else axes.to(device)
    c = torch.where((c >= 0) & (c < 3), c, 3)  # out of range: 3, which the kernel's permutation test rejects
    if flips is not None:
        c = c + 4 * flips.to(device=device, dtype=torch.int64)
    return (c[:, 0] | c[:, 1] << 3 | c[:, 2] << 6).to(torch.int32)


def _on_host(*ts) -> bool:
    return all(t is None or t.device.type == "cpu" for t in ts)


def table_parts(volumes, starts, vol_index, flips, scale, shift, axes, n, dev) -> dict[str, torch.Tensor]:
    """One launch's tables: host tensors where the arguments are on the host, else made on ``dev``."""
    codes_dev = torch.device("cpu") if _on_host(flips, axes) else dev
    parts = {
        "vols": torch.tensor([[v.data_ptr(), *v.shape[1:]] for v in volumes], dtype=torch.int64),
        "starts": starts.to(torch.int64),
        "vol_index": vol_index.to(torch.int64),
        "codes": axis_codes(n, flips, axes, codes_dev),
        "err": torch.full((1,), INT_MAX, dtype=torch.int32),
    }
    where = torch.device("cpu") if _on_host(scale, shift) else dev
    inten = intensity_params(n, scale, shift, where)
    if inten is not None:
        parts["inten"] = torch.stack([t.to(where) for t in inten], dim=1)
    return parts


def move_packed(launches: list[dict[str, torch.Tensor]], dev: torch.device) -> list[Launch]:
    """The host tensors of every launch's tables packed into one buffer and moved in one copy.

    Returns one :class:`Launch` per entry (``out`` unset) whose tables are views of the device buffer
    (or the device tensors given).
    """
    host = [(i, k) for size in (8, 4, 2, 1) for i, p in enumerate(launches) for k, t in p.items()
            if t.device.type == "cpu" and t.element_size() == size]  # fmt: skip
    flat = to_device(  # never empty: every launch has its error flag
        torch.cat([launches[i][k].contiguous().view(torch.uint8).reshape(-1) for i, k in host]), dev
    )
    off, done = 0, [dict(p) for p in launches]
    for i, k in host:
        t = launches[i][k]
        done[i][k] = flat[off : off + t.numel() * t.element_size()].view(t.dtype).view(t.shape)
        off += t.numel() * t.element_size()
    for p in done:
        p.setdefault("inten", p["err"])  # not read without intensity: any valid address
    return [Launch(**{k: t.contiguous() for k, t in p.items()}, out=None) for p in done]
