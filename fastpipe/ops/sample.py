"""Positive/negative crop sampling: every crop centre of a batch drawn as one tensor.

Device independence: every random number is drawn on the CPU from the transform's
``torch.Generator`` (``2 * N`` float64 values for ``N`` crops, a few hundred bytes), and turned
into an index ``k`` into the foreground or background index list there. Everything after that
(gather ``fg[k]``, unravel, clamp) is exact integer arithmetic, so one seed gives the same centres
on CPU and GPU: host ints crop by crop when the index lists are on the CPU (a batch has a few crops,
and some 30 tensor ops on 8 values cost 0.15 ms of the loader thread's time per batch), tensor ops
or ``kernels/sample_centers.cu`` on the lists' GPU otherwise, so the lists never leave it.

Clamping follows MONAI 1.6 ``correct_crop_centers``: with ``P' = min(S, P)`` (``allow_smaller``)
a centre lies in ``[P' // 2, S - ceil(P' / 2)]``; the window starts at ``max(centre - P // 2, 0)``
and has ``min(S, P)`` voxels, as MONAI's ``SpatialCrop`` cuts it.
"""

from __future__ import annotations

import math
import threading
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from fastpipe.ops import _backends, indices
from fastpipe.ops._bg_reject import RejectBg, resolve_rejected
from fastpipe.ops._centers import _centers_on_host, _centers_torch, _gather_flat, _padded_flat, unravel_clamp
from fastpipe.ops._device import to_device
from fastpipe.ops._pad_sample import VirtualPad

__all__ = ["CropSample", "crop_window", "draw_choices", "fg_bg_indices", "sample_crops", "unravel_clamp"]


@dataclass
class CropSample:
    """The parameters of all ``N = B * num_samples`` crops of a batch (crop ``n`` comes from volume ``n // num_samples``).

    Shape:
        centers, starts: ``(N, 3)`` int64 on the volumes' device; vol_index: ``(N,)`` int64 there;
        is_fg: ``(N,)`` bool on the CPU; size: the window size ``(E0, E1, E2)`` shared by all crops.
    """

    centers: torch.Tensor
    starts: torch.Tensor
    vol_index: torch.Tensor
    is_fg: torch.Tensor
    size: tuple[int, int, int]
    padded_centers: torch.Tensor | None = None  # ``centers`` in the padded volume, where one was padded

    def monai_centers(self) -> torch.Tensor:
        """MONAI's ``crop_center`` of each crop: in the volume it crops (padded first, if so)."""
        return self.centers if self.padded_centers is None else self.padded_centers


_gpu_indices_warned = threading.Event()


def _warn_gpu_indices_once(device: torch.device) -> None:
    """Warn once per process that indices are being computed on a GPU (a host sync each time)."""
    if device.type != "cuda" or _gpu_indices_warned.is_set():
        return
    _gpu_indices_warned.set()
    warnings.warn(
        f"fastpipe: foreground/background indices computed on {device} (torch.nonzero waits for the GPU, a "
        "host sync); when this runs for every batch (RandCropByPosNegLabeld without index keys), compute "
        "them once before the cache with FgBgToIndicesd so they are cached with the volume",
        RuntimeWarning,
        stacklevel=3,
    )


