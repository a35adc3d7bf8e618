"""The CUDA crop path's per-batch host work, checked on the CPU with stand-ins.

- One host-to-device copy and one launch per batch: a descriptor row per key, then every key's volume
  table, crop table, axis codes, intensity and error flag travel in one packed buffer
  (``fastpipe.ops._crop_tables``); the fused suffix's arguments are not copied one tensor kind at a
  time, nor each key launched on its own. A whole batch of
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


def _slot(desc_row: torch.Tensor, flat: torch.Tensor, slot: int, dtype, count: int) -> torch.Tensor:
    """What slot ``slot`` of a descriptor row points at, read as the kernel does (offset or address)."""
    word, flags = int(desc_row[slot]), int(desc_row[15])
    addr = flat.data_ptr() + word if (flags >> (16 + slot)) & 1 else word
    nbytes = count * torch.empty((), dtype=dtype).element_size()
    off = addr - flat.data_ptr()
    assert 0 <= off <= flat.numel() - nbytes, f"slot {slot} points outside the packed buffer"
    return flat[off : off + nbytes].view(dtype)


def test_one_launch_packs_every_key_and_table_into_one_copy(copies):
    g = torch.Generator().manual_seed(0)
    vols = [torch.rand((1, 9, 9, 9), generator=g) for _ in range(2)]
    labels = [(v > 0.5).to(torch.uint8) for v in vols]
    n = 6
    out, lab = torch.empty((n, 1, 4, 4, 4)), torch.empty((n, 1, 4, 4, 4), dtype=torch.uint8)
    kw = dict(
        flips=torch.rand((n, 3), generator=g) < 0.5,
        scale=torch.full((n,), 1.5),
        shift=torch.full((n,), 0.25),
        axes=torch.tensor([[1, 0, 2]] * n),
    )
    starts, vi = torch.randint(0, 5, (n, 3), generator=g), torch.arange(n) % 2
    calls = [
        dict(volumes=vols, starts=starts, vol_index=vi, out=out, **kw),
        dict(volumes=labels, starts=starts, vol_index=vi, out=lab, flips=kw["flips"], axes=kw["axes"]),
    ]
    name, grid, args, launch = _cuda_crop.launch_args(_host_crop._Pointers, calls)
    assert len(copies) == 1  # one host-to-device copy for both keys' tables
    assert name == "crop_pos_neg_i32" and int(args[1]) == 2
    flat = launch.packed  # the descriptor table, then the host tables
    assert launch.desc.data_ptr() == flat.data_ptr()
    codes = _crop_tables.axis_codes(n, kw["flips"], kw["axes"], "cpu").tolist()
    for k, (row, vs) in enumerate(zip(launch.desc, (vols, labels), strict=True)):
        assert (int(row[15]) >> 16) & 0b0111111 == 0b0111111  # slots 0-5 packed; the output never is
        table = _slot(row, flat, 0, torch.int64, 8).view(2, 4)
        assert table[:, 0].tolist() == [v.data_ptr() for v in vs] and table[0, 1:].tolist() == [9, 9, 9]
        assert _slot(row, flat, 1, torch.int64, 3 * n).view(n, 3).tolist() == starts.tolist()
        assert _slot(row, flat, 2, torch.int64, n).tolist() == vi.tolist()
        assert _slot(row, flat, 3, torch.int32, n).tolist() == codes
        assert int(_slot(row, flat, 5, torch.int32, 1)) == _cuda_crop.INT_MAX
        assert int(row[6]) == calls[k]["out"].data_ptr()
        assert row[10:15].tolist() == [1, 4, 4, 4, 2]  # C, size, volumes
        kind, use_inten = (int(row[15]) >> 8) & 7, int(row[15]) & 1
        assert (kind, use_inten) == ((0, 1) if k == 0 else (1, 0))  # float32 with intensity; uint8 without
    inten = _slot(launch.desc[0], flat, 4, torch.float32, 2 * n).view(n, 2)
    assert inten[:, 0].tolist() == [1.5] * n and inten[:, 1].tolist() == [0.25] * n
    rows = n * 4 * 4  # per key: N * C * O0 * O1
    per_block = [256 >> int((int(r[15]) >> 2) & 7) for r in launch.desc]
    assert int(launch.desc[1, 9]) == -(-rows // per_block[0])  # the label's blocks follow the image's
    assert grid[0] == int(launch.desc[1, 9]) + -(-rows // per_block[1])


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
    assert kernels.launched == ["crop_pos_neg_i32"]  # one launch for both keys
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


def test_tables_on_the_device_are_named_by_address_and_read(lib, monkeypatch):
    """Tables left where they are (the sampler's device starts) go in by address; the kernel reads both kinds."""
    monkeypatch.setattr(_crop_tables, "packable", lambda name, t: name not in ("out", "starts", "codes"))
    g = torch.Generator().manual_seed(3)
    vols = [torch.rand((1, 10, 9, 11), generator=g) for _ in range(2)]
    labels = [(v > 0.5).to(torch.uint8) for v in vols]
    n = 5
    starts, vi = torch.randint(0, 5, (n, 3), generator=g), torch.arange(n) % 2
    flips, shift = torch.rand((n, 3), generator=g) < 0.5, torch.full((n,), 0.5)
    calls = [
        dict(volumes=vols, starts=starts, vol_index=vi, out=torch.zeros((n, 1, 4, 4, 4)), flips=flips, shift=shift),
        dict(volumes=labels, starts=starts, vol_index=vi, out=torch.zeros((n, 1, 4, 4, 4), dtype=torch.uint8)),
    ]  # fmt: skip
    name, grid, args, launch = _cuda_crop.launch_args(_host_crop._Pointers, calls)
    for row in launch.desc:
        relative = int(row[15]) >> 16
        # starts (slot 1) and codes (slot 3) by address, the volume table (slot 0) packed
        assert not relative & (1 << 1) and not relative & (1 << 3) and relative & 1
        assert int(row[1]) == starts.data_ptr()
    _host_crop.run_launch(lib, name, grid, _cuda_crop.BLOCK, args)
    assert [int(e) for e in launch.errs] == [_cuda_crop.INT_MAX] * 2
    ref = crop_batch_torch(vols, starts, vi, (4, 4, 4), flips=flips, shift=shift)
    assert torch.equal(calls[0]["out"], ref)
    assert torch.equal(calls[1]["out"], crop_batch_torch(labels, starts, vi, (4, 4, 4)))


def test_one_wide_key_makes_the_launch_64_bit():
    huge = [torch.empty(1, dtype=torch.uint8).expand(1, 1, 1, 2**31)]  # > 2^31 elements, no memory
    small = [torch.zeros((1, 8, 8, 8))]
    st, vi = torch.zeros((1, 3), dtype=torch.int64), torch.zeros(1, dtype=torch.int64)
    base = dict(starts=st, vol_index=vi)
    narrow = dict(base, volumes=small, out=torch.empty((1, 1, 1, 1, 4)))
    wide = dict(base, volumes=huge, out=torch.empty((1, 1, 1, 1, 4), dtype=torch.uint8))
    assert _cuda_crop.launch_args(_host_crop._Pointers, [narrow])[0] == "crop_pos_neg_i32"
    assert _cuda_crop.launch_args(_host_crop._Pointers, [narrow, wide])[0] == "crop_pos_neg_i64"


@pytest.mark.parametrize("index", ["i32", "i64"])
def test_one_launch_of_keys_of_every_kind_equals_torch(lib, monkeypatch, index):
    """Keys of different element kinds, channels and lanes per row in one launch (the block -> key search),
    with pads past the borders, turns, flips, intensity and a misaligned output: each equals the torch path."""
    kernels = _host_crop.host_as_cuda(monkeypatch, lib)
    monkeypatch.setattr(_cuda_crop, "index_kind", lambda volumes, out: index)
    g = torch.Generator().manual_seed(11)
    n, size, shapes = 7, (5, 5, 5), [(9, 7, 11), (6, 12, 8)]
    starts = torch.tensor([[-3, 0, 2], [4, 3, 6], [0, -4, -1], [5, 8, 0], [1, 1, 1], [-4, 7, 3], [2, 0, 6]])
    vi = torch.arange(n) % 2
    perms = [[0, 1, 2], [2, 0, 1], [1, 2, 0], [0, 2, 1], [2, 1, 0], [1, 0, 2], [0, 1, 2]]
    turns = dict(axes=torch.tensor(perms), flips=torch.rand((n, 3), generator=g) < 0.5)
    keys = {  # dtype, channels, extra arguments
        "image": (torch.float32, 2, dict(scale=torch.rand(n, generator=g) + 0.5, shift=torch.rand(n, generator=g))),
        "label": (torch.uint8, 1, {}),
        "weights": (torch.float16, 3, {}),
        "ids": (torch.int64, 1, {}),
    }  # fmt: skip
    calls, refs = [], []
    for k, (dtype, c, extra) in enumerate(keys.values()):
        vols = [(torch.randn((c, *s), generator=g) * 40).to(dtype) for s in shapes]
        kw = dict(turns, pad_value=float(k + 1), **extra)
        refs.append(crop_batch_torch(vols, starts, vi, size, **kw))
        out = torch.zeros(n * c * 125 + 3, dtype=dtype)[3:].view(n, c, *size) if k == 2 else None
        calls.append(dict(volumes=vols, starts=starts, vol_index=vi, size=size, out=out, **kw))
    outs = _cuda_crop.crop_batches_cuda(calls)
    assert kernels.launched == [f"crop_pos_neg_{index}"]  # every key in one launch
    for name, got, ref in zip(keys, outs, refs, strict=True):
        assert torch.equal(got.view(torch.uint8), ref.view(torch.uint8)), name
