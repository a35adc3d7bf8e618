"""The CUDA crop path's per-batch host work, checked on the CPU with stand-ins.

- One host-to-device copy per batch: every key's volume table, crop table, axis codes, intensity and
  error flag travel in one packed buffer (``fastpipe.ops._crop_tables``); the fused suffix's
  arguments are no longer copied one tensor kind at a time. A whole batch of
  ``RandCropByPosNegLabeld`` with the tutorial suffix runs through the dispatch and the real
  ``crop_batches_cuda`` with the host-compiled kernel standing in for the GPU (CuPy and the stream
  faked) and a counting ``to_device``.
- A non-contiguous CUDA volume (which takes the slow torch path) warns once, naming key, shape, strides.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import pytest
import torch

from fastpipe import transforms as T
from fastpipe.ops import _backends, _crop_tables, _cuda_crop, crop_batch, crop_batch_torch
from fastpipe.ops.indices import fg_bg_indices
from fastpipe.transforms import _crop_suffix, rand_crop
from fastpipe.transforms._fuse_random import fuse_random

sys.path.insert(0, str(Path(__file__).parent))
import _host_crop  # noqa: E402

KEYS = ["image", "label"]


@pytest.fixture(scope="module")
def lib(tmp_path_factory):
    return _host_crop.build(tmp_path_factory.mktemp("copies"))


@pytest.fixture
def copies(monkeypatch):
    """Every ``to_device`` of the crop path (launcher, suffix, transform), counted and passed through."""
    calls = []

    def counting(t, device):
        calls.append(tuple(t.shape))
        return t.to(device)

    for mod in (_crop_tables, _cuda_crop, _crop_suffix, rand_crop):
        monkeypatch.setattr(mod, "to_device", counting, raising=False)
    return calls


def test_one_launch_packs_every_table_into_one_copy(copies):
    g = torch.Generator().manual_seed(0)
    vols = [torch.rand((1, 9, 9, 9), generator=g) for _ in range(2)]
    n = 6
    out = torch.empty((n, 1, 4, 4, 4))
    kw = dict(
        flips=torch.rand((n, 3), generator=g) < 0.5,
        scale=torch.full((n,), 1.5),
        shift=torch.full((n,), 0.25),
        axes=torch.tensor([[1, 0, 2]] * n),
    )
    starts, vi = torch.randint(0, 5, (n, 3), generator=g), torch.arange(n) % 2
    _, _, _, t = _cuda_crop.launch_args(_host_crop._Pointers, vols, starts, vi, out, **kw)
    assert len(copies) == 1  # one host-to-device copy for the launch
    tables = [t.vols, t.starts, t.vol_index, t.codes, t.inten, t.err]
    assert len({x.untyped_storage().data_ptr() for x in tables}) == 1  # all views of the copied buffer
    assert t.err.item() == _cuda_crop.INT_MAX and t.vols[1, 0].item() == vols[1].data_ptr()
    assert t.codes.tolist() == _crop_tables.axis_codes(n, kw["flips"], kw["axes"], "cpu").tolist()


def _items(n, shape=(20, 18, 16)):
    g = torch.Generator().manual_seed(1)
    items = []
    for i in range(n):
        label = (torch.rand((1, *shape), generator=g) < 0.2).to(torch.uint8)
        fg, bg = fg_bg_indices(label)
        image = torch.rand((1, *shape), generator=g)
        items.append({"image": image, "label": label, "label_fg_indices": fg, "label_bg_indices": bg, "i": i})
    return items


def _tutorial_crop():
    chain = [T.RandCropByPosNegLabeld(KEYS, "label", (8, 8, 8), num_samples=4),
             *(T.RandFlipd(KEYS, prob=0.5, spatial_axis=[a]) for a in range(3)),
             T.RandRotate90d(KEYS, prob=0.5, max_k=3), T.RandShiftIntensityd("image", offsets=0.1, prob=0.5)]  # fmt: skip
    fused = fuse_random(chain)
    assert len(fused) == 1
    return fused[0]


def test_a_batch_makes_one_copy_through_the_kernel(lib, copies, monkeypatch):
    """The tutorial suffix; the dispatch told the volumes are on CUDA; the host kernel launched."""
    items = _items(3)
    ref = _tutorial_crop().set_random_state(7).batch_call(items)
    assert copies == []  # the CPU path copies nothing
    kernels = _host_crop.host_as_cuda(monkeypatch, lib)
    monkeypatch.setattr(_backends, "_on_cuda", lambda volumes: True)
    monkeypatch.setattr(_backends, "_load_cuda", lambda: _cuda_crop)
    got = _tutorial_crop().set_random_state(7).batch_call(items)
    assert kernels.launched == ["crop_pos_neg_f32_i32", "crop_pos_neg_b1_i32"]
    assert len(copies) == 1  # both keys' tables in one packed copy, nothing else
    for key in KEYS:
        assert torch.equal(got[key].view(torch.uint8), ref[key].view(torch.uint8)), key


def test_batched_calls_check_the_bounds_they_ask_for(lib, copies, monkeypatch):
    _host_crop.host_as_cuda(monkeypatch, lib)
    vols = [torch.ones((1, 8, 8, 8))]
    vi = torch.zeros(2, dtype=torch.int64)
    good, bad = torch.zeros((2, 3), dtype=torch.int64), torch.tensor([[0, 0, 0], [0, 6, 0]])
    call = dict(volumes=vols, vol_index=vi, size=(4, 4, 4), names=["a.nii.gz"])
    outs = _cuda_crop.crop_batches_cuda(
        [
            call | {"starts": good},
            call | {"starts": bad, "check_bounds": False, "out": torch.zeros(2, 1, 4, 4, 4)},
        ]
    )
    assert len(copies) == 1 and float(outs[0].sum()) == 128 and float(outs[1][1].sum()) == 0  # nothing read
    with pytest.raises(ValueError, match=r"crop 1 window start \(0, 6, 0\) .* outside volume 0 \(a.nii.gz\)"):
        _cuda_crop.crop_batches_cuda([call | {"starts": good}, call | {"starts": bad}])


@pytest.fixture
def as_if_cuda(monkeypatch):
    """The dispatch sees CUDA volumes; CuPy is 'missing', so they take the torch path, as on a GPU without it."""
    monkeypatch.setattr(_backends, "_on_cuda", lambda volumes: True)
    monkeypatch.setattr(_backends, "_load_cuda", lambda: None)
    monkeypatch.setattr(_backends, "_not_contiguous_warned", type(_backends._not_contiguous_warned)())


def test_non_contiguous_cuda_volume_warns_once_naming_key_shape_strides(as_if_cuda):
    vol = torch.rand((1, 10, 9, 8)).permute(0, 3, 2, 1)  # (1, 8, 9, 10), not contiguous
    starts, vi = torch.tensor([[1, 2, 3], [0, 0, 0]]), torch.tensor([0, 0])
    with pytest.warns(RuntimeWarning) as caught:
        got = crop_batch([vol], starts, vi, (4, 4, 4), key="image")
    assert len(caught) == 1
    msg = str(caught[0].message)
    assert "'image'" in msg and "(1, 8, 9, 10)" in msg and str(vol.stride()) in msg and "contiguous" in msg
    assert torch.equal(got, crop_batch_torch([vol.contiguous()], starts, vi, (4, 4, 4)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        crop_batch([vol], starts, vi, (4, 4, 4), key="image")  # once per process


def test_non_contiguous_out_is_named(as_if_cuda):
    vol = torch.rand((1, 8, 8, 8))
    out = torch.empty((1, 1, 4, 4, 8))[..., ::2]
    with pytest.warns(RuntimeWarning, match=r"key 'label': out of shape \(1, 1, 4, 4, 4\)"):
        crop_batch(
            [vol],
            torch.zeros((1, 3), dtype=torch.int64),
            torch.zeros(1, dtype=torch.int64),
            (4, 4, 4),
            out=out,
            key="label",
        )


def test_contiguous_or_cpu_volumes_do_not_warn(monkeypatch):
    monkeypatch.setattr(_backends, "_not_contiguous_warned", type(_backends._not_contiguous_warned)())
    vol = torch.rand((1, 10, 9, 8)).permute(0, 3, 2, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        crop_batch(
            [vol], torch.zeros((1, 3), dtype=torch.int64), torch.zeros(1, dtype=torch.int64), (4, 4, 4)
        )


def test_axis_codes():
    flips = torch.tensor([[False, False, False], [True, False, True]])
    axes = torch.tensor([[0, 1, 2], [2, 0, 1]])
    assert _crop_tables.axis_codes(2, flips, axes, "cpu").tolist() == [
        0 | 1 << 3 | 2 << 6,
        6 | 0 << 3 | 5 << 6,
    ]
    assert _crop_tables.axis_codes(2, None, None, "cpu").tolist() == [_crop_tables.IDENTITY_CODE] * 2
    assert _crop_tables.axis_codes(1, None, torch.tensor([[0, 5, -1]]), "cpu").tolist() == [
        0 | 3 << 3 | 3 << 6
    ]
