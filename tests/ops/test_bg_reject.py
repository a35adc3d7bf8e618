"""Background centres by rejection (fastpipe.ops._bg_reject) and the compact index form."""

from __future__ import annotations

import pytest
import torch

from fastpipe.ops import _bg_reject
from fastpipe.ops._bg_reject import RejectBg, draw_rejected, tries_per_round
from fastpipe.ops.indices import compact_indices, fg_bg_indices


def test_tries_per_round_bounds_a_round_miss():
    assert tries_per_round(95, 100) == 4  # 0.05 ** 4 <= 1e-4 < 0.05 ** 3
    assert tries_per_round(100, 100) == 1
    t = tries_per_round(1, 10**6)
    assert t == 256  # capped per round; later rounds continue


def test_every_background_voxel_is_reached_and_nothing_else():
    lab = torch.ones(1, 3, 3, 3, dtype=torch.uint8)
    lab[0, 1, :, 1] = 0  # 3 of 27 voxels: expected 9 tries each
    spec = RejectBg(lab, None, 0.0, 3)
    got = draw_rejected([spec], [0] * 3000, torch.Generator().manual_seed(0))
    counts = torch.bincount(got, minlength=27)
    bg = fg_bg_indices(lab)[1]
    assert set(got.tolist()) == set(bg.tolist())
    assert all(abs(int(counts[i]) - 1000) <= 4 * (3000 * (1 / 3) * (2 / 3)) ** 0.5 for i in bg.tolist())


def test_exhausted_rejection_falls_back_to_the_list_with_a_warning(monkeypatch):
    monkeypatch.setattr(_bg_reject, "MAX_TRIES", 1)
    monkeypatch.setattr(_bg_reject, "_MAX_ROUND", 1)
    _bg_reject._exhausted_warned.clear()
    lab = torch.ones(1, 10, 10, 10, dtype=torch.uint8)
    lab[0, 4, 5, 6] = 0
    with pytest.warns(RuntimeWarning, match="not found by rejection"):
        got = draw_rejected(
            [RejectBg(lab, None, 0.0, 1)],
            [0] * 20,
            torch.Generator().manual_seed(0),
        )
    assert got.tolist() == [456] * 20


def test_image_rule_on_the_candidates():
    lab = torch.zeros(1, 4, 4, 4, dtype=torch.uint8)
    img = torch.zeros(2, 4, 4, 4)
    img[1, 2] = 5.0  # only x == 2 is above the threshold (any channel)
    got = draw_rejected([RejectBg(lab, img, 1.0, 16)], [0] * 500, torch.Generator().manual_seed(0))
    assert set((got // 16).tolist()) == {2} and len(set(got.tolist())) == 16


def test_compact_indices_count_and_int32():
    lab = torch.zeros(1, 8, 8, 8, dtype=torch.uint8)
    lab[0, :2] = 1
    img = torch.ones(1, 8, 8, 8)
    img[0, 7] = -1
    fg, bg = compact_indices(lab, img, 0.0)
    ref_fg, ref_bg = fg_bg_indices(lab, img, 0.0)
    assert fg.dtype == torch.int32 and torch.equal(fg.long(), ref_fg)
    assert bg.ndim == 0 and int(bg) == ref_bg.numel() == 5 * 64


def test_rows_of_several_volumes_each_get_their_own_background():
    a = torch.ones(1, 4, 4, 4, dtype=torch.uint8)
    a[0, 0, 0, 3] = 0
    b = torch.zeros(1, 5, 5, 5, dtype=torch.uint8)
    b[0, 2] = 1
    b = b.permute(0, 3, 2, 1).contiguous().permute(0, 3, 2, 1)  # not contiguous: indexed in place
    vol = torch.tensor([0] * 80 + [1] * 120)
    got = draw_rejected(
        [RejectBg(a, None, 0.0, 1), RejectBg(b, None, 0.0, 100)], vol.tolist(), torch.Generator()
    )
    assert set(got[vol == 0].tolist()) == {3}
    assert bool((got[vol == 1] // 25 != 2).all()) and got[vol == 1].max() < 125
