"""benchmarks.tutorial_epoch: each peer builds and runs one epoch on tiny volumes (in this process)."""

from __future__ import annotations

import pytest
import torch

from benchmarks import workload as chains
from benchmarks.tutorial_epoch import PEERS, monai_compose, ratios, serve_peer
from benchmarks.workload import NUM_SAMPLES, PATCH


@pytest.mark.timeout(180)
def test_every_peer_gives_an_epoch_of_num_samples_crops_per_volume(restore_track_meta):
    shape = tuple(p + 2 for p in PATCH)  # the smallest volumes a 96^3 crop fits in
    for name in PEERS:
        peer = serve_peer(name, volumes=2, shape=shape, workers=1)
        wall, cpu, crops = peer.epoch()
        assert crops == 2 * NUM_SAMPLES and wall > 0, name
        if name.startswith("monai_compose"):
            plan = peer.ready_info["plan"]
            assert "MONAI -> fastpipe" in plan and "batched" in plan, plan
            assert "fast path: every step is cached or batched" in plan, plan
        batch = next(iter(peer.loader))
        assert tuple(batch["image"].shape) == (2 * NUM_SAMPLES, 1, *PATCH), name
        assert batch["image"].dtype == torch.float32, name


def test_the_compose_is_the_tutorial_chain_and_ratios_have_the_targets_keys():
    names = [type(t).__name__ for t in monai_compose().transforms]
    assert names[-5:] == ["RandFlipd"] * 3 + ["RandRotate90d", "RandShiftIntensityd"]
    assert [t.flipper.spatial_axis for t in monai_compose().transforms[-5:-2]] == [[0], [1], [2]]
    assert (
        chains.tutorial_suffix(__import__("monai.transforms", fromlist=["x"]))[-1].prob == chains.SHIFT_PROB
    )
    med = {
        "fastpipe": 1.0,
        "monai_compose": 2.0,
        "monai_compose_monai_loader": 4.0,
        "monai_best": 8.0,
        "plain_copy": 0.5,
        "plain_copy_reused": 0.25,
    }
    assert "suffix_cost" not in ratios(med)  # only when the crop-only peer ran
    assert ratios({**med, "fastpipe_crop_only": 0.5})["suffix_cost"] == 2.0
    assert ratios(med) == {
        "vs_monai_best": 8.0,
        "monai_compose_vs_monai_best": 4.0,
        "monai_compose_monai_loader_vs_monai_best": 2.0,
        "vs_plain_copy": 4.0,  # against the faster floor
        "floor_vs_monai_best": 32.0,
        "vs_plain_copy_fresh": 2.0,
        "vs_plain_copy_reused": 4.0,
    }


def test_monai_best_practice_peer_neither_copies_the_cache_nor_tracks_meta(restore_track_meta):
    """The peer the 4x target is measured against must be MONAI at its documented best settings."""
    from monai.data import get_track_meta

    from benchmarks.tutorial_epoch import build_peer
    from benchmarks.workload import make_volumes

    loader, ds = build_peer("monai_best", make_volumes(1, tuple(p + 2 for p in PATCH)), 1)
    assert ds.copy_cache is False and get_track_meta() is False
    assert type(loader).__name__ == "ThreadDataLoader"


def test_the_reused_floor_copies_the_same_bytes_into_one_batch():
    from benchmarks.cached_epoch_peers import PlainCopy
    from benchmarks.workload import make_volumes

    data = make_volumes(4, tuple(p + 3 for p in PATCH))
    fresh = [{k: v.clone() for k, v in b.items()} for b in PlainCopy(data, seed=1)]
    reused = PlainCopy(data, seed=1, reuse_buffers=True)
    ptrs = set()
    for b, want in zip(reused, fresh, strict=True):
        ptrs.add(b["image"].data_ptr())
        assert torch.equal(b["image"], want["image"]) and torch.equal(b["label"], want["label"])
    assert len(ptrs) == 1  # every batch written into the same tensors


class _FakePeer:
    """Answers ``call("epoch")`` with ``(wall, cpu, crops)``: wall counts this peer's epochs in a row."""

    def __init__(self, log: list[str], name: str) -> None:
        self.log, self.name, self.streak = log, name, 0

    def call(self, method: str):
        assert method == "epoch"
        self.streak = self.streak + 1 if self.log and self.log[-1] == self.name else 1
        self.log.append(self.name)
        return float(self.streak), 0.5, 8


def test_turns_keep_each_turns_first_epoch_apart_and_time_the_rest():
    from benchmarks.peer_epochs import _epoch_row, _time_interleaved

    log: list[str] = []
    peers = {n: _FakePeer(log, n) for n in ("a", "b", "c")}
    out = _time_interleaved(peers, epochs=7, warmup=1, turn=3)  # 7 epochs: 3 whole turns
    assert len(log) == 3 * (1 + 3) * 3  # warm-up round + 3 rounds, 3 epochs per turn, 3 peers
    for name in peers:
        # a peer's turn runs in a row: its first epoch is the 1st of the streak, the rest 2nd and 3rd
        assert out[name]["first_wall"] == [1.0] * 3
        assert sorted(out[name]["wall"]) == [2.0] * 3 + [3.0] * 3
        row = _epoch_row(out[name], volumes=2)
        assert row["first_epoch_s"]["median"] == 1.0 and row["epoch_s"]["median"] == 2.5
    one = _time_interleaved({n: _FakePeer([], n) for n in "ab"}, epochs=4, warmup=0, turn=1)
    assert "first_wall" not in one["a"] and len(one["a"]["wall"]) == 4  # turn 1: every epoch timed


def test_a_verdict_is_flagged_noisy_when_a_peer_it_compares_spread_too_much():
    from benchmarks.tutorial_epoch import noisy_verdicts

    def row(median, iqr):
        return {"epoch_s": {"median": median, "iqr": iqr}}

    rows = {"fastpipe": row(0.03, 0.003), "monai_compose": row(0.03, 0.02), "monai_best": row(0.13, 0.09),
            "plain_copy": row(0.04, 0.005), "plain_copy_reused": row(0.02, 0.002)}  # fmt: skip
    got = noisy_verdicts(rows)
    assert got["vs_monai_best"] == ["monai_best"]  # 69% of its median
    assert got["monai_compose_vs_monai_best"] == ["monai_compose", "monai_best"]
    assert got["vs_plain_copy"] == []  # fastpipe 10%, the faster floor (reused) 10%
    rows["plain_copy"] = row(0.04, 0.02)  # the slower floor spread: it does not decide the verdict
    assert noisy_verdicts(rows)["vs_plain_copy"] == []
    rows["plain_copy_reused"] = row(0.02, 0.01)
    assert noisy_verdicts(rows)["vs_plain_copy"] == ["plain_copy_reused"]
    del rows["plain_copy_reused"]  # only one floor measured: that one decides
    assert noisy_verdicts(rows)["vs_plain_copy"] == ["plain_copy"]
