"""Ranks seeded alike draw their own random parameters (fp.ThreadDataLoader over a sharded dataset)."""

from __future__ import annotations

import torch

import fastpipe as fp
from fastpipe.transforms import RandShiftIntensityd


def _offsets(rank: int) -> list[float]:
    data = [{"image": torch.full((1, 2, 2, 2), float(100 * i))} for i in range(8)]
    ds = fp.CacheDataset(
        data, [RandShiftIntensityd("image", offsets=10, prob=1.0)], rank=rank, world_size=2, progress=False
    )
    out = []
    for batch in fp.ThreadDataLoader(ds, batch_size=2, seed=5):
        img = batch["image"].reshape(len(batch["image"]), -1)[:, 0]
        out += [round(float(v - 100 * round(float(v) / 100)), 4) for v in img]
    return out


def test_ranks_seeded_alike_draw_different_parameters():
    """Every rank seeded with one seed (set_determinism, seed=) shifted the crops at each batch position
    by the same offsets: the augmentation of the ranks was one draw, repeated."""
    rank0, rank1 = _offsets(0), _offsets(1)
    assert len(rank0) == len(rank1) == 4
    assert rank0 != rank1 and not set(rank0) & set(rank1)
    assert _offsets(1) == rank1  # reproducible per rank
