"""``RandGaussianNoised`` and ``RandAdjustContrastd``: MONAI's voxel-wise random intensity transforms, batched.

Neither fits the crop's gather (noise is new per voxel; the gamma curve is not affine), so after
``RandCropByPosNegLabeld`` they run on the stacked batch the gather made
(:meth:`~fastpipe.transforms._rand_base.RandDictTransform.apply_batch`): one draw for all crops,
then work only on the crops whose draw fired, written into their rows in place. No crop is split
out and no batch is stacked again, and on a GPU the noise is drawn on the device.

Semantics are MONAI 1.6's, one draw per crop, the same draw for every key:

- ``RandGaussianNoised``: with probability ``prob``, ``std' ~ U(0, std)`` (``std`` itself with
  ``sample_std=False``) and the key becomes ``img.to(dtype) + N(mean, std'^2)`` per voxel, the same
  noise for every key (so the keys must have one shape). The noise is drawn from a per-crop seed by
  torch's generator of the volume's device: a seed gives the same noise on every run on one kind of
  device, not across devices, and never MONAI's numpy values.
- ``RandAdjustContrastd``: with probability ``prob``, ``gamma ~ U(lo, hi)`` and
  ``((x - min) / (range + 1e-7)) ** gamma * range + min`` over the whole crop of each key (the keys
  may differ in shape, as in MONAI: only the gamma is shared), with MONAI's
  ``invert_image`` and ``retain_stats`` (nnU-Net's). On the CPU the operations are MONAI's own, in
  its order. Integer volumes are converted to float32 first (MONAI's result dtype).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Hashable, Sequence
from typing import Any

import torch

from fastpipe.ops.rand_params import draw_uniform
from fastpipe.transforms._dict import dtype_arg, present_keys
from fastpipe.transforms._rand_base import RandDictTransform

_SEED_HIGH = 2**63 - 1


def _finite(who: str, name: str, value: Any) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{who}: {name} must be a number, got {value!r}") from err
    if not math.isfinite(v):
        raise ValueError(f"{who}: {name} must be finite, got {value!r}")
    return v


def gaussian_noise(
    shape: Sequence[int], device: torch.device, seed: int, mean: float, std: float
) -> torch.Tensor:
    """float32 noise ``~ N(mean, std^2)`` of ``shape`` on ``device``, from ``seed`` (the same seed, the same noise).

    Example:
        >>> a = gaussian_noise((2, 3), torch.device("cpu"), 7, 0.0, 1.0)
        >>> bool((a == gaussian_noise((2, 3), torch.device("cpu"), 7, 0.0, 1.0)).all())
        True
    """
    gen = torch.Generator(device=device)
    gen.manual_seed(int(seed))
    z = torch.randn(tuple(shape), generator=gen, device=device, dtype=torch.float32)
    if std != 1.0:
        z.mul_(std)
    if mean != 0.0:
        z.add_(mean)
    return z


def adjust_contrast(
    img: torch.Tensor, gamma: float, invert: bool = False, retain: bool = False, in_place: bool = False
) -> torch.Tensor:
    """MONAI's ``AdjustContrast(gamma, invert_image, retain_stats)`` on one crop, in its order of operations.

    The range is divided as a Python float on the CPU, as MONAI does; on another device it stays a
    0-d tensor, so that no crop waits for the device (within float32 rounding of MONAI there).
    ``in_place`` (a floating ``img`` only) writes every step into ``img``: the same roundings, no
    temporary volumes.

    Example:
        >>> adjust_contrast(torch.tensor([0.0, 1.0, 2.0]), 2.0).tolist()
        [0.0, 0.5, 2.0]
    """
    if in_place and not img.is_floating_point():
        raise TypeError(f"adjust_contrast: in_place needs a floating volume, got {img.dtype}")
    x = img if img.is_floating_point() else img.to(torch.float32)
    if not in_place and x is img:
        x = x.clone()
    if invert:
        x.neg_()
    if retain:
        mn, sd = x.mean(), x.std()
    lo = x.min()
    rng = x.max() - lo
    denom = rng + 1e-7
    x.sub_(lo).div_(float(denom) if x.device.type == "cpu" else denom).pow_(gamma).mul_(rng).add_(lo)
    if retain:
        x.sub_(x.mean())
        x.div_(x.std() + 1e-8)
        x.mul_(sd).add_(mn)  # MONAI's sd * ret + mn: the product commutes exactly
    return x.neg_() if invert else x


class _SharedDraw(RandDictTransform):
    """One draw per crop shared by every key, which must then have one shape (MONAI: "all the keys share")."""

    def _check_shapes(self, data: dict[Hashable, Any], lead: int) -> None:
        who = type(self).__name__
        keys = [self.keys[j] for j in present_keys(data, self.keys, self.allow_missing_keys, who)]
        shapes = {k: tuple(data[k].shape[lead:]) for k in keys}
        if len(set(shapes.values())) > 1:
            raise ValueError(f"{who}: the keys share one draw, so they must have one shape; got {shapes}")

    def apply(
        self, data: dict[Hashable, Any], params: dict[str, torch.Tensor], i: int = 0
    ) -> dict[Hashable, Any]:
        self._check_shapes(data, 0)
        return super().apply(data, params, i)

    def apply_batch(self, batch: dict[Hashable, Any], params: dict[str, torch.Tensor]) -> dict[Hashable, Any]:
        self._check_shapes(batch, 1)
        return super().apply_batch(batch, params)


class RandGaussianNoised(_SharedDraw):
    """Add Gaussian noise with probability ``prob`` (MONAI's ``RandGaussianNoised``), the same noise on every key.

    Args:
        keys: keys to change (str or sequence); they must have one shape.
        prob: probability of adding noise (default 0.1), one draw per call (per crop after a crop).
        mean: mean of the noise (default 0.0).
        std: spread of the noise, >= 0 (default 0.1); with ``sample_std`` the spread of each draw is
            ``U(0, std)``.
        dtype: output dtype when it fires (default float32; ``None`` keeps the input's, the noise cast to it).
        allow_missing_keys: skip missing keys instead of raising ``KeyError`` (default False).
        sample_std: draw the spread uniformly from ``[0, std)`` (default True, MONAI's).

    Shape:
        any channel-first tensor; unchanged when the draw does not fire.

    Example:
        >>> noise = RandGaussianNoised("image", prob=1.0, std=0.1).set_random_state(0)
        >>> out = noise({"image": torch.zeros(1, 8, 8, 8)})["image"]
        >>> out.dtype, bool(out.abs().max() > 0), bool(out.std() < 0.1)
        (torch.float32, True, True)
    """

    def __init__(
        self,
        keys: str | Sequence[str],
        prob: float = 0.1,
        mean: float = 0.0,
        std: float = 0.1,
        dtype: Any = torch.float32,
        allow_missing_keys: bool = False,
        sample_std: bool = True,
    ) -> None:
        super().__init__(keys, prob, allow_missing_keys)
        self.mean = _finite("RandGaussianNoised", "mean", mean)
        self.std = _finite("RandGaussianNoised", "std", std)
        if self.std < 0:
            raise ValueError(f"RandGaussianNoised: std must be >= 0, got {std!r}")
        self.sample_std, self.dtype = bool(sample_std), dtype_arg(dtype, type(self).__name__)

    def draw(self, n: int, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """``fire`` (n,) bool, ``std`` (n,) float64, ``seed`` (n,) int64 of each crop's noise."""
        g = generator or self.stream()
        fire, u = draw_uniform(n, g, self.prob, 0.0, 1.0)
        std = u * self.std if self.sample_std else torch.full((n,), self.std, dtype=torch.float64)
        return {"fire": fire, "std": std, "seed": torch.randint(0, _SEED_HIGH, (n,), generator=g)}

    def _noise(self, like: torch.Tensor, params: dict[str, Any], i: int) -> torch.Tensor:
        """Crop ``i``'s noise, as ``like``'s dtype. With several keys (one shape: see ``_SharedDraw``) it
        is drawn once per crop and kept in ``params`` for the other keys, instead of drawn again."""
        memo = params.setdefault("_noise", {}) if len(self.keys) > 1 else None
        z = memo.get(i) if memo is not None else None
        if z is None:
            seed, std = int(params["seed"][i]), float(params["std"][i])
            z = gaussian_noise(like.shape, like.device, seed, self.mean, std)
            if memo is not None:
                memo[i] = z
        return z.to(like.dtype)

    def apply_one(self, img: torch.Tensor, params: dict[str, torch.Tensor], i: int) -> torch.Tensor:
        if not params["fire"][i]:
            return img
        x = img.to(self.dtype or img.dtype)
        return x + self._noise(x, params, i)

    def apply_row_(self, row: torch.Tensor, params: dict[str, torch.Tensor], i: int) -> bool:
        if not params["fire"][i]:
            return True
        if (self.dtype or row.dtype) != row.dtype:
            return False
        row.add_(self._noise(row, params, i))
        return True

    def _repr_args(self) -> str:
        return f", mean={self.mean}, std={self.std}, sample_std={self.sample_std}"


class RandAdjustContrastd(RandDictTransform):
    """Gamma-adjust the contrast with probability ``prob`` (MONAI's ``RandAdjustContrastd``), one gamma for every key.

    ``x = ((x - min) / (range + 1e-7)) ** gamma * range + min`` over each crop and key, ``gamma ~ U(lo, hi)``.

    Args:
        keys: keys to change (str or sequence); each is adjusted over its own range, so, as in MONAI,
            they may differ in shape (a 4-channel image and a 1-channel mask, say).
        prob: probability of adjusting (default 0.1), one draw per call (per crop after a crop).
        gamma: a pair ``(lo, hi)`` of numbers, or a number ``> 0.5`` meaning ``(0.5, gamma)`` (default
            ``(0.5, 4.5)``). As in MONAI a pair may go below 0 (with a warning: a negative gamma gives
            the crop's minimum voxel ``inf``).
        invert_image: negate before and after the curve (nnU-Net's; default False).
        retain_stats: give the result the crop's mean and standard deviation from before (default False).
        allow_missing_keys: skip missing keys instead of raising ``KeyError`` (default False).

    Shape:
        any channel-first tensor; float32 for an integer input when it fires, as MONAI's (equal values).
        fastpipe computes an integer input in float32 from the start, where MONAI 1.6.1 computes
        ``-x`` and ``max - min`` in the integer dtype: with ``invert_image`` it wraps unsigned voxels
        (uint8 ``5`` becomes ``251``) and int16 ``-32768``, and an int16 range over 32767 overflows (NaN or
        wrong values), and ``retain_stats`` raises (no integer ``mean``); fastpipe gives the exact values.

    Example:
        >>> contrast = RandAdjustContrastd("image", prob=1.0, gamma=(2.0, 2.0))
        >>> contrast({"image": torch.tensor([[0.0, 1.0, 2.0]])})["image"].tolist()
        [[0.0, 0.5, 2.0]]
    """

    def __init__(
        self,
        keys: str | Sequence[str],
        prob: float = 0.1,
        gamma: tuple[float, float] | float = (0.5, 4.5),
        invert_image: bool = False,
        retain_stats: bool = False,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, prob, allow_missing_keys)
        self.gamma = self._gamma_range(gamma)
        self.invert_image, self.retain_stats = bool(invert_image), bool(retain_stats)

    @staticmethod
    def _gamma_range(gamma: Any) -> tuple[float, float]:
        who = "RandAdjustContrastd"
        if isinstance(gamma, (int, float)) and not isinstance(gamma, bool):
            g = _finite(who, "gamma", gamma)
            if g <= 0.5:
                raise ValueError(
                    f"{who}: a single gamma must be > 0.5 (the range is (0.5, gamma)), got {gamma!r}"
                )
            return 0.5, g
        try:
            lo, hi = (_finite(who, "gamma", v) for v in gamma)
        except (TypeError, ValueError) as err:
            raise ValueError(
                f"{who}: gamma must be a number > 0.5 or a pair (low, high), got {gamma!r}"
            ) from err
        lo, hi = min(lo, hi), max(lo, hi)
        if lo < 0:  # MONAI takes the pair as it is: a negative power sends each crop's minimum to inf
            warnings.warn(
                f"{who}: gamma {gamma!r} allows a negative gamma, which turns each crop's minimum voxel into "
                "inf (NaN for a constant crop), as MONAI computes it",
                stacklevel=3,
            )
        return lo, hi

    def draw(self, n: int, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """``fire`` (n,) bool and ``gamma`` (n,) float64 ``~ U(lo, hi)``."""
        fire, gamma = draw_uniform(n, generator or self.stream(), self.prob, *self.gamma)
        return {"fire": fire, "gamma": gamma}

    def apply_one(self, img: torch.Tensor, params: dict[str, torch.Tensor], i: int) -> torch.Tensor:
        if not params["fire"][i]:
            return img
        return adjust_contrast(img, float(params["gamma"][i]), self.invert_image, self.retain_stats)

    def apply_row_(self, row: torch.Tensor, params: dict[str, torch.Tensor], i: int) -> bool:
        if not params["fire"][i]:
            return True
        if not row.is_floating_point():
            return False
        adjust_contrast(row, float(params["gamma"][i]), self.invert_image, self.retain_stats, in_place=True)
        return True

    def _repr_args(self) -> str:
        return f", gamma={self.gamma}, invert_image={self.invert_image}, retain_stats={self.retain_stats}"
