"""Launcher of ``kernels/crop_pos_neg.cu``: all crops of every key of a batch in one CUDA launch via CuPy.

CuPy is imported by :func:`load_module`, which ``fastpipe.ops._backends`` calls only when a CUDA
tensor arrives. Tensors are shared with CuPy zero-copy through DLPack, on
``torch.cuda.current_stream()``; nothing here synchronises the device.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import torch

from fastpipe.ops._crop_checks import check_crop_args, check_windows
from fastpipe.ops._crop_tables import INT_MAX, KeyInfo, Launch, element_kind, pack_launch, table_parts

KERNEL_DIR = Path(__file__).resolve().parent.parent / "kernels"
#: element size -> the integer dtype whose bits carry a pad value of that size (float32: int32)
_BITWISE = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}
BLOCK = (32, 8, 1)  # 256 threads: 2**lanes per output row (see lanes_log2), the rest on further rows
KERNEL_NAMES = ["crop_pos_neg_i32", "crop_pos_neg_i64"]  # 32-bit or 64-bit index maths


#: NVRTC options, explicit. CuPy appends ``-ftz=true`` after them (and NVRTC keeps the last), so the
#: kernel's float arithmetic is written in PTX without ``.ftz`` and keeps denormals either way.
NVRTC_OPTIONS = ("--std=c++17", "-ftz=false", "-fmad=false", "-prec-div=true", "-prec-sqrt=true")


def kernel_source(name: str) -> str:
    """``kernels/<name>`` as NVRTC compiles it: with a ``#line`` prefix, so errors name the ``.cu`` lines."""
    return f'#line 1 "kernels/{name}"\n' + (KERNEL_DIR / name).read_text()


def _compile(cupy, name: str, functions: list[str]) -> dict:
    src = kernel_source(name)
    module = cupy.RawModule(code=src, options=NVRTC_OPTIONS)
    return {f: module.get_function(f) for f in functions}  # get_function compiles: errors surface here


@functools.lru_cache(maxsize=1)
def load_module():
    """Compile ``kernels/crop_pos_neg.cu`` and ``kernels/sample_centers.cu`` once (NVRTC via CuPy).

    Returns ``(cupy, {name: RawKernel})``; compiler errors point at the ``.cu`` lines thanks to the
    ``#line`` prefix, and surface here so that ``_backends`` can fall back to torch.
    """
    import cupy  # lazy: only reached with a CUDA tensor

    kernels = _compile(cupy, "crop_pos_neg.cu", KERNEL_NAMES)
    kernels |= _compile(cupy, "sample_centers.cu", ["sample_centers"])
    return cupy, kernels


def pad_bits(dtype: torch.dtype, pad_value: float | None) -> int:
    """The pad value's bit pattern as the kernel reads it (0 without padding)."""
    if pad_value is None:
        return 0
    view = torch.int32 if dtype == torch.float32 else _BITWISE[dtype.itemsize]
    bits = int(torch.tensor([pad_value], dtype=dtype).view(view).item())
    return bits & (2 ** (8 * dtype.itemsize) - 1) if dtype.itemsize < 8 else bits


def raise_bad_crop(err: torch.Tensor, volumes, starts, vol_index, size, axes, names, padded=False) -> None:
    """Raise ``ValueError`` for the crop the kernel flagged in ``err`` (reads the flag: one device sync).

    ``padded``: the call had a pad value, so a window past the volume is no error (only a bad volume
    index or axes are)."""
    bad = int(err.item())
    if bad == INT_MAX:
        return
    ax = axes.tolist() if axes is not None else None
    check_windows(volumes, starts.tolist(), vol_index.tolist(), size, ax, padded, names)
    which = f"crop {bad}" if bad < INT_MAX - 1 else f"a crop from {bad} on"  # the kernel caps the flag
    raise ValueError(f"crop_batch: the kernel flagged {which} as outside its volume")


def _is_cuda(dev: torch.device) -> bool:
    return dev.type == "cuda"


def _stream_handle(dev: torch.device) -> int:
    """torch's current stream on ``dev``: the launches and the tables' copy queue there."""
    return torch.cuda.current_stream(dev).cuda_stream


