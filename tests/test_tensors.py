"""fastpipe._tensors: the walks over nested items keep each container's kind, namedtuples included."""

from __future__ import annotations

from collections import namedtuple

import torch

from fastpipe import ThreadDataLoader
from fastpipe._tensors import fresh_copy, map_tensors

Pair = namedtuple("Pair", "image label")


def test_map_tensors_and_fresh_copy_keep_namedtuples_lists_and_tuples():
    item = {"p": Pair(torch.zeros(2), torch.ones(1)), "l": [torch.zeros(1), 3], "t": (torch.ones(1), "s")}
    for out in (map_tensors(item, lambda t: t + 1), fresh_copy(item)):
        assert type(out["p"]) is Pair and type(out["l"]) is list and type(out["t"]) is tuple
        assert out["l"][1] == 3 and out["t"][1] == "s"
    moved = map_tensors(item, lambda t: t + 1)
    assert torch.equal(moved["p"].label, torch.full((1,), 2.0))
    copied = fresh_copy(item)
    assert copied["p"].image is not item["p"].image and torch.equal(copied["p"].image, item["p"].image)


def test_loader_moves_namedtuple_batches_to_the_device_as_torch_batches_them():
    ds = [Pair(torch.full((2,), float(i)), torch.tensor(i)) for i in range(4)]
    want = next(iter(torch.utils.data.DataLoader(ds, batch_size=2)))
    for kwargs in ({}, {"device": "cpu"}, {"pin_memory": True}):
        got = next(iter(ThreadDataLoader(ds, batch_size=2, **kwargs)))
        assert type(got) is Pair and torch.equal(got.image, want.image) and torch.equal(got.label, want.label)
