"""The crop-centre sampler: pos/neg ratio, MONAI's clamping, allow_smaller, empty labels, determinism."""

from __future__ import annotations

import ctypes
import math
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.transforms.utils import correct_crop_centers, map_binary_to_indices

from fastpipe.ops import sample
from fastpipe.ops._bg_reject import RejectBg
from fastpipe.ops._pad_sample import VirtualPad
from fastpipe.ops.indices import compact_indices, fg_bg_indices
from fastpipe.ops.sample import _centers_torch, crop_window, sample_crops, unravel_clamp

sys.path.insert(0, str(Path(__file__).parent))  # the shared host-kernel helper
import _host_cuda as host_cuda  # noqa: E402
from _host_cuda import compile_host  # noqa: E402


def blob_label(shape=(30, 24, 20), seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand((1, *shape), generator=g) < 0.1).to(torch.uint8)


@pytest.mark.parametrize("pos,neg", [(1, 1), (3, 7), (1, 0)])
def test_fg_fraction_matches_pos_ratio_within_3_sigma(pos, neg):
    label = blob_label()
    fg, bg = fg_bg_indices(label)
    n, ratio = 10_000, pos / (pos + neg)
    # size (1, 1, 1): no clamping, so the centre is the drawn voxel itself
    s = sample_crops(
        [fg, fg], [bg, bg], [label.shape[1:]] * 2, (1, 1, 1), n // 2, ratio, torch.Generator().manual_seed(1)
    )
    on_fg = label[0][tuple(s.centers.T)].bool()
    assert torch.equal(on_fg, s.is_fg)
    sigma = math.sqrt(ratio * (1 - ratio) / n)
    assert abs(on_fg.double().mean().item() - ratio) <= 3 * sigma + 1e-12


def test_clamping_equals_monai_correct_crop_centers():
    shape = (13, 10, 9)
    for size in [(4, 5, 9), (7, 3, 1), (13, 10, 2), (6, 6, 6)]:
        _, lo, hi, half = crop_window(shape, size, False, "v")
        for c in np.ndindex(*shape):
            ours = [min(max(ci, lo[a]), hi[a]) for a, ci in enumerate(c)]
            assert tuple(ours) == correct_crop_centers(list(c), size, shape), (size, c)
    # and through the sampler: every voxel is a candidate, every window inside the volume
    label = torch.ones((1, *shape), dtype=torch.uint8)
    fg, bg = fg_bg_indices(label)
    s = sample_crops([fg], [bg], [shape], (4, 5, 9), 2000, 1.0, torch.Generator().manual_seed(0))
    assert s.starts.min() >= 0
    assert (s.starts + torch.tensor([4, 5, 9]) <= torch.tensor(shape)).all()
    assert s.starts[:, 0].min() == 0 and s.starts[:, 0].max() == 13 - 4  # both borders reached


def test_allow_smaller_keeps_short_axes_whole_like_monai():
    shape = (5, 30, 4)
    with pytest.raises(ValueError, match=r"ROI \(8, 8, 8\) is larger than the volume \(5, 30, 4\) of vol-a"):
        crop_window(shape, (8, 8, 8), False, "vol-a")
    label = torch.ones((1, *shape), dtype=torch.uint8)
    fg, bg = fg_bg_indices(label)
    s = sample_crops(
        [fg], [bg], [shape], (8, 8, 8), 50, 1.0, torch.Generator().manual_seed(0), allow_smaller=True
    )
    assert s.size == (5, 8, 4)
    assert (s.starts[:, [0, 2]] == 0).all()
    for c in s.centers.tolist():
        assert tuple(c) == correct_crop_centers(c, (8, 8, 8), shape, allow_smaller=True)


def test_empty_foreground_warns_and_uses_background():
    label = torch.zeros((1, 10, 10, 10), dtype=torch.uint8)
    fg, bg = fg_bg_indices(label)
    with pytest.warns(UserWarning, match="0 foreground and 1000 background"):
        s = sample_crops([fg], [bg], [(10, 10, 10)], (4, 4, 4), 20, 1.0, torch.Generator().manual_seed(0))
    assert not s.is_fg.any()
    empty = torch.empty(0, dtype=torch.int64)
    with pytest.raises(ValueError, match="case-7 has no foreground and no background"):
        sample_crops([empty], [empty], [(10, 10, 10)], (4, 4, 4), 2, 0.5, names=["case-7"])


