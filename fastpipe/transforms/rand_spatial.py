"""``RandFlipd`` and ``RandRotate90d``: MONAI's random flips and quarter turns, batched.

Both draw once per call (per crop when they follow a crop with ``num_samples``, as MONAI does
when it maps them over the crop list) and apply the same draw to every key. After
``RandCropByPosNegLabeld`` they are fused into the crop's gather (see
``fastpipe.transforms._fuse_random``): a flip or a rotation is then only a different order of
reading the window, with no pass over the data of its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from numbers import Integral
from typing import Any

import torch

from fastpipe._meta import meta_key
from fastpipe.ops.rand_params import Orientation, draw_k, draw_uniform
from fastpipe.transforms._crop_suffix import crop_metas
from fastpipe.transforms._rand_base import RandDictTransform, as_axes, check_axis, check_lazy, is_meta_tensor


def _spatial_dims(who: str, img: torch.Tensor, axes: Sequence[int]) -> list[int]:
    """Tensor dims of spatial ``axes`` (given for 3-D volumes, negative allowed) in a channel-first ``img``."""
    nsp = img.ndim - 1
    out = []
    for a in axes:
        if not -nsp <= a < nsp:
            raise ValueError(
                f"{who}: spatial axis {a} is outside the {nsp}-D volume of shape {tuple(img.shape)}"
            )
        out.append(1 + a % nsp)
    return out


class _Reorients(RandDictTransform):
    """A flip or turn that also moves each key's ``{key}_meta_dict`` affine (and a MetaTensor's own), as MONAI's does."""

    def orient(self, o: Orientation, params: dict[str, torch.Tensor], ndim: int = 3) -> Orientation:
        raise NotImplementedError

    def _meta(self, meta: Any, shape: tuple[int, ...], params: dict[str, torch.Tensor], i: int) -> Any:
        """``meta`` with the affine of crop ``i`` after this transform (volumes of spatial ``shape``, 2-D or
        3-D: a 2-D one moves as a 3-D one of depth 1 whose third axis no flip or turn touches, as MONAI's)."""
        if not isinstance(meta, dict) or len(shape) not in (2, 3):
            return meta
        o = self.orient(Orientation.identity(1), {k: v[i : i + 1] for k, v in params.items()}, len(shape))
        if o.is_identity():
            return meta
        axes, flips = o.tensors()
        return crop_metas([meta], [[0, 0, 0]], (*shape, 1)[:3], {"axes": axes, "flips": flips})[0]

    def apply(self, data: dict[Any, Any], params: dict[str, torch.Tensor], i: int = 0) -> dict[Any, Any]:
        d = super().apply(data, params, i)
        for key in [k for k in self.keys if k in data]:
            shape = tuple(data[key].shape[1:])
            if meta_key(key) in d:
                d[meta_key(key)] = self._meta(d[meta_key(key)], shape, params, i)
            if d[key] is not data[key] and is_meta_tensor(d[key]):  # a MONAI MetaTensor holds its own affine
                d[key].affine = self._meta({"affine": d[key].affine}, shape, params, i)["affine"]
        return d

    def apply_batch(self, batch: dict[Any, Any], params: dict[str, torch.Tensor]) -> dict[Any, Any]:
        shapes = {k: tuple(batch[k].shape[2:]) for k in self.keys if k in batch}
        batch = super().apply_batch(batch, params)
        for key in [k for k in shapes if isinstance(batch.get(meta_key(k)), list)]:
            metas = batch[meta_key(key)]
            batch[meta_key(key)] = [self._meta(m, shapes[key], params, i) for i, m in enumerate(metas)]
        return batch