def _checked_out(volumes, starts, vol_index, size, out, flips, scale, shift, axes) -> torch.Tensor:
    """Validate one call for the kernel; returns its output (allocated when ``None``)."""
    shape = check_crop_args(volumes, starts, vol_index, size, out, flips, scale, shift, axes)
    dev = volumes[0].device
    for name, t in dict(
        starts=starts, vol_index=vol_index, flips=flips, scale=scale, shift=shift, axes=axes
    ).items():
        if t is not None and t.device not in (dev, torch.device("cpu")):
            raise ValueError(
                f"crop_batch_cuda: {name} is on {t.device}, expected {dev} like the volumes (or the host)"
            )
    for b, v in enumerate(volumes):
        if not _is_cuda(dev) or not v.is_contiguous():
            raise ValueError(
                f"crop_batch_cuda: volume {b} must be contiguous on CUDA, got {dev} strides {v.stride()}"
            )
        check_aligned(f"volume {b}", v)
    out = torch.empty(shape, dtype=volumes[0].dtype, device=dev) if out is None else out
    if not out.is_contiguous():
        raise ValueError(f"crop_batch_cuda: out must be contiguous, got strides {out.stride()}")
    check_aligned("out", out)
    return out


def check_aligned(name: str, t: torch.Tensor) -> None:
    """``ValueError`` for a tensor whose address is not a multiple of its element size.

    torch never makes one, but a tensor from DLPack or ``torch.frombuffer`` with a byte offset can be;
    the kernel's element loads would then stop the process with CUDA's unrecoverable misaligned-address
    fault instead of an error naming the tensor.
    """
    if t.data_ptr() % t.element_size():
        raise ValueError(
            f"crop_batch_cuda: {name} starts at address {t.data_ptr():#x}, not a multiple of its "
            f"{t.element_size()}-byte {t.dtype} elements; copy it first (t.clone())"
        )


_CHECKED = ("volumes", "starts", "vol_index", "size", "out", "flips", "scale", "shift", "axes")
_LAUNCH = ("volumes", "starts", "vol_index", "out", "flips", "scale", "shift", "axes", "pad_value")


def _pick(call: dict, names: tuple[str, ...]) -> list:
    return [call.get(k) for k in names]


def crop_batches_cuda(calls: list[dict]) -> list[torch.Tensor]:
    """Several :func:`crop_batch_cuda` calls (keyword dicts, e.g. one per key of a batch) in one launch.

    All volumes must be on one device. Their tables share one host-to-device copy; a call's
    ``check_bounds`` (default True) reads its flag back after the launch (one sync) and raises ``ValueError``.
    """
    calls = [dict(c, out=_checked_out(*_pick(c, _CHECKED))) for c in calls]
    live = [c for c in calls if c["out"].numel() > 0]
    dev = live[0]["volumes"][0].device if live else None
    if any(c["volumes"][0].device != dev for c in live):
        raise ValueError(f"crop_batches_cuda: every call's volumes must be on {dev}")
    if live:
        cupy, kernels = load_module()
        with cupy.cuda.Device(dev.index), cupy.cuda.ExternalStream(_stream_handle(dev), dev.index):
            name, grid, args, launch = launch_args(cupy, live)
            kernels[name](grid, BLOCK, args)
        for c, err in zip(live, launch.errs, strict=True):
            if c.get("check_bounds", True):
                size = c["out"].shape[2:]
                raise_bad_crop(
                    err, c["volumes"], c["starts"], c["vol_index"], size, c.get("axes"), c.get("names"),
                    c.get("pad_value") is not None,
                )  # fmt: skip
    return [c["out"] for c in calls]