def fg_bg_indices(
    label: torch.Tensor, image: torch.Tensor | None = None, image_threshold: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`fastpipe.ops.indices.fg_bg_indices` for the crop's per-batch fallback; warns once on a CUDA label."""
    _warn_gpu_indices_once(label.device)
    return indices.fg_bg_indices(label, image, image_threshold)


def crop_window(
    shape: Sequence[int], spatial_size: Sequence[int], allow_smaller: bool, name: str
) -> tuple[tuple[int, ...], ...]:
    """Window size and centre bounds of one volume: ``(size, lo, hi, half)``, host ints per axis.

    ``spatial_size`` entries ``<= 0`` take the volume's size (MONAI's ``fall_back_tuple``).
    """
    roi = tuple(int(p) if p > 0 else int(s) for p, s in zip(spatial_size, shape, strict=True))
    if any(p > s for p, s in zip(roi, shape, strict=True)) and not allow_smaller:
        raise ValueError(
            f"crop ROI {roi} is larger than the volume {tuple(shape)} of {name}; "
            "pass allow_smaller=True to keep such axes whole, or pad the volume"
        )
    eff = tuple(min(p, s) for p, s in zip(roi, shape, strict=True))
    lo = tuple(e // 2 for e in eff)
    hi = tuple(s - (e + 1) // 2 for e, s in zip(eff, shape, strict=True))
    half = tuple(p // 2 for p in roi)
    return eff, lo, hi, half


def draw_choices(
    n_fg: Sequence[int],
    n_bg: Sequence[int],
    num_samples: int,
    pos_ratio: float,
    generator: torch.Generator | None,
    names: Sequence[str],
) -> tuple[list[bool], list[int]]:
    """Draw, on the CPU, whether each crop is foreground and which index ``k`` of its list it takes.

    ``2 * N`` float64 values from ``generator``; the rest is float64 arithmetic on host floats (a
    batch has a few crops: cheaper than the tensor ops that would vectorise it).

    Shape:
        returns ``is_fg`` and ``k``, host lists of ``N = len(n_fg) * num_samples`` bools and ints.
    """
    ratios = []
    for nf, nb, name in zip(n_fg, n_bg, names, strict=True):
        if nf == 0 and nb == 0:
            raise ValueError(f"{name} has no foreground and no background voxel to centre on")
        ratio = pos_ratio if nf > 0 and nb > 0 else float(nf > 0)
        if ratio != pos_ratio:
            warnings.warn(
                f"{name} has {nf} foreground and {nb} background voxels; "
                f"drawing every centre from the {'foreground' if nf else 'background'} instead of pos ratio {pos_ratio}",
                stacklevel=3,
            )
        ratios.append(ratio)
    u = torch.rand((len(ratios) * num_samples, 2), generator=generator, dtype=torch.float64).tolist()
    is_fg, k = [], []
    for n, (u_fg, u_k) in enumerate(u):
        v = n // num_samples
        fg = u_fg < ratios[v]
        count = n_fg[v] if fg else n_bg[v]
        is_fg.append(fg)
        k.append(min(math.floor(u_k * count), count - 1))
    return is_fg, k


def _centers_cuda(fg, bg, is_fg: list[bool], k: list[int], table) -> tuple[torch.Tensor, ...] | None:
    """Centres via ``kernels/sample_centers.cu`` when every list is a contiguous int64 tensor on one GPU."""
    lists = [t for t in (*fg, *bg) if t.numel()]
    dev = lists[0].device if lists else torch.device("cpu")
    if any(t.device != dev or t.dtype != torch.int64 or not t.is_contiguous() for t in lists):
        return None
    # the host knows each crop's list and k: hand the kernel the address of that one int64 element
    fp, bp = [t.data_ptr() for t in fg], [t.data_ptr() for t in bg]
    choice = zip(table[:, 12].tolist(), is_fg, k, strict=True)
    addr = torch.tensor([(fp[v] if c else bp[v]) + 8 * kk for v, c, kk in choice], dtype=torch.int64)
    plan = to_device(torch.cat([addr[:, None], table], dim=1), dev)  # (N, 14): address, table
    res = _backends.sample_centers(plan)
    return None if res is None else (*res, plan[:, 13])


def _centers_on_index_device(fg, bg, is_fg, k, table, num_samples, device, pads=None):
    """``(centers, starts, vol_index)`` computed where the index lists live (a GPU), moved to ``device`` in one copy.

    ``is_fg``, ``k``: host lists. With ``pads`` (one :class:`~fastpipe.ops._pad_sample.VirtualPad`
    per volume) the lists index the unpadded volumes and ``table`` holds the padded shapes;
    background draws past a list's end take pad voxels.
    """
    lists = [t for t in (*fg, *bg) if t.numel()]
    same = bool(lists) and all(t.device == lists[0].device for t in lists)
    idx_dev = lists[0].device if same else device
    use_kernel = same and idx_dev.type == "cuda" and pads is None
    res = _centers_cuda(fg, bg, is_fg, k, table) if use_kernel else None
    if res is None:
        if pads is None:
            k_t = torch.tensor(k, dtype=torch.int64)
            flat = _gather_flat(fg, bg, torch.tensor(is_fg), k_t, num_samples, idx_dev)
        else:
            flat = _padded_flat(fg, bg, is_fg, k, table[:, 12].tolist(), num_samples, idx_dev, pads)
        table = to_device(table, idx_dev)
        res = (*_centers_torch(flat, table), table[:, 12])
    if idx_dev == device:
        return res
    packed = to_device(torch.cat([res[0], res[1], res[2][:, None]], dim=1), device)
    return packed[:, :3], packed[:, 3:6], packed[:, 6]


def _index_devices(fg, bg, reject) -> set[torch.device]:
    """Where the index lists (and, for rejection volumes, the labels the picks come from) live."""
    devs = {f.device for f in fg if f.numel()}
    devs |= {b.device if r is None else r.label.device for b, r in zip(bg, reject, strict=True) if b.numel()}
    return devs


def sample_crops(
    fg: Sequence[torch.Tensor],
    bg: Sequence[torch.Tensor],
    shapes: Sequence[Sequence[int]],
    spatial_size: Sequence[int],
    num_samples: int,
    pos_ratio: float,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
    allow_smaller: bool = False,
    names: Sequence[str] | None = None,
    pads: Sequence[VirtualPad] | None = None,
    reject: Sequence[RejectBg | None] | None = None,
) -> CropSample:
    """Draw the centres and window starts of ``num_samples`` crops from each of ``B`` volumes.

    Args:
        fg, bg: per volume, 1-D integer tensors of flat foreground/background indices (C order over X, Y, Z).
        shapes: per volume, its spatial shape ``(X, Y, Z)``.
        spatial_size: crop size; entries ``<= 0`` take the volume's size.
        num_samples: crops per volume.
        pos_ratio: probability that a centre is foreground, ``pos / (pos + neg)``.
        generator: CPU ``torch.Generator`` supplying all randomness (default: torch's global one).
        device: where the returned centres/starts live (the volumes' device).
        allow_smaller: keep axes smaller than the ROI whole instead of raising (MONAI's meaning).
        names: per volume, a name for error messages.
        pads: per volume, a virtual pad (``shapes`` are then the padded shapes, the index lists
            those of the unpadded volumes; see :mod:`fastpipe.ops._pad_sample`); default none.
        reject: per volume, ``None`` (its ``bg`` list is used) or a
            :class:`~fastpipe.ops._bg_reject.RejectBg`: its background centres are drawn by
            rejection from the label and ``bg[v]`` is ignored; default none.

    Example:
        >>> from fastpipe.ops.indices import fg_bg_indices
        >>> fg, bg = fg_bg_indices(torch.ones(1, 8, 8, 8))
        >>> sample_crops([fg], [bg], [(8, 8, 8)], (4, 4, 4), num_samples=2, pos_ratio=1.0).starts.shape
        torch.Size([2, 3])
    """
    names = list(names) if names is not None else [f"volume {b}" for b in range(len(shapes))]
    windows, size = _batch_windows(shapes, spatial_size, allow_smaller, names)
    reject = list(reject) if reject is not None else [None] * len(bg)
    is_fg, k, picks = _draw(fg, bg, reject, pads, num_samples, pos_ratio, generator, names)
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    if _index_devices(fg, bg, reject) <= {torch.device("cpu")}:
        rows = _centers_on_host(fg, bg, picks, is_fg, k, windows, shapes, num_samples, pads)
        return _host_sample(rows, is_fg, size, device)
    return _device_sample(fg, bg, reject, picks, is_fg, k, windows, shapes, num_samples, device, pads, size)


def _device_sample(
    fg, bg, reject, picks, is_fg, k, windows, shapes, num_samples, device, pads, size
) -> CropSample:
    """The :class:`CropSample` computed where the index lists live (some off the CPU): the table of
    every crop's window bounds, then :func:`_centers_on_index_device`."""
    # the picks go where fg[v] lives (the label's device when it is empty)
    bg = [b if p is None else to_device(torch.tensor(p, dtype=torch.int64), f.device if f.numel() else r.label.device)
          for f, b, r, p in zip(fg, bg, reject, picks, strict=True)]  # fmt: skip
    # per-crop table (N, 13): shape, lo, hi, half, volume index
    rows = [(*s, *w[1], *w[2], *w[3], v) for v, (s, w) in enumerate(zip(shapes, windows, strict=True))]
    table = torch.tensor([r for r in rows for _ in range(num_samples)], dtype=torch.int64)
    centers, starts, vol_index = _centers_on_index_device(fg, bg, is_fg, k, table, num_samples, device, pads)
    return CropSample(centers, starts, vol_index, torch.tensor(is_fg), size)


def _batch_windows(
    shapes, spatial_size, allow_smaller: bool, names: list[str]
) -> tuple[list, tuple[int, ...]]:
    """Each volume's :func:`crop_window` and the window size they share (``ValueError`` when they do not)."""
    windows = [crop_window(s, spatial_size, allow_smaller, nm) for s, nm in zip(shapes, names, strict=True)]
    sizes = {w[0] for w in windows}
    if len(sizes) > 1:
        detail = ", ".join(f"{nm}: {w[0]}" for nm, w in zip(names, windows, strict=True))
        raise ValueError(f"crops of one batch must share a size, got {detail}")
    return windows, sizes.pop()


def _draw(
    fg, bg, reject, pads, num_samples: int, pos_ratio: float, generator, names
) -> tuple[list, list, list]:
    """``(is_fg, k, picks)``: :func:`draw_choices` over the lists (pad voxels counted as background),
    then the rejection volumes' background draws resolved (``picks``: see ``resolve_rejected``)."""
    inner = [b.numel() if r is None else r.count for b, r in zip(bg, reject, strict=True)]
    n_bg = [n + (pads[v].n_pad if pads is not None else 0) for v, n in enumerate(inner)]
    is_fg, k = draw_choices([f.numel() for f in fg], n_bg, num_samples, pos_ratio, generator, names)
    picks = [None] * len(bg)
    if any(r is not None for r in reject):
        picks, k = resolve_rejected(is_fg, k, reject, num_samples, generator)
    return is_fg, k, picks


def _host_sample(rows: list[tuple[int, ...]], is_fg: list[bool], size, device: torch.device) -> CropSample:
    """The :class:`CropSample` of host rows ``(centre, start, volume)``, moved to ``device`` in one copy."""
    if device.type == "cpu":
        centers = torch.tensor([r[:3] for r in rows], dtype=torch.int64)
        starts = torch.tensor([r[3:6] for r in rows], dtype=torch.int64)
        return CropSample(centers, starts, torch.tensor([r[6] for r in rows]), torch.tensor(is_fg), size)
    packed = to_device(torch.tensor(rows, dtype=torch.int64), device)
    return CropSample(packed[:, :3], packed[:, 3:6], packed[:, 6], torch.tensor(is_fg), size)
