"""RandCropByPosNegLabeld: MONAI's foreground/background-balanced random crop, batched.

Sample, then apply: :func:`fastpipe.ops.sample.sample_crops` draws every centre of a batch as
one tensor, then :func:`fastpipe.ops.crop_batch` cuts all crops of all volumes into one
preallocated ``(B * num_samples, C, *spatial_size)`` tensor per key (on a GPU one CUDA launch cuts
every key). A run of ``RandFlipd``/``RandRotate90d``/``RandScaleIntensityd``/``RandShiftIntensityd`` right
after the crop, and a ``SpatialPadd`` right before it, are fused into that same pass when the chain
is built (``fastpipe.transforms._fuse_random``).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import torch

from fastpipe._meta import item_name, meta_key
from fastpipe._tensors import alloc, fresh_copy
from fastpipe.ops._backends import crop_batches
from fastpipe.ops._bg_reject import RejectBg, reject_rule
from fastpipe.ops._device import to_device
from fastpipe.ops.sample import CropSample, sample_crops
from fastpipe.profiling import annotate
from fastpipe.runtime._fork import renew_locks_after_fork
from fastpipe.runtime._host_pool import HostBufferPool
from fastpipe.transforms._crop_2d import batch_call_2d, is_2d
from fastpipe.transforms._crop_items import (
    check_draws,
    check_padding_mode,
    check_shapes,
    check_size,
    concat_batches,
    item_indices,
    meta_tensors_as_dicts,
    mixed_dtypes,
    present_crop_keys,
)
from fastpipe.transforms._crop_suffix import (
    KeyPlans,
    apply_intensity_per_crop,
    check_turned_size,
    crop_metas,
    draw_suffix,
    intensity_per_crop,
    virtual_pads,
)
from fastpipe.transforms._dict import arrays_as_tensors, ensure_keys
from fastpipe.transforms._rand_base import (
    check_lazy,
    generator_from_state,
    generator_state,
    seeded_generator,
    worker_seed,
    worker_stream,
)

BATCH_KEYS = ("crop_centers", "crop_starts")


class RandCropByPosNegLabeld:
    """Crop ``num_samples`` patches per item centred on foreground (prob. ``pos/(pos+neg)``) or background.

    MONAI semantics: centres come from the label's foreground/background voxel lists (those of
    ``FgBgToIndicesd`` when the item has them, else computed), are clamped so the patch lies inside
    the volume; with ``allow_smaller`` an axis shorter than the patch is kept whole (the patch is then
    smaller, as in MONAI), without it such a volume raises ``ValueError``. A label without foreground
    (background) draws every centre from the other list, with a warning.

    Random transforms that follow it in a ``Compose``/``CacheDataset`` chain (``RandFlipd``,
    ``RandRotate90d``, ``RandScaleIntensityd``, ``RandShiftIntensityd``) are fused into its gather,
    each drawn once per crop as MONAI draws them over the crop list; so is a constant ``SpatialPadd``
    right before it. Write the MONAI chain; the fusion is not a public option.

    Args:
        keys: keys to crop (str or sequence), usually ``["image", "label"]``.
        label_key: the label that defines foreground (non-zero) and background.
        spatial_size: patch size, int or 3 ints (2 for 2-D images); entries ``<= 0`` take the volume's size.
        pos, neg: foreground/background weights (default 1.0 each).
        num_samples: patches per item (default 1).
        image_key: with ``image_threshold`` (default 0.0), background also needs ``image > threshold``.
        fg_indices_key, bg_indices_key: keys of precomputed flat indices, used when both are given and
            the item holds both (and then dropped from the crops), else the indices are computed from
            the label with ``image_key``/``image_threshold``, as MONAI does (default ``None``: computed;
            in a ``Compose``/``CacheDataset`` chain the plan reads the output of a ``FgBgToIndicesd``
            right before the crop instead when it computes the same lists: same label, same image rule).
        allow_smaller: keep axes shorter than the patch whole instead of raising (default False).
        allow_missing_keys: skip keys missing from every item (default False).
        padding_mode: ``None`` (default) or ``"constant"``: pad volumes smaller than ``spatial_size``
            with 0, symmetrically, inside the gather (no padded copy), as ``SpatialPadd(keys,
            spatial_size)`` right before the crop would (the name and meaning of MONAI's
            ``padding_mode``); every crop then has ``spatial_size`` and a batch always stacks. Pad
            voxels are background, unless ``image_key`` is set and 0 is not above ``image_threshold``
            (MONAI's rule with indices computed on the padded volume).
        backend: ``"auto"``, ``"torch"`` or ``"cuda"`` (see :func:`fastpipe.ops.crop_batch`).
        lazy: MONAI's lazy resampling; only False (default) is taken (True raises ``ValueError``).

    Shape:
        ``batch_call`` returns ``(B * num_samples, C, *spatial_size)`` per key; crop ``n`` comes from item
        ``n // num_samples``; ``crop_starts``/``crop_centers`` are in the unpadded volume's voxels
        (negative or past the end where a window reads padding). Threading: ``batch_call`` may run
        in several threads (the draw is locked).

    Example:
        >>> crop = RandCropByPosNegLabeld(["image", "label"], "label", (96, 96, 96), num_samples=4)
        >>> batch = crop.set_random_state(0).batch_call([item_a, item_b])  # doctest: +SKIP
        >>> batch["image"].shape  # doctest: +SKIP
        torch.Size([8, 1, 96, 96, 96])
    """

    random = True

    def __init__(
        self,
        keys: str | Sequence[str],
        label_key: str,
        spatial_size: int | Sequence[int],
        pos: float = 1.0,
        neg: float = 1.0,
        num_samples: int = 1,
        image_key: str | None = None,
        image_threshold: float = 0.0,
        fg_indices_key: str | None = None,
        bg_indices_key: str | None = None,
        allow_smaller: bool = False,
        allow_missing_keys: bool = False,
        padding_mode: str | None = None,
        backend: str = "auto",
        lazy: bool = False,
    ) -> None:
        check_lazy("RandCropByPosNegLabeld", lazy)
        self.keys, self.label_key = ensure_keys(keys), label_key
        self.spatial_size, self._size_dims = check_size(spatial_size)  # 2 dims: a 2-D patch (_crop_2d)
        self.pos_ratio, self.num_samples = check_draws(pos, neg, num_samples)
        self.image_key, self.image_threshold = image_key, image_threshold
        self.fg_indices_key, self.bg_indices_key = fg_indices_key, bg_indices_key
        self.allow_smaller, self.allow_missing_keys = allow_smaller, allow_missing_keys
        check_padding_mode(padding_mode, image_key, self.keys)
        self.padding_mode = padding_mode
        pad_is_bg = image_key is None or image_threshold < 0
        self._pad = None if padding_mode is None else (self.spatial_size, "symmetric", pad_is_bg)
        self._augs: tuple[Any, ...] = ()  # the fused random suffix (set by fuse_random on a copy)
        self._bg_rule: tuple[str | None, float] | None = None  # compact indices' rule (_compact_indices)
        self.backend = backend
        self._lock = threading.Lock()
        renew_locks_after_fork(self)
        self._out_pool = HostBufferPool()  # CPU batch outputs: memory reused once a batch is dropped
        self.set_random_state(int(torch.randint(0, 2**62, (1,))))

    @property
    def fused(self) -> tuple[str, ...]:
        """What runs inside this crop's gather besides the crop: the fused transforms' reprs, and the pad."""
        pad = () if self._pad is None else (f"pad to {self._pad[0]} ({self._pad[1]}, constant 0)",)
        return (*pad, *(repr(t) for t in self._augs))

    def __repr__(self) -> str:
        fused = f", fused=[{', '.join(self.fused)}]" if self.fused else ""
        return (
            f"RandCropByPosNegLabeld(keys={list(self.keys)}, spatial_size={self.spatial_size}, "
            f"num_samples={self.num_samples}{fused})"
        )

    def set_random_state(self, seed: int | None = None, state: Any = None) -> RandCropByPosNegLabeld:
        """Reseed the CPU ``torch.Generator`` that drives all draws (or adopt ``state``: a CPU
        ``torch.Generator``, or a ``numpy.random.RandomState`` to draw a seed from); returns ``self``."""
        self.generator, self._seeded_in = seeded_generator(seed, state), worker_seed()
        return self

    def __getstate__(self) -> dict[str, Any]:
        """Copies (``copy.deepcopy`` per loader thread, pickling) get the generator's state, not the lock.

        The output pool is shared by deep copies and new in a pickled copy (see :class:`HostBufferPool`).
        """
        state = self.__dict__.copy()
        state["_lock"] = None
        state["generator"] = generator_state(self.generator)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        gen = generator_from_state(state["generator"])
        self.__dict__.update(state, _lock=threading.Lock(), generator=gen)
        renew_locks_after_fork(self)

    def _after_fork_in_child(self) -> None:
        self._lock = threading.Lock()  # a loader thread of the parent may have held it at the fork

    @property
    def index_keys(self) -> tuple[str, ...]:
        """The keys of stored indices this crop reads (and drops from its crops): both or none."""
        fk, bk = self.fg_indices_key, self.bg_indices_key
        return () if fk is None or bk is None else (fk, bk)

    @property
    def _array_keys(self) -> tuple[str, ...]:
        """The keys whose numpy arrays the crop reads as tensors: the cropped ones, the label, the image."""
        return (*self.keys, self.label_key, *((self.image_key,) if self.image_key is not None else ()))

    @property
    def dropped_keys(self) -> tuple[str, ...]:
        """The index keys left out of the crops: every one given, even alone (MONAI pops each given key)."""
        return tuple(k for k in (self.fg_indices_key, self.bg_indices_key) if k is not None)

    def _indices(self, d: dict[str, Any], label: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return item_indices(
            d, label, self.fg_indices_key, self.bg_indices_key, self.image_key, self.image_threshold
        )

    def _reject(self, d: dict[str, Any], bg: torch.Tensor) -> RejectBg | None:
        """Item ``d``'s background rule when its background entry is a 0-d count (compact); else ``None``."""
        where = f"RandCropByPosNegLabeld: {self.bg_indices_key!r} of {item_name(d)}"
        return reject_rule(bg, d, self.label_key, self._bg_rule, where)

    def sample(self, items: list[dict[str, Any]]) -> tuple[CropSample, list[dict[str, torch.Tensor]]]:
        """Draw the crops (and the fused suffix's parameters) of a batch without cutting anything."""
        items = arrays_as_tensors(items, self._array_keys)
        keys = present_crop_keys(items, self.keys, self.allow_missing_keys)
        shapes = check_shapes(items, keys, self.label_key)
        pads = virtual_pads(shapes, self._pad)
        device = items[0][self.label_key].device
        idx = [self._indices(d, d[self.label_key]) for d in items]
        names = [item_name(d) for d in items]
        reject = [self._reject(d, i[1]) for d, i in zip(items, idx, strict=True)]
        with self._lock:
            gen = worker_stream(self)
            try:
                s = sample_crops(
                    [i[0] for i in idx], [i[1] for i in idx], [p.padded for p in pads] if pads else shapes,
                    self.spatial_size, self.num_samples, self.pos_ratio, gen, device,
                    self.allow_smaller, names, pads, reject,
                )  # fmt: skip
            except ValueError as err:  # the op names the volume; say which transform asked
                raise ValueError(f"RandCropByPosNegLabeld: {err}") from err
            draws = draw_suffix(self._augs, s.starts.shape[0], gen)
        if pads is not None:  # back to the unpadded volume's voxels
            lo = to_device(torch.tensor([p.lo for p in pads], dtype=torch.int64), s.starts.device)[
                s.vol_index
            ]
            s.starts, s.centers, s.padded_centers = s.starts - lo, s.centers - lo, s.centers
        return s, draws

    def batch_call(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        """Crop a whole batch: one ``(B * num_samples, C, *size)`` tensor per key, plus the crop parameters.

        Keys not cropped become lists of length ``B * num_samples``: a copy of each item's value (its
        tensors and arrays copied, so no edit reaches the item), shared by that item's crops; the
        index keys given are dropped. ``crop_centers``/``crop_starts`` ``(N, 3)`` int64 record where each
        patch came from. Items whose volumes of a key differ in dtype are cropped one by one and
        concatenated, the dtype promoted as collating MONAI's crops would.
        """
        if not items:
            raise ValueError("RandCropByPosNegLabeld.batch_call: expected at least one item, got none")
        items = arrays_as_tensors(items, self._array_keys)  # numpy volumes, as MONAI takes them
        items = meta_tensors_as_dicts(items, self.keys)  # MONAI's MetaTensors: their affine goes on per crop
        if self._size_dims == 2 or is_2d(
            items, self.label_key, self.keys
        ):  # (C, X, Y) images, as MONAI crops them
            return batch_call_2d(self, items)
        if len(items) > 1 and mixed_dtypes(
            items, present_crop_keys(items, self.keys, self.allow_missing_keys)
        ):
            return concat_batches([self.batch_call([d]) for d in items])  # each item in its own dtype
        with annotate("rand_crop_sample", "random"):
            s, draws = self.sample(items)
        out: dict[str, Any] = {}
        skip = set(self.dropped_keys)
        for key in items[0]:
            if key not in self.keys and key not in skip:  # a copy per item, shared by its crops: the
                # items may be cache entries, which nothing downstream may write into
                out[key] = [v for d in items for v in [fresh_copy(d.get(key))] * self.num_samples]
        names = [item_name(d) for d in items]
        plans = KeyPlans(self._augs, draws, s.starts.shape[0])
        keys = present_crop_keys(items, self.keys, self.allow_missing_keys)
        calls = [self._crop_call(items, key, s, plans, names, first=i == 0) for i, key in enumerate(keys)]
        with annotate(f"crop_batch[{','.join(keys)}]", "kernel"):  # one table copy, one launch for every key
            out.update(zip(keys, crop_batches(calls, backend=self.backend), strict=True))
        for key in keys:  # a key the op cannot scale/shift as MONAI would (not float32): per crop
            if intensity_per_crop(plans.get(key)[0], items[0][key].dtype):
                out[key] = apply_intensity_per_crop(out[key], self._augs, draws, key)
        starts, n = s.starts.tolist(), self.num_samples  # MONAI's patch_index and crop_center too
        extra = [
            {"patch_index": i % n, "crop_center": tuple(c)} for i, c in enumerate(s.monai_centers().tolist())
        ]
        for key in [k for k in keys if meta_key(k) in out]:  # each crop's own affine, as MONAI's
            out[meta_key(key)] = crop_metas(out[meta_key(key)], starts, s.size, plans.get(key)[0], extra)
        out.update(crop_centers=s.centers, crop_starts=s.starts)
        return out

    def _crop_call(
        self, items, key: str, s: CropSample, plans: KeyPlans, names, first: bool
    ) -> dict[str, Any]:
        """The :func:`fastpipe.ops.crop_batch` arguments of ``key`` (bounds read back on the first key only)."""
        vols = [d[key] for d in items]
        terms, op_args = plans.get(key)
        check_turned_size(terms, s.size, key)
        if intensity_per_crop(terms, vols[0].dtype):  # applied after the gather (batch_call)
            op_args = {**op_args, "scale": None, "shift": None}
        shape = (s.starts.shape[0], vols[0].shape[0], *s.size)
        if vols[0].device.type == "cpu":
            buf = self._out_pool.empty(shape, vols[0].dtype)
        else:
            buf = alloc(shape, vols[0].dtype, vols[0].device)
        pad_value = 0.0 if self._pad is not None else None
        return dict(volumes=vols, starts=s.starts, vol_index=s.vol_index, size=s.size, out=buf, names=names,
                    pad_value=pad_value, check_bounds=first, key=key, **op_args)  # fmt: skip

    def __call__(self, data: dict[str, Any]) -> list[dict[str, Any]]:
        """MONAI's per-item call: a list of ``num_samples`` dicts.

        Patches are views of one batch tensor; the other values are copied once (tensors and arrays)
        and shared between the dicts, not deep-copied per dict as MONAI does; the index keys given are
        dropped, as MONAI pops them. A MONAI ``MetaTensor`` comes out in fastpipe's form: a plain
        tensor and ``{key}_meta_dict`` holding its metadata with the crop's affine.
        """
        batch = self.batch_call([data])
        cropped = [k for k in self.keys if k in batch]
        skip = set(self.dropped_keys)
        cropped += [meta_key(k) for k in cropped if meta_key(k) in batch]  # each crop's own affine
        rest = {k: fresh_copy(v) for k, v in data.items() if k not in skip and k not in cropped}
        return [{**rest, **{k: batch[k][i] for k in cropped}} for i in range(self.num_samples)]
