"""The batched crop op: torch reference vs direct slicing and MONAI, the .cu kernel emulated on the host, CUDA vs torch."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import pytest
import torch
from monai.transforms import Flip, ScaleIntensity, ShiftIntensity

from fastpipe.ops import crop_batch, crop_batch_torch

sys.path.insert(0, str(Path(__file__).parent))  # the shared host-kernel helpers
import _host_crop  # noqa: E402


def coord_volume(shape, channels=2, offset=0):
    """int64 volume whose voxel (c, x, y, z) holds offset + c*10^9 + x*10^6 + y*10^3 + z."""
    x, y, z = torch.meshgrid(*(torch.arange(s) for s in shape), indexing="ij")
    base = x * 10**6 + y * 10**3 + z + offset
    return torch.stack([base + c * 10**9 for c in range(channels)])


def random_crops(shapes, size, n, seed=0):
    g = torch.Generator().manual_seed(seed)
    vi = torch.randint(0, len(shapes), (n,), generator=g)
    starts = torch.stack(
        [
            torch.stack([torch.randint(0, shapes[v][a] - size[a] + 1, (), generator=g) for a in range(3)])
            for v in vi
        ]
    )
    flips = torch.rand((n, 3), generator=g) < 0.5
    return starts, vi, flips


def test_patches_equal_slices_from_several_volumes():
    shapes = [(20, 17, 15), (12, 22, 18)]
    vols = [coord_volume(s, offset=i * 10**10) for i, s in enumerate(shapes)]
    size = (5, 6, 7)
    starts, vi, _ = random_crops(shapes, size, 12)
    out = torch.full((12, 2, *size), -1, dtype=torch.int64)
    res = crop_batch(vols, starts, vi, size, out=out)
    assert res is out
    for n in range(12):
        x, y, z = starts[n].tolist()
        assert torch.equal(out[n], vols[vi[n]][:, x : x + 5, y : y + 6, z : z + 7])
        # decode the coordinates of the first voxel: it really came from (x, y, z) of that volume
        assert out[n, 0, 0, 0, 0].item() == vi[n].item() * 10**10 + x * 10**6 + y * 10**3 + z


def test_flips_and_intensity_equal_unfused_monai_ops():
    shapes = [(16, 14, 12), (13, 15, 17)]
    g = torch.Generator().manual_seed(3)
    vols = [torch.randn((1, *s), generator=g) * 100 for s in shapes]
    size = (6, 5, 4)
    starts, vi, flips = random_crops(shapes, size, 10, seed=1)
    factors = torch.rand(10, generator=g, dtype=torch.float64) * 0.4 - 0.2
    offsets = (torch.rand(10, generator=g, dtype=torch.float64) * 0.4 - 0.2).to(torch.float32)
    scale = (1 + factors).to(torch.float32)
    out = crop_batch(vols, starts, vi, size, flips=flips, scale=scale, shift=offsets)
    for n in range(10):
        x, y, z = starts[n].tolist()
        ref = vols[vi[n]][:, x : x + 6, y : y + 5, z : z + 4]
        axes = [a for a in range(3) if flips[n, a]]
        if axes:
            ref = Flip(spatial_axis=axes)(ref)
        ref = ScaleIntensity(minv=None, maxv=None, factor=float(scale[n].double() - 1))(ref)
        ref = ShiftIntensity(offset=float(offsets[n]))(ref)
        assert torch.equal(out[n], torch.as_tensor(ref)), f"crop {n}"


@pytest.mark.parametrize("layout", [(0, 1, 2, 3), (0, 3, 1, 2), (0, 2, 3, 1)])
def test_flips_turns_and_intensity_on_strided_volumes_equal_contiguous_ones(layout):
    """The CPU path picks a one-pass numpy copy or a torch flip by which axis rows run along: a volume
    stored in another axis order (a view after a permute) must crop exactly like its contiguous copy."""
    shapes = [(14, 13, 16), (15, 14, 13)]
    g = torch.Generator().manual_seed(5)
    vols = [torch.randn((1, *s), generator=g).permute(*layout).contiguous() for s in shapes]
    inv = [layout.index(d) for d in range(4)]
    strided = [v.permute(*inv) for v in vols]  # original axis order, other strides
    assert all(v.shape[1:] == s for v, s in zip(strided, shapes, strict=True))
    size = (6, 6, 5)  # equal sides in (0, 1): quarter turns there
    n = 40
    starts, vi, flips = random_crops(shapes, (6, 6, 6), n, seed=2)
    axes = torch.tensor([[0, 1, 2], [1, 0, 2]] * (n // 2))
    scale = torch.where(torch.arange(n) % 3 == 0, 1.0, 1 + torch.rand(n, generator=g) * 0.2)
    shift = torch.where(torch.arange(n) % 4 == 0, 0.0, torch.rand(n, generator=g) * 0.2 - 0.1)
    kw = dict(flips=flips, axes=axes, scale=scale, shift=shift)
    ref = crop_batch_torch([v.contiguous() for v in strided], starts, vi, size, **kw)
    got = crop_batch_torch(strided, starts, vi, size, **kw)
    assert torch.equal(got.view(torch.int32), ref.view(torch.int32))  # bit for bit
    assert bool(flips.any(dim=1).sum() > n // 2)  # most crops read some axis backwards


def test_errors_name_expected_and_actual():
    vol = torch.zeros(1, 8, 8, 8)
    starts, vi = torch.zeros(1, 3, dtype=torch.int64), torch.zeros(1, dtype=torch.int64)
    with pytest.raises(TypeError, match="int64"):
        crop_batch([vol], starts.int(), vi, (4, 4, 4))
    with pytest.raises(ValueError, match=r"outside volume 0 \(8, 8, 8\)"):
        crop_batch([vol], torch.tensor([[5, 0, 0]]), vi, (4, 4, 4))
    with pytest.raises(ValueError, match=r"crop 0 window start \(0, -1, 0\) size \(4, 4, 4\) lies outside"):
        crop_batch([vol], torch.tensor([[0, -1, 0]]), vi, (4, 4, 4))
    with pytest.raises(ValueError, match="crop 1 names volume 2, but there are 1 volumes"):
        crop_batch([vol], torch.zeros(2, 3, dtype=torch.int64), torch.tensor([0, 2]), (4, 4, 4))
    with pytest.raises(ValueError, match=r"out must be \(1, 1, 4, 4, 4\)"):
        crop_batch([vol], starts, vi, (4, 4, 4), out=torch.empty(1, 1, 4, 4, 3))
    with pytest.raises(TypeError, match="needs float32 volumes, got torch.uint8"):
        crop_batch([vol.to(torch.uint8)], starts, vi, (4, 4, 4), scale=torch.ones(1))
    with pytest.raises(ValueError, match="volume 1 has"):
        crop_batch([vol, torch.zeros(2, 8, 8, 8)], starts, vi, (4, 4, 4))
    with pytest.raises(ValueError, match="backend must be one of"):
        crop_batch([vol], starts, vi, (4, 4, 4), backend="triton")
    with pytest.raises(ValueError, match="needs CUDA volumes"):
        crop_batch([vol], starts, vi, (4, 4, 4), backend="cuda")


# --- the .cu source itself, run on the host: a CUDA-syntax shim + a serial grid loop -------------------------


@pytest.fixture(scope="module")
def host_kernel(tmp_path_factory):
    """``kernels/crop_pos_neg.cu`` compiled for the CPU (skips without a C++ compiler)."""
    return _host_crop.build(tmp_path_factory.mktemp("kernel"))


def run_host_kernel(lib, vols, starts, vi, size, flips, scale, shift):
    out, bad, _ = _host_crop.run(lib, vols, starts, vi, size, flips, scale, shift)
    assert bad is None
    return out


@pytest.mark.parametrize(
    "dtype,fused",
    [(torch.float32, "all"), (torch.float32, "scale"), (torch.float32, "none"), (torch.uint8, "flips")],
)
def test_kernel_source_matches_torch_reference_on_host(host_kernel, dtype, fused):
    shapes = [(14, 13, 40), (11, 16, 37)]
    g = torch.Generator().manual_seed(5)
    vols = [(torch.randn((2, *s), generator=g) * 50).to(dtype) for s in shapes]
    size = (5, 7, 35)  # last axis > a warp: exercises the k loop
    starts, vi, flips = random_crops(shapes, size, 9, seed=2)
    flips = None if fused in ("none", "scale") else flips
    scale = (
        (1 + torch.rand(9, generator=g, dtype=torch.float64) * 0.2 - 0.1).float() if fused != "none" else None
    )
    shift = torch.rand(9, generator=g) * 0.2 - 0.1 if fused == "all" else None
    if dtype != torch.float32:
        scale = shift = None
    got = run_host_kernel(host_kernel, vols, starts, vi, size, flips, scale, shift)
    ref = crop_batch_torch(vols, starts, vi, size, flips=flips, scale=scale, shift=shift)
    assert torch.equal(got.view(torch.uint8), ref.view(torch.uint8))  # bit for bit


# --- the real kernel on a GPU ------------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.uint8, torch.int64])
def test_cuda_kernel_equals_torch_exactly(cuda_device, dtype):
    pytest.importorskip(
        "cupy", reason="CuPy not installed on this GPU machine (pip install cupy-cuda13x/12x)"
    )
    shapes = [(40, 35, 30), (33, 41, 29), (30, 30, 30)]
    g = torch.Generator().manual_seed(7)
    vols = [(torch.randn((2, *s), generator=g) * 100).to(dtype).to(cuda_device) for s in shapes]
    size = (16, 12, 20)
    starts, vi, flips = random_crops(shapes, size, 24, seed=4)
    starts, vi, flips = starts.to(cuda_device), vi.to(cuda_device), flips.to(cuda_device)
    kw = {}
    if dtype == torch.float32:
        kw = dict(scale=(torch.rand(24, generator=g) * 0.2 + 0.9).to(cuda_device),
                  shift=(torch.rand(24, generator=g) * 0.2 - 0.1).to(cuda_device))  # fmt: skip
    got = crop_batch(vols, starts, vi, size, flips=flips, backend="cuda", **kw)
    ref = crop_batch(vols, starts, vi, size, flips=flips, backend="torch", **kw)
    torch.cuda.synchronize()
    assert torch.equal(got.view(torch.uint8), ref.view(torch.uint8))


def test_missing_cupy_falls_back_with_one_warning(monkeypatch):
    from fastpipe.ops import _backends, _cuda_crop

    monkeypatch.setitem(sys.modules, "cupy", None)  # `import cupy` raises ImportError
    monkeypatch.setattr(_backends, "_cuda_unavailable", None)
    _cuda_crop.load_module.cache_clear()
    with pytest.warns(RuntimeWarning, match="CUDA kernels unavailable.*cupy.*torch path"):
        assert _backends._load_cuda() is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the second time: silent
        assert _backends._load_cuda() is None
        assert _backends.sample_centers(torch.zeros(1, 14, dtype=torch.int64)) is None


def test_sample_centers_dispatch_reaches_the_cuda_launcher(monkeypatch):
    """``_backends.sample_centers`` calls the launcher module's ``sample_centers_cuda``: with the module
    standing in as loaded (no GPU here), a CPU plan reaches it and is refused by name, not lost to an
    ``AttributeError`` that only a GPU machine would hit."""
    from fastpipe.ops import _backends, _cuda_crop

    monkeypatch.setattr(_backends, "_load_cuda", lambda: _cuda_crop)
    with pytest.raises(ValueError, match=r"sample_centers_cuda: plan must be CUDA int64 \(N, 14\)"):
        _backends.sample_centers(torch.zeros(1, 14, dtype=torch.int64))
