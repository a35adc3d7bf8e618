"""Behaviour of the torch crop path that mutation testing found unchecked (``fastpipe.ops.crop``)."""

from __future__ import annotations

import itertools

import pytest
import torch

from fastpipe.ops import crop_batch_torch
from fastpipe.ops.crop import _copy_one_torch

SHAPE, SIZE = (7, 6, 5), (4, 3, 3)
PERMS = list(itertools.permutations(range(3)))


def spec(vol, start, perm, flip, s, o, pad):
    """The module docstring's definition: a padded window seen through a signed permutation, ``x * s + o``."""
    ext = [0, 0, 0]
    for a, p in enumerate(perm):
        ext[p] = SIZE[a]
    win = torch.full((vol.shape[0], *ext), pad if pad is not None else float("nan"), dtype=vol.dtype)
    src, dst = [slice(None)], [slice(None)]
    for p in range(3):
        lo, hi = max(start[p], 0), min(start[p] + ext[p], vol.shape[1 + p])
        src.append(slice(lo, max(lo, hi)))
        dst.append(slice(lo - start[p], max(lo, hi) - start[p]))
    win[tuple(dst)] = vol[tuple(src)]
    out = win.permute(0, *(1 + p for p in perm))
    out = out.flip([1 + a for a in range(3) if flip[a]])
    if s != 1:
        out = out * torch.tensor(s, dtype=torch.float32)
    if o != 0:
        out = out + torch.tensor(o, dtype=torch.float32)
    return out


def cases(pad: bool):
    g = torch.Generator().manual_seed(5)
    vol = torch.randn((2, *SHAPE), generator=g)
    vol[0, 0, 0, 0] = -0.0
    starts, axes, flips = [], [], []
    for n, perm in enumerate(PERMS * 4):
        ext = [0, 0, 0]
        for a, p in enumerate(perm):
            ext[p] = SIZE[a]
        lo = [-2 if pad else 0] * 3
        hi = [SHAPE[p] - ext[p] + (2 if pad else 0) for p in range(3)]
        starts.append([int(torch.randint(lo[p], hi[p] + 1, (), generator=g)) for p in range(3)])
        if n < len(PERMS):
            starts[-1] = [0, 0, 0]  # the -0.0 voxel is read
        axes.append(list(perm))
        flips.append([bool(b) for b in torch.rand(3, generator=g) < 0.5])
    return vol, torch.tensor(starts), torch.tensor(axes), torch.tensor(flips)


@pytest.mark.parametrize("pad", [False, True])
@pytest.mark.parametrize("shift,scale", [(1.0, 1.0), (0.0, 1.0), (1.0, 2.0), (-1.0, 0.5), (0.0, -1.0)])
def test_every_orientation_with_unit_shift_or_scale_equals_the_spec_bit_for_bit(pad, shift, scale):
    """A shift of exactly 1 or 0 and a scale of exactly 1 (the op's skip rules), through every copy route."""
    vol, starts, axes, flips = cases(pad)
    n = starts.shape[0]
    sc, sh = torch.full((n,), scale), torch.full((n,), shift)
    pad_value = 0.0 if pad else None
    out = crop_batch_torch([vol], starts, torch.zeros(n, dtype=torch.int64), SIZE, flips=flips, scale=sc,
                           shift=sh, axes=axes, pad_value=pad_value)  # fmt: skip
    for i in range(n):
        want = spec(vol, starts[i].tolist(), axes[i].tolist(), flips[i].tolist(), scale, shift, pad_value)
        # bitwise: -0.0 stays -0.0 where no step fires
        assert torch.equal(out[i].view(torch.int32), want.view(torch.int32)), (i, axes[i], flips[i])


@pytest.mark.parametrize("pad", [False, True])
def test_the_torch_route_for_tensors_off_the_cpu_equals_the_spec(pad):
    """``_copy_one_torch`` (CUDA tensors without CuPy) run on CPU tensors: the same crops as the spec."""
    vol, starts, axes, flips = cases(pad)
    n = starts.shape[0]
    out = torch.empty((n, 2, *SIZE))
    st, ax, fl = starts.tolist(), axes.tolist(), flips.tolist()
    sc, sh = [1.5] * n, [0.25] * n
    pad_value = 0.0 if pad else None
    for i in range(n):
        _copy_one_torch(i, [vol], out, st, [0] * n, SIZE, ax, fl, sc, sh, pad_value)
        want = spec(vol, st[i], ax[i], fl[i], 1.5, 0.25, pad_value)
        assert torch.equal(out[i], want), (i, ax[i], fl[i])
