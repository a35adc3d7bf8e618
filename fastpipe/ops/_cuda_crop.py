"""Launcher of ``kernels/crop_pos_neg.cu``: all crops of a batch in one CUDA launch via CuPy.

CuPy is imported by :func:`load_module`, which ``fastpipe.ops._backends`` calls only when a CUDA
tensor arrives. Tensors are shared with CuPy zero-copy through DLPack, on
``torch.cuda.current_stream()``; nothing here synchronises the device.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import torch

from fastpipe.ops._device import to_device
from fastpipe.ops.crop import check_crop_args, check_windows, intensity_params

KERNEL_DIR = Path(__file__).resolve().parent.parent / "kernels"
#: element size -> kernel copying that many bytes per voxel (float32 has its own, for the intensity maths)
_BITWISE = {1: ("b1", torch.uint8), 2: ("b2", torch.int16), 4: ("b4", torch.int32), 8: ("b8", torch.int64)}
BLOCK = (32, 8, 1)  # a warp along the contiguous axis, 8 output rows per block


#: NVRTC options, explicit. CuPy appends ``-ftz=true`` after them (and NVRTC keeps the last), so the
#: kernel's float arithmetic is written in PTX without ``.ftz`` and keeps denormals either way.
NVRTC_OPTIONS = ("--std=c++17", "-ftz=false", "-fmad=false", "-prec-div=true", "-prec-sqrt=true")
INT_MAX = 2**31 - 1


def _compile(cupy, name: str, functions: list[str]) -> dict:
    src = f'#line 1 "kernels/{name}"\n' + (KERNEL_DIR / name).read_text()
    module = cupy.RawModule(code=src, options=NVRTC_OPTIONS)
    return {f: module.get_function(f) for f in functions}  # get_function compiles: errors surface here


@functools.lru_cache(maxsize=1)
def load_module():
    """Compile ``kernels/crop_pos_neg.cu`` and ``kernels/sample_centers.cu`` once (NVRTC via CuPy).

    Returns ``(cupy, {name: RawKernel})``; compiler errors point at the ``.cu`` lines thanks to the
    ``#line`` prefix, and surface here so that ``_backends`` can fall back to torch.
    """
    import cupy  # lazy: only reached with a CUDA tensor

    kernels = _compile(
        cupy, "crop_pos_neg.cu", [f"crop_pos_neg_{s}" for s in ("f32", "b1", "b2", "b4", "b8")]
    )
    kernels |= _compile(cupy, "sample_centers.cu", ["sample_centers"])
    return cupy, kernels


def _tables(volumes, starts, vol_index, flips, scale, shift, n, dev, axes=None):
    """Device tables of the kernel: volume addresses + shapes (B, 4), crops (N, 7), intensity (N, 2).

    A crop row holds the volume index, the start and, per output axis, ``source axis | 4 * flipped``.
    """
    vols = to_device(torch.tensor([[v.data_ptr(), *v.shape[1:]] for v in volumes], dtype=torch.int64), dev)
    codes = torch.arange(3, device=dev).expand(n, 3) if axes is None else axes
    if flips is not None:
        codes = codes + 4 * flips.to(torch.int64)
    crops = torch.cat([vol_index[:, None], starts, codes], dim=1).contiguous()
    inten = intensity_params(n, scale, shift, dev)
    if inten is None:
        return vols, crops, torch.empty((n, 2), dtype=torch.float32, device=dev), 0
    return vols, crops, torch.stack(inten, dim=1).contiguous(), 1


def pad_bits(dtype: torch.dtype, pad_value: float | None) -> int:
    """The pad value's bit pattern as the kernel reads it (0 without padding)."""
    if pad_value is None:
        return 0
    view = torch.int32 if dtype == torch.float32 else _BITWISE[dtype.itemsize][1]
    bits = int(torch.tensor([pad_value], dtype=dtype).view(view).item())
    return bits & (2 ** (8 * dtype.itemsize) - 1) if dtype.itemsize < 8 else bits


def raise_bad_crop(err: torch.Tensor, volumes, starts, vol_index, size, axes, names) -> None:
    """Raise ``ValueError`` for the crop the kernel flagged in ``err`` (reads the flag: one device sync)."""
    bad = int(err.item())
    if bad == INT_MAX:
        return
    ax = axes.tolist() if axes is not None else None
    check_windows(volumes, starts.tolist(), vol_index.tolist(), size, ax, False, names)
    raise ValueError(f"crop_batch: the kernel flagged crop {bad} as outside its volume")