def test_no_warning_when_both_lists_present():
    label = blob_label()
    fg, bg = fg_bg_indices(label)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sample_crops([fg], [bg], [label.shape[1:]], (4, 4, 4), 4, 0.5)


def test_same_seed_same_centres_and_batch_sizes_must_agree():
    label = blob_label()
    fg, bg = fg_bg_indices(label)
    args = ([fg, fg], [bg, bg], [label.shape[1:]] * 2, (8, 8, 8), 4, 0.5)
    a = sample_crops(*args, generator=torch.Generator().manual_seed(9))
    b = sample_crops(*args, generator=torch.Generator().manual_seed(9))
    c = sample_crops(*args, generator=torch.Generator().manual_seed(10))
    assert torch.equal(a.centers, b.centers) and not torch.equal(a.centers, c.centers)
    assert a.vol_index.tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    with pytest.raises(ValueError, match=r"must share a size, got a: \(5, 8, 8\), b: \(8, 8, 8\)"):
        sample_crops([fg, fg], [bg, bg], [(5, 24, 20), (30, 24, 20)], (8, 8, 8), 1, 0.5, allow_smaller=True,
                     names=["a", "b"])  # fmt: skip


def test_fg_bg_indices_equal_monai_map_binary_to_indices():
    g = torch.Generator().manual_seed(2)
    # one-hot-ish, channel 0 dropped. float: MONAI 1.6 takes `~` of torch.any(uint8), which is uint8 in torch,
    # so for uint8 torch labels its background is every voxel; fastpipe uses the boolean meaning there too.
    label = (torch.rand((3, 9, 8, 7), generator=g) < 0.2).float()
    image = torch.randn((1, 9, 8, 7), generator=g)
    for img in (None, image):
        ours = fg_bg_indices(label, img, 0.3)
        ref = map_binary_to_indices(label, img, 0.3)
        for o, r in zip(ours, ref, strict=True):
            assert torch.equal(o, torch.as_tensor(r).long())
    assert all(
        torch.equal(a, b)
        for a, b in zip(fg_bg_indices(label.to(torch.uint8)), fg_bg_indices(label), strict=True)
    )


WRAPPER = r"""
extern "C" void run_sample_centers(const long long* plan, long long* c, long long* s, int n) {
  blockDim = {128, 1, 1};
  for (unsigned b = 0; b < (n + 127u) / 128u; ++b)
    for (unsigned t = 0; t < 128; ++t) { blockIdx = {b, 0, 0}; threadIdx = {t, 0, 0}; sample_centers(plan, c, s, n); }
}
extern "C" void one_sample_centers(const long long* plan, long long* c, long long* s, int n, unsigned i) {
  blockDim = {128, 1, 1}; blockIdx = {i / 128, 0, 0}; threadIdx = {i % 128, 0, 0};
  sample_centers(plan, c, s, n);
}
"""


def test_sample_kernel_source_matches_torch_reference_on_host(tmp_path):
    lib = compile_host("sample_centers.cu", WRAPPER, tmp_path)
    g = torch.Generator().manual_seed(4)
    shape, n = (23, 17, 29), 500
    flat = torch.randint(-50, 23 * 17 * 29 + 50, (n,), generator=g)  # out-of-range values too: same maths
    sizes = [(4, 5, 6), (23, 1, 7), (10, 17, 29)]
    table = torch.tensor(
        [(*shape, *sum(crop_window(shape, sizes[i % 3], False, "v")[1:], ()), i % 3) for i in range(n)]
    )
    plan = torch.cat([(flat.data_ptr() + 8 * torch.arange(n))[:, None], table], 1).contiguous()
    assert plan.shape[1] == 14, "the layout kernels/sample_centers.cu reads"
    got_c, got_s = torch.empty(n, 3, dtype=torch.int64), torch.empty(n, 3, dtype=torch.int64)
    ptr = ctypes.c_void_p
    lib.run_sample_centers(
        ptr(plan.data_ptr()), ptr(got_c.data_ptr()), ptr(got_s.data_ptr()), ctypes.c_int(n)
    )
    ref_c, ref_s = _centers_torch(flat, table)
    assert torch.equal(got_c, ref_c) and torch.equal(got_s, ref_s)
    # the host-int form the CPU path uses, crop by crop (Python's // and % floor as torch's do)
    rows = table.tolist()
    host = [
        unravel_clamp(f, r[:3], r[3:6], r[6:9], r[9:12]) for f, r in zip(flat.tolist(), rows, strict=True)
    ]
    assert [c for c, _ in host] == got_c.tolist() and [st for _, st in host] == got_s.tolist()