class RandFlipd(_Reorients):
    """Flip the volumes of ``keys`` along ``spatial_axis`` with probability ``prob`` (MONAI's ``RandFlipd``).

    Args:
        keys: keys to flip (str or sequence).
        prob: probability of flipping (default 0.1), one draw per call for all keys.
        spatial_axis: spatial axis or axes to flip (negative allowed); ``None`` (default) flips every
            spatial axis.
        allow_missing_keys: skip missing keys instead of raising ``KeyError`` (default False).
        lazy: MONAI's lazy resampling; only False (default) is taken (True raises ``ValueError``).

    Shape:
        ``(C, X, Y, Z)`` in and out.

    Example:
        >>> flip = RandFlipd(["image", "label"], prob=1.0, spatial_axis=0)
        >>> out = flip({"image": torch.arange(2.0).reshape(1, 2, 1, 1), "label": torch.zeros(1, 2, 1, 1)})
        >>> out["image"].flatten().tolist()
        [1.0, 0.0]
    """

    def __init__(
        self,
        keys: str | Sequence[str],
        prob: float = 0.1,
        spatial_axis: int | Sequence[int] | None = None,
        allow_missing_keys: bool = False,
        lazy: bool = False,
    ) -> None:
        super().__init__(keys, prob, allow_missing_keys)
        check_lazy("RandFlipd", lazy)
        spatial_axis = as_axes(spatial_axis)  # numpy integers too, as MONAI takes them
        axes = spatial_axis if spatial_axis is None or not isinstance(spatial_axis, int) else [spatial_axis]
        self.spatial_axis = spatial_axis
        self._axes = None if axes is None else tuple(check_axis("RandFlipd", "spatial_axis", a) for a in axes)
        if self._axes is not None and len(set(self._axes)) != len(self._axes):  # torch.flip refuses them
            raise ValueError(f"RandFlipd: spatial_axis names an axis twice, got {spatial_axis!r}")

    def draw(self, n: int, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        fire, _ = draw_uniform(n, generator or self.stream(), self.prob, 0.0, 1.0)
        return {"fire": fire}

    def apply_one(self, img: torch.Tensor, params: dict[str, torch.Tensor], i: int) -> torch.Tensor:
        if not params["fire"][i]:
            return img
        axes = tuple(range(img.ndim - 1)) if self._axes is None else self.spatial_axis_list()
        return torch.flip(img, _spatial_dims("RandFlipd", img, axes))

    def _repr_args(self) -> str:
        return f", spatial_axis={self.spatial_axis}"

    def spatial_axis_list(self) -> list[int]:
        """The flipped axes as given (negative kept, so they count from the end of any volume)."""
        axes = self.spatial_axis
        return [axes] if isinstance(axes, int) else list(axes)

    def orient(self, o: Orientation, params: dict[str, torch.Tensor], ndim: int = 3) -> Orientation:
        """Compose this transform's draws into the crops' orientation (volumes of ``ndim`` spatial axes)."""
        axes = range(ndim) if self._axes is None else [a % ndim for a in self.spatial_axis_list()]
        return o.flip(params["fire"], tuple(axes))


class RandRotate90d(_Reorients):
    """Rotate by ``k`` quarter turns in the plane ``spatial_axes`` with probability ``prob`` (MONAI's ``RandRotate90d``).

    When it fires, ``k`` is uniform in ``1..max_k`` (MONAI: ``R.randint(max_k) + 1``); the rotation
    is ``torch.rot90(img, k, spatial_axes)`` on the spatial dims, for every key with the same ``k``.

    Args:
        keys: keys to rotate (str or sequence).
        prob: probability of rotating (default 0.1).
        max_k: largest number of quarter turns (default 3), an int >= 1.
        spatial_axes: the two spatial axes of the plane (default ``(0, 1)``; negative allowed).
        allow_missing_keys: skip missing keys instead of raising ``KeyError`` (default False).
        lazy: MONAI's lazy resampling; only False (default) is taken (True raises ``ValueError``).

    Shape:
        ``(C, X, Y, Z)`` in; the two axes of the plane swap sizes for odd ``k``.

    Example:
        >>> rot = RandRotate90d("image", prob=1.0, max_k=1)
        >>> rot({"image": torch.arange(4.0).reshape(1, 2, 2, 1)})["image"].flatten().tolist()
        [1.0, 3.0, 0.0, 2.0]
    """

    def __init__(
        self,
        keys: str | Sequence[str],
        prob: float = 0.1,
        max_k: int = 3,
        spatial_axes: tuple[int, int] = (0, 1),
        allow_missing_keys: bool = False,
        lazy: bool = False,
    ) -> None:
        super().__init__(keys, prob, allow_missing_keys)
        check_lazy("RandRotate90d", lazy)
        if isinstance(max_k, bool) or not isinstance(max_k, Integral) or max_k < 1:
            raise ValueError(f"RandRotate90d: max_k must be an int >= 1, got {max_k!r}")
        axes = as_axes(spatial_axes)  # numpy integers and arrays too, as MONAI takes them
        axes = tuple(axes) if isinstance(axes, (list, tuple)) else (axes,)
        if len(axes) != 2:
            raise ValueError(f"RandRotate90d: spatial_axes must be 2 spatial axes, got {spatial_axes!r}")
        norm = tuple(check_axis("RandRotate90d", "spatial_axes", a) for a in axes)
        if norm[0] == norm[1]:
            raise ValueError(f"RandRotate90d: spatial_axes must be 2 different axes, got {spatial_axes!r}")
        self.max_k, self.spatial_axes, self._axes = int(max_k), axes, norm

    def _repr_args(self) -> str:
        return f", max_k={self.max_k}, spatial_axes={self.spatial_axes}"

    def draw(self, n: int, generator: torch.Generator | None = None) -> dict[str, Any]:
        return {"k": draw_k(n, generator or self.stream(), self.prob, self.max_k)}

    def apply_one(self, img: torch.Tensor, params: dict[str, torch.Tensor], i: int) -> torch.Tensor:
        k = int(params["k"][i])
        if k == 0:
            return img
        return torch.rot90(img, k, _spatial_dims("RandRotate90d", img, self.spatial_axes))

    def orient(self, o: Orientation, params: dict[str, torch.Tensor], ndim: int = 3) -> Orientation:
        """Compose this transform's draws into the crops' orientation (volumes of ``ndim`` spatial axes)."""
        return o.rot90(params["k"], tuple(a % ndim for a in self.spatial_axes))

    def keeps_shape(self, spatial_size: Sequence[int]) -> bool:
        """Whether a quarter turn keeps a ``spatial_size`` crop's shape: equal sides in its plane."""
        a, b = self._axes
        return len(spatial_size) == 3 and spatial_size[a] == spatial_size[b]
