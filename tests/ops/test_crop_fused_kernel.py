"""kernels/crop_pos_neg.cu with the fused suffix equals the torch path bit for bit (on the host, via the shim).

Covers axis permutations (every quarter turn), flips, windows at every border reaching into the
virtual pad, intensity with denormals, every element size, and the device-side bounds check. The
nvcc checks prove the float maths keeps denormals whatever -ftz flag the compiler is given.
"""

from __future__ import annotations

import itertools
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fastpipe.ops import _cuda_crop, crop_batch_torch
from fastpipe.ops._cuda_crop import INT_MAX, NVRTC_OPTIONS, raise_bad_crop

sys.path.insert(0, str(Path(__file__).parent))
import _host_crop  # noqa: E402

KERNEL = Path(__file__).resolve().parents[2] / "kernels" / "crop_pos_neg.cu"
NVCC = shutil.which("nvcc")
PERMS = list(itertools.permutations(range(3)))


@pytest.fixture(scope="module")
def lib(tmp_path_factory):
    return _host_crop.build(tmp_path_factory.mktemp("fused"))


def params(n, seed, size, shapes, padded):
    """Random crops: all 6 axis permutations (only of equal sides), flips, starts at and past every border."""
    g = torch.Generator().manual_seed(seed)
    vi = torch.randint(0, len(shapes), (n,), generator=g)
    ok = [p for p in PERMS if all(size[p[a]] == size[a] for a in range(3))]  # turns keep the output shape
    axes = torch.tensor([ok[i % len(ok)] for i in range(n)])
    starts = []
    for i in range(n):
        shape = shapes[vi[i]]
        row = []
        for a in range(3):
            ext = size[axes[i].tolist().index(a)]
            choices = [0, shape[a] - ext] + (
                [-ext + 1, -1, shape[a] - 1, shape[a] - ext + 2] if padded else []
            )
            row.append(
                choices[(i // 6 + a) % len(choices)]
                if i % 3
                else int(torch.randint(0, shape[a] - ext + 1, (), generator=g))
            )
        starts.append(row)
    flips = torch.rand((n, 3), generator=g) < 0.5
    return torch.tensor(starts), vi, flips, axes


DENORMAL = 1e-40  # below float32's smallest normal (1.2e-38)


def volumes(dtype, shapes, seed):
    g = torch.Generator().manual_seed(seed)
    vols = []
    for s in shapes:
        v = torch.randn((2, *s), generator=g) * 100
        if dtype == torch.float32:
            v[0, ::2] = DENORMAL * torch.randn(v[0, ::2].shape, generator=g)  # denormal inputs
            v[1, ::3] = -0.0  # kept as -0.0 where no shift is added
        vols.append(v.to(dtype))
    return vols


@pytest.mark.parametrize(
    "dtype", [torch.float32, torch.float16, torch.bfloat16, torch.uint8, torch.int16, torch.int64]
)
@pytest.mark.parametrize("padded", [False, True])
def test_kernel_equals_torch_with_turns_flips_pad_and_intensity(lib, dtype, padded):
    shapes = [(9, 10, 37), (12, 9, 40)]
    size = (6, 6, 35)  # equal sides in (0, 1): quarter turns there; last axis > a warp
    vols = volumes(dtype, shapes, 1)
    starts, vi, flips, axes = params(24, 2, size, shapes, padded)
    kw = dict(flips=flips, axes=axes, pad_value=(3.0 if padded else None))
    if dtype == torch.float32:
        g = torch.Generator().manual_seed(3)
        kw["scale"] = torch.where(
            torch.arange(24) % 4 == 0, torch.tensor(1e-3), 1 + torch.rand(24, generator=g) * 0.2
        )
        kw["shift"] = torch.where(
            torch.arange(24) % 5 == 0, torch.tensor(DENORMAL), torch.rand(24, generator=g) * 0.2 - 0.1
        )
        i = torch.arange(24)
        kw["scale"] = torch.where(i % 6 == 1, 1.0, kw["scale"])  # identities: the step is skipped
        kw["shift"] = torch.where(i % 7 == 2, 0.0, torch.where(i % 7 == 3, -0.0, kw["shift"]))
    ref = crop_batch_torch(vols, starts, vi, size, **kw)
    got, bad, _ = _host_crop.run(lib, vols, starts, vi, size, **kw)
    assert bad is None
    assert torch.equal(got.view(torch.uint8), ref.view(torch.uint8))  # bit for bit
    if dtype == torch.float32:
        tiny = ref[(ref != 0) & (ref.abs() < 1.1754944e-38)]
        assert tiny.numel() > 100  # denormal results were produced and kept by both paths
        assert bool(torch.signbit(ref[ref == 0]).any())  # -0.0 survived a crop without a shift


def test_every_quarter_turn_and_flip_of_a_cube_matches_torch_rot90(lib):
    vol = torch.arange(5 * 5 * 5, dtype=torch.float32).reshape(1, 5, 5, 5)
    for perm, flip in itertools.product(PERMS, itertools.product((False, True), repeat=3)):
        starts, vi = torch.tensor([[1, 0, 2]]), torch.tensor([0])
        axes, flips = torch.tensor([perm]), torch.tensor([flip])
        want = vol[:, 1:4, 0:3, 2:5].permute(0, *(1 + p for p in perm))
        want = (want.flip([1 + a for a in range(3) if flip[a]]) if any(flip) else want)[None]
        got, _, _ = _host_crop.run(lib, [vol], starts, vi, (3, 3, 3), flips=flips, axes=axes)
        assert torch.equal(crop_batch_torch([vol], starts, vi, (3, 3, 3), flips=flips, axes=axes), want)
        assert torch.equal(got, want), (perm, flip)


def test_bad_crops_are_flagged_on_the_device_and_read_nothing(lib):
    vols = [torch.ones((1, 8, 8, 8)), torch.ones((1, 6, 6, 6))]
    size = (4, 4, 4)
    cases = {
        "start past the end": ([[0, 0, 0], [3, 0, 0], [0, 0, 0]], [0, 1, 0], None),
        "negative start": ([[0, 0, 0], [0, 0, 0], [0, -1, 0]], [0, 1, 0], None),
        "volume index": ([[0, 0, 0], [0, 0, 0], [0, 0, 0]], [0, 0, 2], None),
        "axes not a permutation": (
            [[0, 0, 0], [0, 0, 0], [0, 0, 0]],
            [0, 0, 1],
            [[0, 1, 2], [0, 0, 2], [0, 1, 2]],
        ),
    }
    for why, (st, vi, ax) in cases.items():
        st, vi = torch.tensor(st), torch.tensor(vi)
        axes = torch.tensor(ax) if ax is not None else None
        got, bad, _ = _host_crop.run(lib, vols, st, vi, size, axes=axes)
        expected = 1 if why in ("start past the end", "axes not a permutation") else 2
        assert bad == expected, why
        assert got[expected].abs().sum() == 0 and got[0].sum() == 64, why  # nothing read for the bad crop
        err = torch.tensor([bad], dtype=torch.int32)
        with pytest.raises(ValueError, match=rf"crop_batch: crop {expected} "):
            raise_bad_crop(err, vols, st, vi, size, axes, ["a.nii.gz", "b.nii.gz"])
    raise_bad_crop(
        torch.tensor([INT_MAX], dtype=torch.int32), vols, st, vi, size, None, None
    )  # no error: no raise


@pytest.mark.parametrize("index", ["i32", "i64"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.uint8])
@pytest.mark.parametrize("axis", [0, 1, 2])
def test_starts_at_the_ends_of_int64_neither_overflow_nor_read_outside(lib, index, dtype, axis):
    vol = (torch.arange(6**3) % 200 + 1).to(dtype).reshape(1, 6, 6, 6)
    vi = torch.tensor([0])
    for far in (-(2**63), -(2**63) + 1, -(2**62), 2**62, 2**63 - 40, 2**63 - 2):
        st = torch.zeros((1, 3), dtype=torch.int64)
        st[0, axis] = far
        padded, bad, _ = _host_crop.run(lib, [vol], st, vi, (4, 4, 4), pad_value=7.0, index=index)
        assert bad is None and torch.equal(padded, torch.full_like(padded, 7)), far  # all pad, as torch
        assert torch.equal(padded, crop_batch_torch([vol], st, vi, (4, 4, 4), pad_value=7.0))
        _, bad, _ = _host_crop.run(lib, [vol], st, vi, (4, 4, 4), index=index)
        assert bad == 0, far  # without a pad the window lies outside: flagged, as torch raises
        with pytest.raises(ValueError, match="lies outside"):
            crop_batch_torch([vol], st, vi, (4, 4, 4))


def test_bounds_error_names_the_item():
    vols = [torch.ones((1, 8, 8, 8)), torch.ones((1, 6, 6, 6))]
    with pytest.raises(
        ValueError,
        match=r"crop 1 window start \(3, 0, 0\) size \(4, 4, 4\) lies outside volume 1 \(b.nii.gz\)",
    ):
        crop_batch_torch(
            vols,
            torch.tensor([[0, 0, 0], [3, 0, 0]]),
            torch.tensor([0, 1]),
            (4, 4, 4),
            names=["a.nii.gz", "b.nii.gz"],
        )


def test_a_padded_call_names_the_crop_the_kernel_flagged(lib, monkeypatch):
    """With a pad value a window past the volume is valid: the error names the bad volume index of
    crop 1, not the padded window of crop 0 (the torch path's message)."""
    _host_crop.host_as_cuda(monkeypatch, lib)
    vols, st, vi = [torch.ones((1, 8, 8, 8))], torch.tensor([[-2, 0, 0], [0, 0, 0]]), torch.tensor([0, 3])
    for crop in (crop_batch_torch, _cuda_crop.crop_batch_cuda):
        with pytest.raises(ValueError, match=r"crop 1 names volume 3"):
            crop(vols, st, vi, (4, 4, 4), pad_value=0.0, names=["a.nii.gz"])


def test_nvrtc_options_are_explicit_and_no_flush():
    assert "-ftz=false" in NVRTC_OPTIONS and "-fmad=false" in NVRTC_OPTIONS


@pytest.mark.skipif(
    NVCC is None, reason="nvcc not on PATH; install the CUDA toolkit to check the kernel's PTX"
)
@pytest.mark.timeout(240)
def test_ptx_keeps_denormals_even_with_ftz_true(tmp_path):
    """CuPy appends -ftz=true; the crop's float maths is explicit PTX without .ftz, so it cannot flush.

    Positive control: the same maths written with __fmul_rn/__fadd_rn does flush under -ftz=true.
    """
    control = tmp_path / "control.cu"
    control.write_text(
        'extern "C" __global__ void k(float* x, float s, float o) { x[0] = __fadd_rn(__fmul_rn(x[0], s), o); }\n'
    )
    outs = {}
    for name, src in (("kernel", KERNEL), ("control", control)):
        ptx = tmp_path / f"{name}.ptx"
        cmd = [NVCC, "-arch=sm_90", "-std=c++17", "-ftz=true", "-ptx", str(src), "-o", str(ptx)]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=220)
        assert res.returncode == 0, res.stderr
        outs[name] = ptx.read_text()
    assert "mul.rn.ftz.f32" in outs["control"]  # the flag would flush plain intrinsics
    assert "mul.rn.f32" in outs["kernel"] and "add.rn.f32" in outs["kernel"]
    assert ".ftz" not in outs["kernel"]


# --- the real kernel on a GPU ------------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.uint8, torch.int16])
@pytest.mark.parametrize("padded", [False, True])
def test_cuda_fused_kernel_equals_torch_exactly(cuda_device, dtype, padded):
    pytest.importorskip(
        "cupy", reason="CuPy not installed on this GPU machine (pip install cupy-cuda13x/12x)"
    )
    from fastpipe.ops import crop_batch

    shapes = [(40, 41, 70), (44, 40, 66)]
    size = (32, 32, 64)
    vols = [v.to(cuda_device) for v in volumes(dtype, shapes, 5)]
    starts, vi, flips, axes = params(36, 6, size, shapes, padded)
    kw = dict(flips=flips, axes=axes, pad_value=(3.0 if padded else None))
    if dtype == torch.float32:
        i = torch.arange(36)
        kw["scale"] = torch.where(i % 3 == 0, 1.0, 1 + torch.rand(36) * 0.2)
        kw["shift"] = torch.where(
            i % 4 == 0, torch.tensor(DENORMAL), torch.where(i % 5 == 0, 0.0, torch.rand(36) - 0.5)
        )
    kw = {k: v.to(cuda_device) if torch.is_tensor(v) else v for k, v in kw.items()}
    starts, vi = starts.to(cuda_device), vi.to(cuda_device)
    got = crop_batch(vols, starts, vi, size, backend="cuda", **kw)
    ref = crop_batch(vols, starts, vi, size, backend="torch", **kw)
    torch.cuda.synchronize()
    assert torch.equal(got.view(torch.uint8), ref.view(torch.uint8))


def mod_slab(shape: tuple[int, int, int], m: int, x0: int, x1: int, device) -> torch.Tensor:
    """Slab ``[x0:x1]`` of ``arange(prod(shape)).remainder(m).view(shape)`` as uint8, computed in int16."""
    nx, ny, nz = shape
    ax = (torch.arange(x0, x1, device=device) * (ny * nz % m)).remainder_(m).to(torch.int16)
    ay = (torch.arange(ny, device=device) * (nz % m)).remainder_(m).to(torch.int16)
    az = torch.arange(nz, device=device).remainder_(m).to(torch.int16)
    return (ax[:, None, None] + ay[None, :, None] + az).remainder_(m).to(torch.uint8)


def mod_pattern(shape: tuple[int, int, int], m: int, device, slab: int = 64) -> torch.Tensor:
    """``arange(prod(shape)).remainder(m).view(shape)`` as uint8, a slab at a time: a whole int64
    arange of a 1300^3 volume takes 17.6 GB, this peaks at the volume plus one slab."""
    vol = torch.empty(shape, dtype=torch.uint8, device=device)
    for x0 in range(0, shape[0], slab):
        vol[x0 : x0 + slab] = mod_slab(shape, m, x0, min(x0 + slab, shape[0]), device)
    return vol


def test_mod_pattern_equals_the_flat_arange_remainder():
    for shape in [(5, 7, 9), (70, 3, 260)]:
        want = torch.arange(shape[0] * shape[1] * shape[2]).remainder(251).to(torch.uint8).view(shape)
        assert torch.equal(mod_pattern(shape, 251, "cpu", slab=4), want)
    plane = 1300 * 1300  # the GPU test's volume: its first and last slabs against the flat remainder
    for x0 in (0, 1298):
        want = torch.arange(x0 * plane, (x0 + 2) * plane).remainder(251).to(torch.uint8).view(2, 1300, 1300)
        assert torch.equal(mod_slab((1300, 1300, 1300), 251, x0, x0 + 2, "cpu"), want)


@pytest.mark.gpu
def test_cuda_64_bit_kernel_on_a_volume_past_2_31_elements_equals_torch(cuda_device):
    """The i64 kernel on a real GPU: a 2.2 GB uint8 volume, windows near its far end, flipped and padded."""
    pytest.importorskip(
        "cupy", reason="CuPy not installed on this GPU machine (pip install cupy-cuda13x/12x)"
    )
    from fastpipe.ops import crop_batch
    from fastpipe.ops._cuda_crop import index_kind

    vols = [mod_pattern((1300, 1300, 1300), 251, cuda_device)[None]]  # 2.2 GB, not an int64 arange's 17.6
    size = (16, 16, 40)
    starts = torch.tensor(
        [[1284, 1284, 1260], [1290, 1000, 1280], [0, 1284, -8], [1200, 3, 1270]], device=cuda_device
    )
    vi = torch.zeros(4, dtype=torch.int64, device=cuda_device)
    flips = torch.tensor(
        [[False, False, False], [True, False, True], [False, True, False], [True, True, True]]
    )
    out = torch.empty((4, 1, *size), dtype=torch.uint8, device=cuda_device)
    assert index_kind(vols, out) == "i64"
    kw = dict(flips=flips.to(cuda_device), pad_value=5.0)
    got = crop_batch(vols, starts, vi, size, backend="cuda", out=out, **kw)
    ref = crop_batch(vols, starts, vi, size, backend="torch", **kw)
    torch.cuda.synchronize()
    assert torch.equal(got, ref)


@pytest.mark.gpu
def test_cuda_bounds_error_names_the_item_and_the_context_survives(cuda_device):
    pytest.importorskip(
        "cupy", reason="CuPy not installed on this GPU machine (pip install cupy-cuda13x/12x)"
    )
    from fastpipe.ops import crop_batch

    vols = [torch.ones((1, 8, 8, 8), device=cuda_device)]
    vi = torch.zeros(1, dtype=torch.int64, device=cuda_device)
    with pytest.raises(
        ValueError,
        match=r"crop 0 window start \(6, 0, 0\) size \(4, 4, 4\) lies outside volume 0 \(a.nii.gz\)",
    ):
        crop_batch(
            vols,
            torch.tensor([[6, 0, 0]], device=cuda_device),
            vi,
            (4, 4, 4),
            backend="cuda",
            names=["a.nii.gz"],
        )
    out = crop_batch(
        vols, torch.zeros((1, 3), dtype=torch.int64, device=cuda_device), vi, (4, 4, 4), backend="cuda"
    )
    assert float(out.sum()) == 64.0  # no illegal address: the context still works


def _cpu_path_and_torch_ops_path(shapes, size, n, seeds, scale, shift, padded):
    """The same crops by the CPU path (``crop_batch_torch`` on CPU tensors) and by the torch-ops path
    that CUDA tensors take without CuPy (flips copy, intensity over the whole crop), one by one."""
    from fastpipe.ops import crop as spec

    vols = volumes(torch.float32, shapes, seeds[0])
    starts, vi, flips, axes = params(n, seeds[1], size, shapes, padded)
    pad = 3.0 if padded else None
    cpu = crop_batch_torch(
        vols, starts, vi, size, flips=flips, scale=scale, shift=shift, axes=axes, pad_value=pad
    )
    ops = torch.empty_like(cpu)
    lists = (
        starts.tolist(),
        vi.tolist(),
        size,
        axes.tolist(),
        flips.tolist(),
        scale.tolist(),
        shift.tolist(),
        pad,
    )
    for i in range(n):
        spec._copy_one_torch(i, vols, ops, *lists)
    return cpu, ops, axes


@pytest.mark.parametrize("padded", [False, True])
def test_torch_ops_path_for_cuda_tensors_equals_the_numpy_path(padded):
    """CUDA tensors without CuPy take torch ops (flips copy); run that code on CPU tensors against the spec."""
    scale = torch.where(torch.arange(24) % 3 == 0, 1.0, 1.5)
    shift = torch.where(torch.arange(24) % 4 == 0, 0.0, torch.tensor(DENORMAL))
    ref, got, _ = _cpu_path_and_torch_ops_path(
        [(9, 10, 37), (12, 9, 40)], (6, 6, 35), 24, (7, 8), scale, shift, padded
    )
    assert torch.equal(got.view(torch.uint8), ref.view(torch.uint8))


@pytest.mark.parametrize("size, perms", [((7, 7, 6), 2), ((6, 6, 6), 6)])
@pytest.mark.parametrize("padded", [False, True])
def test_cpu_intensity_slabs_follow_the_outputs_outer_axis_in_every_orientation(
    monkeypatch, padded, size, perms
):
    """The CPU path's multiply-then-add goes slab by slab along the output's outermost memory axis;
    with tiny slabs (many per crop, along a different window axis per turn) it still equals the
    torch-ops path, which flips and turns with torch and adds over the whole crop at once. A cube
    takes all six axis permutations, a (7, 7, 6) window the two that keep its shape."""
    from fastpipe.ops import crop as spec

    monkeypatch.setattr(spec, "CHUNK", 37)  # a few rows per slab, not a divisor of any side
    scale = torch.where(torch.arange(48) % 3 == 0, 1.0, 1.25)
    shift = torch.where(torch.arange(48) % 4 == 1, 0.0, torch.linspace(-0.1, 0.1, 48))
    got, ref, axes = _cpu_path_and_torch_ops_path(
        [(11, 12, 10), (13, 11, 9)], size, 48, (11, 12), scale, shift, padded
    )
    assert len({tuple(a) for a in axes.tolist()}) == perms
    assert torch.equal(got.view(torch.uint8), ref.view(torch.uint8))