def test_sample_kernel_writes_crops_past_715827882_in_place(tmp_path):
    """Crop i's centre and start go to entries 3i..3i + 2 of their tables: past 2^31 from
    i = 715827883, where a 32-bit product wraps to 32 GiB below. Only that crop runs; its plan row is
    a real one and the outputs are sparse 32 GiB mappings holding both places."""
    lib = compile_host("sample_centers.cu", WRAPPER, tmp_path)
    i = 715827883
    flat = torch.tensor([5 * 17 * 29 + 6 * 29 + 7])  # voxel (5, 6, 7) of a (23, 17, 29) volume
    row = torch.tensor([[flat.data_ptr(), 23, 17, 29, 2, 2, 2, 20, 14, 26, 3, 3, 3, 0]])
    outs = [host_cuda.sparse_tensor(2**32 + 3, torch.int64) for _ in range(2)]
    ptr = ctypes.c_void_p
    lib.one_sample_centers(
        ptr(row.data_ptr() - 8 * 14 * i),
        *(ptr(t.data_ptr() + 8 * (2**32 - 3 * i)) for t in outs),
        ctypes.c_int(i + 1),
        ctypes.c_uint(i),
    )
    assert outs[0][2**32 :].tolist() == [5, 6, 7] and outs[1][2**32 :].tolist() == [2, 3, 4]
    assert outs[0][:3].tolist() == [0, 0, 0] and outs[1][:3].tolist() == [0, 0, 0]


def test_kernel_plan_addresses_each_crops_list_element(tmp_path, monkeypatch):
    """``_centers_cuda``'s plan (the address of each crop's drawn list element, views with an offset
    included) run by the host-compiled kernel gives the host path's centres, starts and volumes."""
    lib = compile_host("sample_centers.cu", WRAPPER, tmp_path)

    def host_kernel(plan):
        c, s = (
            torch.empty(plan.shape[0], 3, dtype=torch.int64),
            torch.empty(plan.shape[0], 3, dtype=torch.int64),
        )
        ptr = ctypes.c_void_p
        lib.run_sample_centers(
            ptr(plan.data_ptr()), ptr(c.data_ptr()), ptr(s.data_ptr()), ctypes.c_int(len(plan))
        )
        return c, s

    monkeypatch.setattr(sample._backends, "sample_centers", host_kernel)
    shapes, ns = [(20, 18, 16), (14, 22, 12), (9, 9, 9)], 5
    lists = [fg_bg_indices(blob_label(s, seed=i)) for i, s in enumerate(shapes)]
    fg, bg = [f[3:] for f, _ in lists], [b[1:] for _, b in lists]  # views: data_ptr past the storage's start
    windows = [crop_window(s, (8, 8, 8), True, "v") for s in shapes]
    g = torch.Generator().manual_seed(1)
    is_fg, k = sample.draw_choices([f.numel() for f in fg], [b.numel() for b in bg], ns, 0.4, g, "abc")
    rows = [(*s, *w[1], *w[2], *w[3], v) for v, (s, w) in enumerate(zip(shapes, windows, strict=True))]
    table = torch.tensor([r for r in rows for _ in range(ns)], dtype=torch.int64)
    centers, starts, vol = sample._centers_cuda(fg, bg, is_fg, k, table)
    ref = torch.tensor(sample._centers_on_host(fg, bg, [None] * 3, is_fg, k, windows, shapes, ns, None))
    assert (
        torch.equal(centers, ref[:, :3]) and torch.equal(starts, ref[:, 3:6]) and torch.equal(vol, ref[:, 6])
    )
    assert 0 < sum(is_fg) < len(is_fg)  # both lists drawn from


