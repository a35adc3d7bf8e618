"""The crop kernel's 8-byte path and 32/64-bit index variants equal the torch path bit for bit (host shim).

The kernel moves 8 bytes per load and store where a crop reads its last axis forward, with head and
tail elements one by one, and picks 32-bit index maths per launch when every volume and the output
have fewer than 2^31 elements. These tests run both index variants over every element size, every
orientation, pads past each border, odd row lengths, every start modulo 8 and misaligned outputs, and
one volume past 2^31 elements (a lazily allocated host tensor: only the windows' pages are touched).
"""

from __future__ import annotations

import ctypes
import itertools
import sys
from pathlib import Path

import pytest
import torch

from fastpipe.ops import _cuda_crop, crop_batch_torch
from fastpipe.ops._cuda_crop import index_kind, lanes_log2

sys.path.insert(0, str(Path(__file__).parent))
import _host_crop  # noqa: E402
import _host_cuda  # noqa: E402

DTYPES = [
    torch.uint8,
    torch.int16,
    torch.float16,
    torch.bfloat16,
    torch.float32,
    torch.int64,
]  # int64: 8-byte elements
PERMS = list(itertools.permutations(range(3)))


@pytest.fixture(scope="module")
def lib(tmp_path_factory):
    return _host_crop.build(tmp_path_factory.mktemp("vector"))


def _vols(dtype, shapes, seed):
    g = torch.Generator().manual_seed(seed)
    out = []
    for s in shapes:
        if dtype.is_floating_point:
            out.append((torch.randn((2, *s), generator=g) * 50).to(dtype))
        else:
            info = torch.iinfo(dtype)
            out.append(torch.randint(info.min, info.max, (2, *s), generator=g, dtype=dtype))
    return out


def _misaligned(shape, dtype, skew):
    """A contiguous output whose first element sits ``skew`` elements past an aligned address."""
    n = 1
    for s in shape:
        n *= s
    return torch.zeros(n + skew, dtype=dtype)[skew:].view(shape)


