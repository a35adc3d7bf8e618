"""``RandShiftIntensityd`` and ``RandScaleIntensityd``: MONAI's random intensity shift and scale, batched.

One draw per call (per crop after a crop with ``num_samples``), the same value for every key.
After ``RandCropByPosNegLabeld`` they are fused into the crop's gather as ``x * scale + shift`` per
crop (float32 keys; see ``fastpipe.transforms._fuse_random``).

dtype rules are MONAI's on the per-item path: a shift keeps the image's dtype (an integer image is
shifted in float and cast back, truncating, or clamped to the dtype's range first with
``safe=True``); a scale returns ``dtype`` (float32 by default) when it fires, the input unchanged
when it does not (MONAI's dictionary transform). The fused
path computes in float32, so for a key of any other dtype the crop applies these steps per crop
after its gather, with the rules above.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

import torch

from fastpipe.ops.rand_params import draw_uniform
from fastpipe.transforms._dict import dtype_arg
from fastpipe.transforms._rand_base import RandDictTransform, check_range


def _cast(x: torch.Tensor, dtype: torch.dtype, safe: bool) -> torch.Tensor:
    """``x`` as ``dtype``; with ``safe`` it is clamped to the dtype's range first (MONAI's ``safe``: a
    float16 sum past 65504 becomes 65504, not ``inf``)."""
    if safe and dtype != torch.bool:
        info = torch.finfo(dtype) if dtype.is_floating_point else torch.iinfo(dtype)
        x = x.clamp(info.min, info.max)
    return x.to(dtype)


class _RandIntensity(RandDictTransform):
    """Draws ``value ~ U(lo, hi)`` per crop (per channel with ``channel_wise``) with probability ``prob``."""

    def __init__(self, keys, prob, channel_wise, allow_missing_keys, name, value) -> None:
        super().__init__(keys, prob, allow_missing_keys)
        self.channel_wise = bool(channel_wise)
        self.range = check_range(type(self).__name__, name, value)

    def draw(
        self, n: int, generator: torch.Generator | None = None, channels: int = 1
    ) -> dict[str, torch.Tensor]:
        g = generator or self.stream()
        fire, _ = draw_uniform(n, g, self.prob, 0.0, 1.0)
        lo, hi = self.range
        u = torch.rand((n, channels), generator=g, dtype=torch.float64)
        return {"fire": fire, "value": lo + (hi - lo) * u}

    def _channels(self, data: dict[Hashable, Any], axis: int) -> int:
        """Values per draw: the channels of the first present key (dim ``axis``) with ``channel_wise``, as MONAI."""
        if not self.channel_wise:
            return 1
        first = next((data[k] for k in self.keys if k in data), None)
        return int(first.shape[axis]) if first is not None else 1

    def __call__(self, data: dict[Hashable, Any]) -> dict[Hashable, Any]:
        return self.apply(data, self.draw(1, channels=self._channels(data, 0)))

    def draw_batch(self, batch: dict[Hashable, Any], n: int) -> dict[str, torch.Tensor]:
        return self.draw(n, channels=self._channels(batch, 1))

    def _values(self, img: torch.Tensor, params: dict[str, torch.Tensor], i: int) -> list[float]:
        """Crop ``i``'s values; with ``channel_wise`` a key with fewer channels than the first key takes
        the first ones (MONAI indexes its per-channel draws the same way), one with more is an error."""
        vals = params["value"][i].tolist()
        if self.channel_wise and len(vals) < img.shape[0]:
            raise ValueError(
                f"{type(self).__name__}: drew {len(vals)} channel values (the first key's channels) for a "
                f"{img.shape[0]}-channel volume"
            )
        return vals

    def _repr_args(self) -> str:
        cw = ", channel_wise=True" if self.channel_wise else ""
        return f", range={self.range}{cw}"

    def fused_term(self, params: dict[str, torch.Tensor]) -> torch.Tensor:
        """The per-crop value of the fused op (identity where the draw did not fire), float32 ``(n,)``."""
        raise NotImplementedError


class RandShiftIntensityd(_RandIntensity):
    """Add an offset ``o ~ U(-offsets, offsets)`` (or ``U(lo, hi)`` for a pair) with probability ``prob``.

    Args:
        keys: keys to shift (str or sequence).
        offsets: a number (range ``(-|offsets|, |offsets|)``, as MONAI) or a pair ``(lo, hi)``; finite.
        safe: clamp to an integer dtype's range before casting back (default False: wrap, as MONAI).
        prob: probability of shifting (default 0.1).
        channel_wise: one offset per channel (default False; not fused into the crop).
        allow_missing_keys: skip missing keys instead of raising ``KeyError`` (default False).

    Shape:
        any channel-first tensor; dtype kept.

    Example:
        >>> shift = RandShiftIntensityd("image", offsets=0.1, prob=1.0).set_random_state(0)
        >>> bool((shift({"image": torch.zeros(1, 2, 2, 2)})["image"].abs() <= 0.1).all())
        True
    """

    def __init__(
        self,
        keys: str | Sequence[str],
        offsets: float | tuple[float, float],
        safe: bool = False,
        prob: float = 0.1,
        channel_wise: bool = False,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, prob, channel_wise, allow_missing_keys, "offsets", offsets)
        self.offsets, self.safe = self.range, bool(safe)

    def apply_one(self, img: torch.Tensor, params: dict[str, torch.Tensor], i: int) -> torch.Tensor:
        if not params["fire"][i]:
            return img
        vals = self._values(img, params, i)
        if self.channel_wise:
            out = torch.stack([img[c] + vals[c] for c in range(img.shape[0])])
        else:
            out = img + vals[0]
        return _cast(out, img.dtype, self.safe)

    def fused_term(self, params: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.where(params["fire"], params["value"][:, 0], 0.0).to(torch.float32)


class RandScaleIntensityd(_RandIntensity):
    """Scale by ``1 + f`` with ``f ~ U(-factors, factors)`` (or ``U(lo, hi)``) with probability ``prob``.

    Args:
        keys: keys to scale (str or sequence).
        factors: a number (range ``(-|factors|, |factors|)``, as MONAI) or a pair ``(lo, hi)``; finite.
        prob: probability of scaling (default 0.1).
        channel_wise: one factor per channel (default False; not fused into the crop).
        dtype: output dtype when it fires (default float32; ``None`` keeps the input's).
        allow_missing_keys: skip missing keys instead of raising ``KeyError`` (default False).

    Shape:
        any channel-first tensor.

    Example:
        >>> scale = RandScaleIntensityd("image", factors=0.5, prob=1.0)
        >>> bool(((scale({"image": torch.ones(1, 2, 2, 2)})["image"] - 1).abs() <= 0.5).all())
        True
    """

    def __init__(
        self,
        keys: str | Sequence[str],
        factors: float | tuple[float, float],
        prob: float = 0.1,
        channel_wise: bool = False,
        dtype: Any = torch.float32,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, prob, channel_wise, allow_missing_keys, "factors", factors)
        self.factors, self.dtype = self.range, dtype_arg(dtype, type(self).__name__)

    def apply_one(self, img: torch.Tensor, params: dict[str, torch.Tensor], i: int) -> torch.Tensor:
        dtype = self.dtype or img.dtype
        if not params["fire"][i]:
            return img  # MONAI's dict transform leaves an unscaled key as it is
        vals = self._values(img, params, i)
        if self.channel_wise:
            out = torch.stack([img[c] * (1 + vals[c]) for c in range(img.shape[0])])
        else:
            out = img * (1 + vals[0])
        return out.to(dtype)

    def fused_term(self, params: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.where(params["fire"], 1 + params["value"][:, 0], 1.0).to(torch.float32)
