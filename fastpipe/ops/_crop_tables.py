"""The crop kernel's launch table: one row per key of a batch, and one host-to-device copy for all.

One launch of ``kernels/crop_pos_neg.cu`` cuts every key of a batch. Per key it reads a volume table,
the crops' starts and volume indices, one axis code per crop, the intensity terms and an error flag,
found through the key's row of a descriptor table (``desc``, layout in the kernel's header). Those
tables made on the host (all but the sampler's starts, which are on the device already) are laid out
in one byte buffer after ``desc``, 8-byte items first, and moved with one pinned
:func:`~fastpipe.ops._device.to_device`; ``desc`` names them by their offset from itself, since their
device address is known only after the copy. A batch then costs one small copy and one launch,
whatever its keys, and no fill launch for the flags.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from fastpipe.ops._crop_checks import intensity_params
from fastpipe.ops._device import to_device

INT_MAX = 2**31 - 1
IDENTITY_CODE = 0 | 1 << 3 | 2 << 6  # output axis a reads source axis a, forward


DESC_WORDS = 16  # int64 words per key in the descriptor table (see kernels/crop_pos_neg.cu)
SLOTS = ("vols", "starts", "vol_index", "codes", "inten", "err", "out")  # desc words 0-6
_RELATIVE_BIT = 16  # flag bit of slot 0; slot s's bit says its word is an offset from desc
#: element kind in the flags: float32 (intensity maths), else a bitwise copy of the element's size
_KIND = {4: 3, 2: 2, 1: 1, 8: 4}


class KeyInfo(NamedTuple):
    """The scalars of one key's descriptor row."""

    C: int
    size: tuple[int, int, int]
    nvols: int
    use_inten: bool
    use_pad: bool
    lanes_log2: int
    kind: int
    pad: int
    rows: int
    first_block: int


class Launch(NamedTuple):
    """What one launch reads and writes: the copied buffer (``packed``, starting with ``desc``), each
    key's bounds flag (``errs``), and every tensor the kernel touches (``keep``: they must outlive it)."""

    packed: torch.Tensor
    desc: torch.Tensor
    errs: list[torch.Tensor]
    keep: list[torch.Tensor]


def element_kind(dtype: torch.dtype) -> int:
    """The kernel's element kind: 0 for float32, else 1-4 for a bitwise copy of 1, 2, 4 or 8 bytes."""
    return 0 if dtype == torch.float32 else _KIND[dtype.itemsize]


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


def packable(name: str, t: torch.Tensor) -> bool:
    """Whether table ``name`` travels in the packed copy: a host tensor, never the output (the kernel writes it)."""
    return name != "out" and t.device.type == "cpu"


def _flags(info: KeyInfo, relative: int) -> int:
    return (int(info.use_inten) | int(info.use_pad) << 1 | info.lanes_log2 << 2 | info.kind << 8
            | relative << _RELATIVE_BIT)  # fmt: skip


def pack_launch(keys: list[dict[str, torch.Tensor]], infos: list[KeyInfo], dev: torch.device) -> Launch:
    """The descriptor table of every key and the host tables after it, moved to ``dev`` in one copy.

    ``keys``: per key its tables (:func:`table_parts`) and ``out``. Host tensors are packed (the output
    never is: the kernel writes it); the others are named by their address, made contiguous first.
    """
    host = [(i, k) for size in (8, 4, 2, 1) for i, p in enumerate(keys) for k, t in p.items()
            if packable(k, t) and t.element_size() == size]  # fmt: skip
    blobs = [keys[i][k].contiguous().view(torch.uint8).reshape(-1) for i, k in host]
    offsets, off = {}, len(keys) * DESC_WORDS * 8
    for (i, k), blob in zip(host, blobs, strict=True):
        offsets[i, k] = off
        off += blob.numel()
    desc, keep = torch.zeros((len(keys), DESC_WORDS), dtype=torch.int64), []
    for i, (parts, info) in enumerate(zip(keys, infos, strict=True)):
        relative = 0
        for s, name in enumerate(SLOTS):
            # without intensity terms slot 4 is not read: any valid address (the flag's) will do
            src = "err" if name == "inten" and "inten" not in parts else name
            if (i, src) in offsets:
                desc[i, s] = offsets[i, src]
                relative |= 1 << s
            else:
                t = parts[src].contiguous()
                keep.append(t)
                desc[i, s] = t.data_ptr()
        desc[i, 7:] = torch.tensor([info.pad, info.rows, info.first_block, info.C, *info.size, info.nvols,
                                    _flags(info, relative)])  # fmt: skip
    flat = to_device(torch.cat([desc.view(torch.uint8).reshape(-1), *blobs]), dev)
    errs = [flat[offsets[i, "err"] : offsets[i, "err"] + 4].view(torch.int32) for i in range(len(keys))]
    keep += [flat, *(p["out"] for p in keys)]
    return Launch(flat, flat[: desc.numel() * 8].view(torch.int64).view(desc.shape), errs, keep)