def crop_batch_cuda(
    volumes, starts, vol_index, size, out=None, flips=None, scale=None, shift=None, axes=None,
    pad_value=None, names=None, check_bounds=True,
):  # fmt: skip
    """Same contract as :func:`fastpipe.ops.crop.crop_batch_torch`, for contiguous CUDA tensors.

    The kernel checks each crop's volume index and window on the device and reads nothing for a bad
    one; with ``check_bounds`` the flag is read back (one sync) and a ``ValueError`` names the crop.
    """
    shape = check_crop_args(volumes, starts, vol_index, size, out, flips, scale, shift, axes)
    dev = volumes[0].device
    for name, t in dict(
        starts=starts, vol_index=vol_index, flips=flips, scale=scale, shift=shift, axes=axes
    ).items():
        if t is not None and t.device != dev:
            raise ValueError(f"crop_batch_cuda: {name} is on {t.device}, expected {dev} like the volumes")
    for b, v in enumerate(volumes):
        if dev.type != "cuda" or not v.is_contiguous():
            raise ValueError(
                f"crop_batch_cuda: volume {b} must be contiguous on CUDA, got {dev} strides {v.stride()}"
            )
    out = torch.empty(shape, dtype=volumes[0].dtype, device=dev) if out is None else out
    if not out.is_contiguous():
        raise ValueError(f"crop_batch_cuda: out must be contiguous, got strides {out.stride()}")
    if out.numel() == 0:
        return out
    cupy, kernels = load_module()
    stream = torch.cuda.current_stream(dev)
    with cupy.cuda.Device(dev.index), cupy.cuda.ExternalStream(stream.cuda_stream, dev.index):
        name, grid, args, keep = launch_args(
            cupy, volumes, starts, vol_index, out, flips, scale, shift, axes, pad_value
        )
        kernels[name](grid, BLOCK, args)
    if check_bounds:
        raise_bad_crop(keep[3], volumes, starts, vol_index, out.shape[2:], axes, names)
    return out


def launch_args(
    cupy, volumes, starts, vol_index, out, flips=None, scale=None, shift=None, axes=None, pad_value=None
):
    """``(kernel name, grid, args, tensors)`` of one launch: the tables, the error flag and the output
    (``tensors``, which must outlive the launch: vols, crops, inten, err, out). Call inside the stream."""
    n, dev, dtype = out.shape[0], out.device, volumes[0].dtype
    suffix, view = ("f32", torch.float32) if dtype == torch.float32 else _BITWISE[dtype.itemsize]
    vols, crops, inten, use_inten = _tables(volumes, starts, vol_index, flips, scale, shift, n, dev, axes)
    err = torch.full((1,), INT_MAX, dtype=torch.int32, device=dev)
    keep = (vols, crops, inten, err, out.view(view))
    rows = out.shape[0] * out.shape[1] * out.shape[2] * out.shape[3]
    args = [cupy.from_dlpack(t) for t in keep]
    args += [np.int32(s) for s in (*out.shape[1:], len(volumes), use_inten, pad_value is not None)]
    args += [np.int64(pad_bits(dtype, pad_value)), np.int64(rows)]
    return f"crop_pos_neg_{suffix}", ((rows + BLOCK[1] - 1) // BLOCK[1], 1, 1), tuple(args), keep


def sample_centers_cuda(plan: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``kernels/sample_centers.cu`` on a CUDA int64 ``(N, 14)`` plan: ``(centers, starts)``, each ``(N, 3)``."""
    if plan.dtype != torch.int64 or plan.ndim != 2 or plan.shape[1] != 14 or not plan.is_cuda:
        raise ValueError(
            f"sample_centers_cuda: plan must be CUDA int64 (N, 14), got {plan.dtype} {tuple(plan.shape)}"
        )
    plan, n = plan.contiguous(), plan.shape[0]
    centers = torch.empty((n, 3), dtype=torch.int64, device=plan.device)
    starts = torch.empty_like(centers)
    if n == 0:
        return centers, starts
    cupy, kernels = load_module()
    stream = torch.cuda.current_stream(plan.device)
    with cupy.cuda.Device(plan.device.index), cupy.cuda.ExternalStream(stream.cuda_stream, plan.device.index):
        args = tuple(cupy.from_dlpack(t) for t in (plan, centers, starts)) + (np.int32(n),)
        kernels["sample_centers"](((n + 127) // 128, 1, 1), (128, 1, 1), args)
    return centers, starts