def crop_batch_cuda(
    volumes, starts, vol_index, size, out=None, flips=None, scale=None, shift=None, axes=None,
    pad_value=None, names=None, check_bounds=True,
):  # fmt: skip
    """Same contract as :func:`fastpipe.ops.crop.crop_batch_torch`, for contiguous CUDA volumes.

    The per-crop arguments may be host tensors (they then travel in the launch's one packed copy, see
    :mod:`fastpipe.ops._crop_tables`) or tensors on the volumes' device. The kernel checks each crop's
    volume index and window on the device and reads nothing for a bad one; with ``check_bounds`` the
    flag is read back (one sync) and a ``ValueError`` names the crop.
    """
    args = dict(volumes=volumes, starts=starts, vol_index=vol_index, size=size, out=out, flips=flips)
    args |= dict(scale=scale, shift=shift, axes=axes, pad_value=pad_value, names=names)
    return crop_batches_cuda([args | {"check_bounds": check_bounds}])[0]


def index_kind(volumes, out) -> str:
    """``"i32"`` when every volume and the output have fewer than 2^31 elements (32-bit index maths), else ``"i64"``."""
    return "i32" if max(v.numel() for v in (*volumes, out)) < 2**31 else "i64"


#: the most threads per output row, as log2 (2: four). Fewer give each thread more of a row to move
#: for the same per-row setup (table reads, index maths); ``benchmarks.gpu_check`` times a batch under
#: each (``batch_kernel_gbps_by_lanes``). On an H200 (gpu-check-nvidia-h200.json) a training batch moved
#: 2103 GB/s with 4 threads per row, 1857 with 8, 1389 with 16 and 1040 with a warp (32).
MAX_LANES_LOG2 = 2


def lanes_log2(row_len: int, itemsize: int) -> int:
    """log2 of the threads per output row: one per 8 bytes of the row (one per element for 8-byte
    elements), rounded up to a power of two, at most ``2**MAX_LANES_LOG2``; the block's other threads
    take further rows."""
    units = row_len if itemsize >= 8 else -(-row_len * itemsize // 8)
    return min(MAX_LANES_LOG2, max(0, units - 1).bit_length())


def key_info(volumes, out, scale, shift, pad_value, first_block: int) -> KeyInfo:
    """The descriptor scalars of one key (``out``: its contiguous ``(N, C, O0, O1, O2)`` output)."""
    dtype = volumes[0].dtype
    lanes = lanes_log2(out.shape[4], dtype.itemsize)
    return KeyInfo(
        C=out.shape[1],
        size=tuple(out.shape[2:]),
        nvols=len(volumes),
        use_inten=scale is not None or shift is not None,
        use_pad=pad_value is not None,
        lanes_log2=lanes,
        kind=element_kind(dtype),
        pad=pad_bits(dtype, pad_value),
        rows=out.shape[0] * out.shape[1] * out.shape[2] * out.shape[3],
        first_block=first_block,
    )


def launch_args(cupy, calls: list[dict]) -> tuple[str, tuple[int, int, int], tuple, Launch]:
    """``(kernel name, grid, args, launch)`` of the one launch (block :data:`BLOCK`) cutting every call.

    ``calls``: keyword dicts with ``volumes``, ``starts``, ``vol_index`` and a contiguous ``out`` of at
    least one element, optionally ``flips``, ``scale``, ``shift``, ``axes``, ``pad_value``; all on one
    device. ``launch`` (:class:`~fastpipe.ops._crop_tables.Launch`) must outlive the launch; its
    ``errs`` hold each call's bounds flag. One host-to-device copy; call inside the stream.
    """
    dev = calls[0]["out"].device
    keys, infos, blocks = [], [], 0
    for c in calls:
        volumes, starts, vol_index, out, flips, scale, shift, axes, pad_value = _pick(c, _LAUNCH)
        parts = table_parts(volumes, starts, vol_index, flips, scale, shift, axes, out.shape[0], dev)
        keys.append(parts | {"out": out})  # only its address goes into the descriptor
        infos.append(key_info(volumes, out, scale, shift, pad_value, blocks))
        rows_per_block = BLOCK[0] * BLOCK[1] >> infos[-1].lanes_log2
        blocks += -(-infos[-1].rows // rows_per_block)
    launch = pack_launch(keys, infos, dev)
    wide = any(index_kind(c["volumes"], c["out"]) == "i64" for c in calls)
    args = (cupy.from_dlpack(launch.desc), np.int32(len(calls)))
    return f"crop_pos_neg_{'i64' if wide else 'i32'}", (blocks, 1, 1), args, launch


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
