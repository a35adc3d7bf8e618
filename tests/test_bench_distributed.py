"""``benchmarks.distributed_bench``: what the launcher hands each rank."""

from __future__ import annotations

from benchmarks import distributed_bench, spleen


def test_the_ranks_get_save_so_rank_0_writes_where_asked(tmp_path):
    """``make bench NPROC=2 ARGS=--save`` wrote to bench-out/: ``--save`` was not forwarded to the ranks."""
    saved = distributed_bench._forward(spleen.parse_args(["--nproc", "2", "--save"]), tmp_path)
    assert "--save" in saved and spleen.parse_args(saved).save
    assert "--save" not in distributed_bench._forward(spleen.parse_args(["--nproc", "2"]), tmp_path)
