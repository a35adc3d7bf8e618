"""``benchmarks.distributed_bench``: what the launcher hands each rank."""

from __future__ import annotations

from benchmarks import distributed_bench, spleen


def test_the_ranks_get_save_so_rank_0_writes_where_asked(tmp_path):
    """``make bench NPROC=2 ARGS=--save`` wrote to bench-out/: ``--save`` was not forwarded to the ranks."""
    saved = distributed_bench._forward(spleen.parse_args(["--nproc", "2", "--save"]), tmp_path)
    assert "--save" in saved and spleen.parse_args(saved).save
    assert "--save" not in distributed_bench._forward(spleen.parse_args(["--nproc", "2"]), tmp_path)


def test_the_result_says_which_chain_it_ran(tmp_path):
    """The DDP run caches the prefix and runs the crop alone: its epochs are not the matrix rows' (which
    add the tutorial's random suffix), and the JSON must say so."""
    import argparse
    import json

    rank = {"rank": 0, "shard_items": 2, "cache_bytes": 2**20, "fill_s": 0.1, "epoch_s": {"median": 0.5},
            "batches_per_epoch": [1], "crops_per_s": {"median": 16.0}}  # fmt: skip
    args = argparse.Namespace(out=tmp_path / "ddp.json", preset="spleen-tiny")
    distributed_bench._report(args, [rank], 2, 1, 1)
    doc = json.loads((tmp_path / "ddp.json").read_text())
    assert "RandCropByPosNegLabeld alone" in doc["chain"] and "no random suffix" in doc["chain"]


def test_the_fill_time_waits_for_the_device(monkeypatch):
    """A rank's GPU cache fill queues asynchronous copies: fill_s is read after they finish (here 0.5 s)."""
    import argparse
    import time

    import torch

    import fastpipe

    queued = [0.5]  # seconds of device work the fill left queued

    def sync(device=None):
        time.sleep(queued.pop() if queued else 0.0)

    monkeypatch.setattr(distributed_bench, "sync", sync)
    monkeypatch.setattr(distributed_bench.dist, "get_rank", lambda: 0)
    monkeypatch.setattr(fastpipe, "CacheDataset", lambda *a, **k: "cache")
    monkeypatch.setattr(fastpipe, "ThreadDataLoader", lambda *a, **k: "loader")
    args = argparse.Namespace(device=None, preset="spleen-tiny", batch_size=1)
    _, _, fill_s = distributed_bench.build([], args, torch.device("cpu"), 1)
    assert fill_s >= 0.5


def test_the_result_names_the_commit_the_ranks_started_on(tmp_path, monkeypatch):
    """Rank 0 took the commit when it wrote the JSON: a commit made while the epochs ran relabelled them."""
    import argparse
    import json

    from benchmarks import common

    monkeypatch.setattr(common, "git_commit", lambda: "later")
    rank = {"rank": 0, "shard_items": 2, "cache_bytes": 2**20, "fill_s": 0.1, "epoch_s": {"median": 0.5},
            "batches_per_epoch": [1], "crops_per_s": {"median": 16.0}}  # fmt: skip
    args = argparse.Namespace(out=tmp_path / "ddp.json", preset="spleen-tiny")
    machine = {"host": "h", "commit": "started"}
    distributed_bench._report(args, [rank], 2, 1, 1, machine)
    doc = json.loads((tmp_path / "ddp.json").read_text())
    assert doc["machine"]["commit"] == "started" and doc["commit_at_end"] == "later"
