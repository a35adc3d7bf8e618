"""benchmarks.voxel_augment_epoch: each peer builds and runs one epoch on tiny volumes (in this process)."""

from __future__ import annotations

import pytest
import torch

from benchmarks.voxel_augment_epoch import PEERS, ratios, serve_peer
from benchmarks.workload import NUM_SAMPLES, PATCH


@pytest.mark.timeout(180)
def test_every_peer_gives_an_epoch_and_the_plans_say_batched_or_per_crop(restore_track_meta):
    shape = tuple(p + 2 for p in PATCH)  # the smallest volumes a 96^3 crop fits in
    for name in PEERS:
        peer = serve_peer(name, volumes=2, shape=shape, workers=1)
        wall, cpu, crops = peer.epoch()
        assert crops == 2 * NUM_SAMPLES and wall > 0, name
        batch = next(iter(peer.loader))
        assert tuple(batch["image"].shape) == (2 * NUM_SAMPLES, 1, *PATCH), name
        assert batch["image"].dtype == torch.float32, name
        plan = peer.ready_info["plan"]
        if name in ("fastpipe", "monai_compose"):
            assert "fast path: every step is cached or batched" in plan and "RandGaussianNoised" in plan, plan
        elif name == "fastpipe_monai_voxel":
            assert (
                "fast path: ends at step" in plan and "2 step(s) run after the batched op, per crop" in plan
            )


def test_ratios():
    med = {
        "fastpipe": 1.0,
        "monai_compose": 2.0,
        "fastpipe_monai_voxel": 3.0,
        "fastpipe_tutorial": 0.5,
        "monai_best": 4.0,
    }
    assert ratios(med) == {
        "vs_monai_best": 4.0,
        "monai_compose_vs_monai_best": 2.0,
        "vs_monai_voxel_per_crop": 3.0,
        "voxel_augment_cost": 2.0,
        "per_crop_voxel_augment_cost": 6.0,
    }