@pytest.mark.gpu
def test_same_seed_same_centres_on_cpu_and_gpu(cuda_device):
    label = blob_label((40, 36, 30))
    fg, bg = fg_bg_indices(label)
    shp = [label.shape[1:]] * 3
    cpu = sample_crops([fg] * 3, [bg] * 3, shp, (16, 16, 16), 4, 0.4, torch.Generator().manual_seed(3))
    fgd, bgd = fg.to(cuda_device), bg.to(cuda_device)
    gpu = sample_crops(
        [fgd] * 3, [bgd] * 3, shp, (16, 16, 16), 4, 0.4, torch.Generator().manual_seed(3), cuda_device
    )
    assert gpu.centers.is_cuda
    assert torch.equal(cpu.centers, gpu.centers.cpu()) and torch.equal(cpu.starts, gpu.starts.cpu())


def _volume(shape, seed, fg_frac):
    g = torch.Generator().manual_seed(seed)
    label = (torch.rand((1, *shape), generator=g) < fg_frac).to(torch.uint8)
    image = torch.rand((1, *shape), generator=g)
    return label, image


@pytest.mark.parametrize("case", ["lists", "compact", "pad", "compact+pad", "allow_smaller", "empty fg"])
def test_host_path_equals_the_tensor_path(case, monkeypatch):
    """Index lists on the CPU take host-int maths; lists on a GPU the tensor ops (forced here on CPU
    tensors): both must draw the same crops from one seed, pads and rejection included."""
    shapes = [(20, 18, 16), (17, 22, 19), (24, 19, 21)]
    size = (16, 16, 16) if "pad" not in case else (2, 2, 2)  # small windows: centres seen unclamped
    fg, bg, reject = [], [], []
    for v, shp in enumerate(shapes):
        label, image = _volume(shp, v, 0.0 if case == "empty fg" and v == 1 else 0.15)
        if "compact" in case:
            f, count = compact_indices(label, image, 0.3)
            fg.append(f)
            bg.append(count)
            reject.append(RejectBg(label, image, 0.3, int(count)))
        else:
            f, b = fg_bg_indices(label)
            fg.append(f)
            bg.append(b)
            reject.append(None)
    pads = None
    if "pad" in case:
        pads = [VirtualPad(tuple((30 - s) // 2 for s in shp), shp, (30, 30, 30), True) for shp in shapes]
    grid = [p.padded for p in pads] if pads else shapes
    if case == "allow_smaller":  # one volume thrice, a window longer than two of its axes
        fg, bg, reject, grid, size = [fg[0]] * 3, [bg[0]] * 3, [None] * 3, [shapes[0]] * 3, (19, 16, 40)
    args = (fg, bg, grid, size, 7, 0.4)
    kw = dict(allow_smaller=case == "allow_smaller", pads=pads, reject=reject)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the empty-foreground volume warns, on both paths
        host = sample_crops(*args, generator=torch.Generator().manual_seed(5), **kw)
        monkeypatch.setattr(sample, "_index_devices", lambda *a: {torch.device("meta")})
        tensor = sample_crops(*args, generator=torch.Generator().manual_seed(5), **kw)
    for name in ("centers", "starts", "vol_index", "is_fg"):
        a, b = getattr(host, name), getattr(tensor, name)
        assert a.dtype == b.dtype and torch.equal(a, b), name
    assert host.size == tensor.size
    assert host.is_fg.any() and not host.is_fg.all()
    if "pad" in case:  # some crops centre on pad voxels: outside the unpadded volume
        lo = torch.tensor([p.lo for p in pads])[host.vol_index]
        inner = torch.tensor([p.shape for p in pads])[host.vol_index]
        c = host.centers - lo
        assert ((c < 0) | (c >= inner)).any(1).any()
