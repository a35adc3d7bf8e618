"""The one place that picks an op's implementation from the tensor's device.

CPU tensors go to the pure-torch path (``fastpipe.ops.crop``). CUDA tensors go to the CuPy
launcher (``fastpipe.ops._cuda_crop``), which imports CuPy on first use. When CuPy is missing (or
its NVRTC compile fails) the CUDA tensor takes the torch path instead, with one warning per
process: fastpipe runs everywhere, the kernel only makes it faster. ``backend="cuda"`` turns that
fallback into an error (used by tests and benchmarks that must measure the kernel).
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Sequence

import torch

from fastpipe.ops.crop import crop_batch_torch, crop_jobs_torch
from fastpipe.runtime._copy_threads import run_copies
from fastpipe.runtime._cuda_extra import install_hint

BACKENDS = ("auto", "torch", "cuda")
_lock = threading.Lock()
_cuda_unavailable: str | None = None  # reason the CUDA path failed to load, set once
_not_contiguous_warned = threading.Event()


def cuda_kernels_available() -> bool:
    """Whether the CuPy kernels can be loaded (imports CuPy and compiles; ``False`` without a GPU)."""
    return torch.cuda.is_available() and _load_cuda() is not None


def _load_cuda():
    """The CUDA launcher module (``_cuda_crop``), or ``None`` (warning once) when CuPy or the compile fails."""
    global _cuda_unavailable
    with _lock:
        if _cuda_unavailable is not None:
            return None
        try:
            from fastpipe.ops import _cuda_crop

            _cuda_crop.load_module()
            return _cuda_crop
        except Exception as err:  # ImportError without CuPy; CompileException, CUDADriverError otherwise
            _cuda_unavailable = f"{type(err).__name__}: {err}"
            warnings.warn(
                f"fastpipe: CUDA kernels unavailable ({_cuda_unavailable}); CUDA tensors use the torch path "
                f"(CuPy for this torch: {install_hint(torch.version.cuda)})",
                RuntimeWarning,
                stacklevel=3,
            )
            return None


def _on_cuda(volumes: Sequence[torch.Tensor]) -> bool:
    return len(volumes) > 0 and volumes[0].is_cuda


def _warn_not_contiguous_once(
    volumes: Sequence[torch.Tensor], out: torch.Tensor | None, key: str | None
) -> None:
    """Warn once per process that non-contiguous CUDA tensors take the slow torch path."""
    if _not_contiguous_warned.is_set():
        return
    _not_contiguous_warned.set()
    bad = next((v for v in volumes if not v.is_contiguous()), out)
    what = "out" if bad is out else f"volume {next(b for b, v in enumerate(volumes) if v is bad)}"
    warnings.warn(
        f"fastpipe: crop_batch of key {key!r}: {what} of shape {tuple(bad.shape)} on {bad.device} is not "
        f"contiguous (strides {bad.stride()}), so the CUDA kernel is skipped for the torch path (host syncs "
        "for .tolist() and one copy per crop, every batch); store the volumes contiguous (x.contiguous() "
        "before caching; the CUDA cache tier stores them so)",
        RuntimeWarning,
        stacklevel=4,
    )


def crop_batch(
    volumes: Sequence[torch.Tensor],
    starts: torch.Tensor,
    vol_index: torch.Tensor,
    size: Sequence[int],
    out: torch.Tensor | None = None,
    flips: torch.Tensor | None = None,
    scale: torch.Tensor | None = None,
    shift: torch.Tensor | None = None,
    backend: str = "auto",
    axes: torch.Tensor | None = None,
    pad_value: float | None = None,
    names: Sequence[str] | None = None,
    check_bounds: bool = True,
    key: str | None = None,
) -> torch.Tensor:
    """Cut ``N`` windows from ``B`` volumes into one ``(N, C, *size)`` tensor, on the volumes' device.

    Args:
        volumes, starts, vol_index, size, out, flips, scale, shift, axes, pad_value, names: see
            :func:`fastpipe.ops.crop.crop_batch_torch` (the specification).
        backend: ``"auto"`` (default: CUDA kernel for contiguous CUDA tensors when CuPy loads, else
            torch), ``"torch"``, or ``"cuda"`` (raise instead of falling back).
        check_bounds: CUDA only: read the kernel's bounds flag back and raise ``ValueError`` naming
            the crop (one device sync; default True). The kernel never reads outside a volume either way.
        key: the data key cropped, named in the warning a non-contiguous CUDA volume gives (default None).

    Shape:
        returns ``(N, C, E0, E1, E2)``.

    Example:
        >>> vol = torch.zeros(1, 8, 8, 8)
        >>> crop_batch([vol], torch.zeros(2, 3, dtype=torch.int64), torch.zeros(2, dtype=torch.int64), (4, 4, 4)).shape
        torch.Size([2, 1, 4, 4, 4])
    """
    cuda = _pick_cuda(volumes, out, backend, key)
    if cuda is None:
        return crop_batch_torch(
            volumes, starts, vol_index, size, out, flips, scale, shift, axes, pad_value, names
        )
    return cuda.crop_batch_cuda(
        volumes, starts, vol_index, size, out, flips, scale, shift, axes, pad_value, names, check_bounds
    )


def _pick_cuda(volumes: Sequence[torch.Tensor], out: torch.Tensor | None, backend: str, key: str | None):
    """The CUDA launcher module (``_cuda_crop``) that :func:`crop_batch` runs, or ``None`` for the torch path.

    Raises:
        ValueError: an unknown ``backend``, or ``"cuda"`` for volumes off the GPU.
        RuntimeError: ``"cuda"`` when the kernel cannot be loaded.
    """
    if backend not in BACKENDS:
        raise ValueError(f"crop_batch: backend must be one of {BACKENDS}, got {backend!r}")
    on_cuda = _on_cuda(volumes)
    if backend == "torch" or (backend == "auto" and not on_cuda):
        return None
    if not on_cuda:
        raise ValueError(
            f"crop_batch: backend='cuda' needs CUDA volumes, got {volumes[0].device if volumes else None}"
        )
    contiguous = all(v.is_contiguous() for v in volumes) and (out is None or out.is_contiguous())
    if not contiguous and backend == "auto":
        _warn_not_contiguous_once(volumes, out, key)
    cuda = _load_cuda() if (contiguous or backend == "cuda") else None
    if cuda is None and backend == "cuda":
        raise RuntimeError(
            f"crop_batch: backend='cuda' requested but the kernel is unavailable: {_cuda_unavailable}"
        )
    return cuda


def crop_batches(calls: Sequence[dict], backend: str = "auto") -> list[torch.Tensor]:
    """Several :func:`crop_batch` calls, e.g. one per key of a batch; on the CUDA kernel their tables
    share one host-to-device copy (``fastpipe.ops._crop_tables``) and one launch cuts them all.

    Args:
        calls: keyword arguments of :func:`crop_batch` per call (``backend`` excluded).
        backend: as in :func:`crop_batch`, for every call.

    Example:
        >>> vol, st, vi = torch.zeros(1, 8, 8, 8), torch.zeros(1, 3, dtype=torch.int64), torch.zeros(1, dtype=torch.int64)
        >>> [t.shape[2:] for t in crop_batches([dict(volumes=[vol], starts=st, vol_index=vi, size=(4, 4, 4))] * 2)]
        [torch.Size([4, 4, 4]), torch.Size([4, 4, 4])]
    """
    if backend != "cuda" and len(calls) > 1 and not any(_on_cuda(c["volumes"]) for c in calls):
        return _crop_batches_cpu(calls)
    fused = backend != "torch" and len(calls) > 1 and all(_kernel_ready(c) for c in calls)
    cuda = _load_cuda() if fused else None
    if cuda is None:
        return [crop_batch(**c, backend=backend) for c in calls]
    return cuda.crop_batches_cuda(list(calls))


def _crop_bytes(out: torch.Tensor) -> int:
    """Bytes of one crop of ``out`` ``(N, C, ...)``."""
    return out[0].numel() * out.element_size() if out.shape[0] else 0


_TORCH_ARGS = ("out", "flips", "scale", "shift", "axes", "pad_value", "names")


def _crop_batches_cpu(calls: Sequence[dict]) -> list[torch.Tensor]:
    """Host calls: every call checked and planned first, then all their crops in one shared run of the
    copy threads, the biggest crops first (one wait per batch, and no thread idles between keys)."""
    planned = [
        crop_jobs_torch(
            c["volumes"], c["starts"], c["vol_index"], c["size"], **{k: c.get(k) for k in _TORCH_ARGS}
        )
        for c in calls
    ]
    by_size = sorted(planned, key=lambda p: -_crop_bytes(p[0]))
    jobs = [job for _, key_jobs in by_size for job in key_jobs]
    run_copies(jobs, sum(out.numel() * out.element_size() for out, _ in planned))
    return [out for out, _ in planned]


def _kernel_ready(call: dict) -> bool:
    """Whether a call would take the kernel: CUDA volumes, all contiguous, and a contiguous ``out`` or none."""
    vols, out = call["volumes"], call.get("out")
    return _on_cuda(vols) and all(v.is_contiguous() for v in vols) and (out is None or out.is_contiguous())


def sample_centers(plan: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Crop centres and starts from a CUDA ``(N, 14)`` plan via ``kernels/sample_centers.cu``.

    Returns ``None`` when the kernels are unavailable; the caller (``fastpipe.ops.sample``) then
    runs its torch reference instead.
    """
    cuda = _load_cuda()
    return None if cuda is None else cuda.sample_centers_cuda(plan)