def _case(n, size, shapes, padded, perms, g):
    """Crops with every start modulo 8 on the last source axis, and (padded) starts past each border."""
    vi = torch.arange(n) % len(shapes)
    axes = torch.tensor([perms[i % len(perms)] for i in range(n)])
    starts = []
    for i in range(n):
        shape, row = shapes[vi[i]], []
        for a in range(3):
            ext = size[axes[i].tolist().index(a)]
            hi = shape[a] - ext
            if padded and i % 4 == 3:
                row.append([-ext + 1, -2, hi + 2, shape[a] - 1][(i // 4 + a) % 4])
            else:
                row.append(
                    min(hi, (i // len(perms) + 3 * a) % 8)
                    if a == 2
                    else int(torch.randint(0, hi + 1, (), generator=g))
                )
        starts.append(row)
    flips = torch.rand((n, 3), generator=g) < 0.5
    flips[::3, 2] = False  # plenty of forward last axes: the 8-byte path
    return torch.tensor(starts), vi, flips, axes


def _row_case(size, shapes, padded, dtype, g):
    """32 crops of ``size`` in every orientation that keeps it, with pad and (float32) intensity."""
    perms = [p for p in PERMS if all(size[p[a]] == size[a] for a in range(3))]
    starts, vi, flips, axes = _case(32, size, shapes, padded, perms, g)
    kw = dict(flips=flips, axes=axes, pad_value=(7.0 if padded else None))
    if dtype == torch.float32:
        kw["scale"] = torch.where(torch.arange(32) % 3 == 0, 1.0, 1.25)
        kw["shift"] = torch.where(torch.arange(32) % 5 == 0, -0.0, 0.375)
    return starts, vi, kw


@pytest.mark.parametrize("index", ["i32", "i64"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_vector_path_equals_torch_for_odd_rows_starts_pads_and_misaligned_outputs(lib, dtype, index):
    g = torch.Generator().manual_seed(11)
    shapes = [(7, 9, 29), (6, 8, 31)]
    vols = _vols(dtype, shapes, 3)
    before = _host_crop.store8_counts(lib)
    for o2, padded, skew in itertools.product((1, 3, 8, 13, 22), (False, True), (0, 1, 3)):
        size = (3, 3, o2)
        starts, vi, kw = _row_case(size, shapes, padded, dtype, g)
        ref = crop_batch_torch(vols, starts, vi, size, **kw)
        out = _misaligned(ref.shape, dtype, skew)
        got, bad, name = _host_crop.run(lib, vols, starts, vi, size, out=out, index=index, **kw)
        assert bad is None and name.endswith(index)
        assert torch.equal(got.view(torch.uint8), ref.view(torch.uint8)), (o2, padded, skew)
    stores, misaligned = (a - b for a, b in zip(_host_crop.store8_counts(lib), before, strict=True))
    assert misaligned == 0  # the 8-byte stores never hit a misaligned address
    assert stores > 500 or dtype.itemsize == 8  # the packed 8-byte path ran (8-byte elements go one by one)


@pytest.mark.parametrize("index", ["i32", "i64"])
@pytest.mark.parametrize("dtype", [torch.uint8, torch.int16, torch.float32], ids=str)
def test_every_orientation_of_a_cube_with_pad(lib, dtype, index):
    g = torch.Generator().manual_seed(5)
    shapes = [(9, 10, 11)]
    vols = _vols(dtype, shapes, 4)
    size = (5, 5, 5)
    orient = list(itertools.product(PERMS, itertools.product((False, True), repeat=3)))
    n = len(orient)
    axes = torch.tensor([p for p, _ in orient])
    flips = torch.tensor([f for _, f in orient])
    starts = torch.randint(-4, 11, (n, 3), generator=g)
    vi = torch.zeros(n, dtype=torch.int64)
    ref = crop_batch_torch(vols, starts, vi, size, flips=flips, axes=axes, pad_value=2.0)
    got, bad, _ = _host_crop.run(
        lib, vols, starts, vi, size, flips=flips, axes=axes, pad_value=2.0, index=index
    )
    assert bad is None and torch.equal(got.view(torch.uint8), ref.view(torch.uint8))


def test_index_kind_and_lanes(monkeypatch):
    small = [torch.empty(1, dtype=torch.uint8).expand(1, 1, 1, 2**31 - 1)]
    assert index_kind(small, torch.empty(8)) == "i32"
    assert index_kind([*small, torch.empty(1).expand(1, 1, 1, 2**31)], torch.empty(8)) == "i64"
    assert index_kind(small, torch.empty(1).expand(2**31)) == "i64"  # the output counts too
    assert lanes_log2(96, 4) == 2 and lanes_log2(96, 1) == 2  # the default: at most 4 lanes (an H200's best)
    assert (
        lanes_log2(5, 8) == 2 and lanes_log2(1, 1) == 0 and lanes_log2(8, 1) == 0 and lanes_log2(16, 1) == 1
    )
    monkeypatch.setattr(_cuda_crop, "MAX_LANES_LOG2", 5)  # a warp at most
    assert lanes_log2(96, 1) == 4  # 12 chunks of 8 bytes -> 16 lanes, two rows per warp
    assert lanes_log2(96, 4) == 5  # 48 chunks -> a warp
    assert lanes_log2(5, 8) == 3


@pytest.mark.parametrize("most", [0, 1, 2, 3, 4, 5])
def test_fewer_lanes_per_row_cut_the_same_bytes(lib, monkeypatch, most):
    """The lanes cap (which the GPU check sweeps) changes who moves what, never the result: 2^most
    threads per row, each taking more 8-byte chunks, on every orientation with pad and intensity,
    and rows whose length is no multiple of the lanes."""

    monkeypatch.setattr(_cuda_crop, "MAX_LANES_LOG2", most)
    assert lanes_log2(96, 4) == most
    g = torch.Generator().manual_seed(6)
    shapes = [(9, 10, 41), (11, 9, 44)]
    size = (5, 5, 37)  # rows of 37: 19 chunks of float32, 5 of uint8
    orient = [(p, f) for p in PERMS if p[2] == 2 for f in itertools.product((False, True), repeat=3)]
    n = len(orient)
    axes = torch.tensor([p for p, _ in orient])
    flips = torch.tensor([f for _, f in orient])
    starts = torch.stack([torch.randint(-3, s - 2, (n,), generator=g) for s in (9, 9, 41)], 1)
    vi = torch.randint(0, 2, (n,), generator=g)
    for dtype in (torch.float32, torch.uint8):
        vols = _vols(dtype, shapes, 8)
        kw = dict(flips=flips, axes=axes, pad_value=2.0)
        if dtype == torch.float32:
            kw |= dict(scale=1 + torch.rand(n, generator=g), shift=torch.rand(n, generator=g) - 0.5)
        ref = crop_batch_torch(vols, starts, vi, size, **kw)
        got, bad, _ = _host_crop.run(lib, vols, starts, vi, size, out=_misaligned(ref.shape, dtype, 1), **kw)
        assert bad is None and torch.equal(got.view(torch.uint8), ref.view(torch.uint8)), dtype


@pytest.mark.timeout(120)
def test_volume_past_2_31_elements_takes_64_bit_offsets(lib):
    """Windows at the far corners of a 1300^3 uint8 volume (2.197e9 elements): offsets past 2^31."""
    shape = (1300, 1300, 1300)
    vol = torch.empty((1, *shape), dtype=torch.uint8)  # untouched pages are never committed
    w = 12
    corners = list(itertools.product(*[(0, s - w) for s in shape]))
    g = torch.Generator().manual_seed(9)
    for c in corners:
        win = tuple(slice(x, x + w) for x in c)
        vol[(0, *win)] = torch.randint(0, 256, (w, w, w), generator=g, dtype=torch.uint8)
    starts = torch.tensor([*corners, [1300 - w + 4, 1300 - w, 1300 - w + 5]])  # last: reaches past the end
    n = starts.shape[0]
    vi = torch.zeros(n, dtype=torch.int64)
    flips = torch.rand((n, 3), generator=g) < 0.5
    flips[::2] = False
    axes = torch.tensor([PERMS[i % 6] if i % 2 else (0, 1, 2) for i in range(n)])
    kw = dict(flips=flips, axes=axes, pad_value=9.0)
    ref = crop_batch_torch([vol], starts, vi, (w, w, w), **kw)
    got, bad, name = _host_crop.run(lib, [vol], starts, vi, (w, w, w), **kw)
    assert name == "crop_pos_neg_i64" and bad is None
    assert torch.equal(got, ref)
    assert int((ref[-1] == 9).sum()) > 0  # the last crop read padding past the far corner


def _run_one_crop(lib, kernel, vol, start, vidx, n, inten_addr=0):
    """Run only the thread that cuts one-voxel crop ``n`` of ``n + 1`` from the (1, X, Y, Z) float32
    ``vol``: each table is addressed so that its entry for crop ``n`` is a real one. ``inten_addr``:
    the address of crop ``n``'s (scale, shift) (0: no intensity). Returns ``(err flag, the voxel)``."""
    from fastpipe.ops._crop_tables import DESC_WORDS, IDENTITY_CODE, INT_MAX

    vols = torch.tensor([[vol.data_ptr(), *vol.shape[1:]]])
    st, vi = torch.tensor([start]), torch.tensor([vidx])
    codes, err, out = (
        torch.tensor([IDENTITY_CODE], dtype=torch.int32),
        torch.tensor([INT_MAX], dtype=torch.int32),
        torch.zeros(1),
    )
    desc = torch.tensor([
        vols.data_ptr(), st.data_ptr() - 24 * n, vi.data_ptr() - 8 * n, codes.data_ptr() - 4 * n,
        inten_addr - 8 * n if inten_addr else 0, err.data_ptr(), out.data_ptr() - 4 * n,
        0, n + 1, 0, 1, 1, 1, 1, 1, int(inten_addr != 0),  # pad, rows, first block, C, O0-O2, nvols, flags
    ])  # fmt: skip
    assert desc.numel() == DESC_WORDS
    bx, by = _host_crop.BLOCK[:2]
    getattr(lib, f"one_{kernel}")(ctypes.c_void_p(desc.data_ptr()), 1, bx, by, n // (bx * by), n % (bx * by))
    return int(err[0]), float(out[0])


def test_32_bit_kernel_reads_the_intensity_of_crops_past_2_30(lib):
    """2^30 + 5 one-voxel crops: under 2^31 output elements, so the _i32 kernel, but the last crop's
    scale and shift sit at entries 2n and 2n + 1 of its table, past 2^31 (a 32-bit product wraps to
    16 GiB below). The intensity table is a sparse 16 GiB mapping holding both places."""
    from fastpipe.ops._crop_tables import INT_MAX

    N = 2**30 + 5
    n = N - 1
    vol = torch.arange(64, dtype=torch.float32).view(1, 4, 4, 4)
    assert index_kind([vol], torch.empty(1).expand(N, 1, 1, 1, 1)) == "i32"
    inten = _host_cuda.sparse_tensor(2**32 + 4, torch.float32)
    inten[2**32 : 2**32 + 2] = torch.tensor([2.0, 0.5])  # crop n's (scale, shift) at 2n, 2n + 1
    inten[:2] = torch.tensor([100.0, 1000.0])  # where a wrapped 2n lands
    err, got = _run_one_crop(lib, "crop_pos_neg_i32", vol, [1, 2, 3], 0, n, inten.data_ptr() + 4 * 2**32)
    assert err == INT_MAX
    assert got == float(vol[0, 1, 2, 3]) * 2.0 + 0.5


@pytest.mark.parametrize("n", [2**31 - 2, 2**31 - 1, 2**31, 2**32 + 2**31 - 1])
def test_64_bit_kernel_flags_a_bad_crop_past_2_31(lib, n):
    """A bad crop's index n goes into a 32-bit flag whose INT_MAX means "no error". A plain cast wraps
    some n past 2^31 onto INT_MAX (n = 2^31 - 1, 2^32 + 2^31 - 1) and the bad crop's output would be
    left as torch.empty made it. Crop n's volume index is out of range, so the flag must be set."""
    from fastpipe.ops._crop_tables import INT_MAX

    vol = torch.zeros((1, 4, 4, 4), dtype=torch.float32)
    err, _ = _run_one_crop(lib, "crop_pos_neg_i64", vol, [0, 0, 0], 3, n)  # volume 3 of 1
    assert err == min(n, INT_MAX - 1)


# --- the real kernel on a GPU ------------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_cuda_vector_path_and_packed_tables_equal_torch(cuda_device, dtype):
    """Host arguments (one packed copy) and device arguments, odd rows, misaligned outputs, both in one batch."""
    pytest.importorskip(
        "cupy", reason="CuPy not installed on this GPU machine (pip install cupy-cuda13x/12x)"
    )
    from fastpipe.ops._backends import crop_batches

    g = torch.Generator().manual_seed(21)
    shapes = [(7, 9, 131), (6, 8, 120)]
    vols = _vols(dtype, shapes, 8)
    dvols = [v.to(cuda_device) for v in vols]
    for o2, padded, skew in itertools.product((13, 22, 96), (False, True), (0, 1)):
        size = (3, 3, o2)
        starts, vi, kw = _row_case(size, shapes, padded, dtype, g)
        ref = crop_batch_torch(vols, starts, vi, size, **kw)
        dev_kw = {k: v.to(cuda_device) if torch.is_tensor(v) else v for k, v in kw.items()}
        calls = [
            dict(volumes=dvols, starts=starts, vol_index=vi, size=size, **kw),
            dict(volumes=dvols, starts=starts.to(cuda_device), vol_index=vi.to(cuda_device), size=size, **dev_kw),
        ]  # fmt: skip
        outs = crop_batches(calls, backend="cuda")
        skewed = torch.zeros(ref.numel() + skew, dtype=dtype, device=cuda_device)[skew:].view(ref.shape)
        crop_batches([dict(calls[0], out=skewed), calls[1]], backend="cuda")
        torch.cuda.synchronize()
        for got in (*outs, skewed):
            assert torch.equal(got.cpu().view(torch.uint8), ref.view(torch.uint8)), (o2, padded, skew)
