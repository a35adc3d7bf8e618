"""pytest-benchmark microbenchmark of a batch's planning: drawing the crops and the fused suffix (``make bench-micro``).

The tutorial epoch's batch: 2 cached volumes (``benchmarks.workload``'s prefix, so the foreground
list is int32 and the background a count, drawn by rejection), ``RandCropByPosNegLabeld`` with 4
crops of 96^3 per volume and the tutorial suffix fused into it. Only
``RandCropByPosNegLabeld.sample`` is timed: the draws, the rejection rounds and the centres, no copy.
This host work runs on the loader's thread between two batches' copies, so it is on an epoch's
critical path (README, "What limits it").
"""

from __future__ import annotations

from benchmarks import workload
from fastpipe import transforms as T
from fastpipe.transforms._fuse_random import fuse_random

SHAPE = (160, 150, 170)


def test_crop_sample_tutorial_batch(benchmark):
    chain = fuse_random([*workload.volume_prefix(T), *workload.fastpipe_random()])
    crop = chain[-1]
    assert type(crop).__name__ == "RandCropByPosNegLabeld" and len(crop.fused) == 5, crop
    items = []
    for d in workload.make_volumes(2, SHAPE):
        for t in chain[:-1]:
            d = t(d)
        items.append(d)
    assert items[0][workload.BG_KEY].ndim == 0, "the compact background count (rejection sampling)"
    crop.set_random_state(0)
    sample, draws = benchmark(crop.sample, items)
    assert sample.starts.shape == (8, 3) and len(draws) == 5
