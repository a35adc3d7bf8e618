"""The tutorial's random suffix (crop, flips, rot90, intensity shift), written once for both libraries.

MONAI: ``RandCropByPosNegLabeld`` then ``RandFlipd`` on each axis (p=0.10), ``RandRotate90d``
(p=0.10, max_k=3) and ``RandShiftIntensityd`` (offsets 0.10, p=0.50), applied crop by crop.
fastpipe: one batched ``RandCropByPosNegLabeld`` with the flips and the shift fused into the crop,
then a batched rot90 of the crops (:class:`BatchedRot90`), so the loader still makes a whole batch
in one call. When ``fastpipe.transforms`` gains batched ``RandFlipd``/``RandRotate90d``/
``RandShiftIntensityd``, :func:`fastpipe_suffix` is the one place to switch to them.
"""

from __future__ import annotations

from typing import Any

import torch

from benchmarks.train_recipe import KEYS, TrainConfig, crop_args

FLIP_PROB, ROT90_PROB, ROT90_MAX_K = 0.10, 0.10, 3
SHIFT_OFFSET, SHIFT_PROB = 0.10, 0.50


def monai_suffix(cfg: TrainConfig) -> list[Any]:
    """MONAI's transforms, as the tutorial's ``train_transforms`` end."""
    from monai import transforms as M

    return [
        M.RandCropByPosNegLabeld(KEYS, **crop_args(cfg)),
        *(M.RandFlipd(KEYS, spatial_axis=[axis], prob=FLIP_PROB) for axis in range(3)),
        M.RandRotate90d(KEYS, prob=ROT90_PROB, max_k=ROT90_MAX_K),
        M.RandShiftIntensityd("image", offsets=SHIFT_OFFSET, prob=SHIFT_PROB),
    ]


def fastpipe_suffix(cfg: TrainConfig) -> list[Any]:
    """fastpipe's batched suffix: fused crop + flips + shift, then a batched rot90."""
    from fastpipe import transforms as T

    crop = T.RandCropByPosNegLabeld(
        KEYS,
        **crop_args(cfg),
        flip_prob=FLIP_PROB,
        shift_prob=SHIFT_PROB,
        shift_offsets=(-SHIFT_OFFSET, SHIFT_OFFSET),
    )
    return [BatchedRot90(crop, KEYS, prob=ROT90_PROB, max_k=ROT90_MAX_K)]


class BatchedRot90:
    """Run a batched crop, then rotate each crop by ``k * 90`` degrees in its first two spatial axes.

    ``k`` is 0 with probability ``1 - prob``, else uniform in ``1..max_k`` (``RandRotate90d``'s
    draw), one per crop, from a CPU ``torch.Generator`` seeded by :meth:`set_random_state`.

    Args:
        crop: a transform with ``batch_call(items) -> dict`` (fastpipe's ``RandCropByPosNegLabeld``).
        keys: keys to rotate.
        prob: probability of rotating a crop (default 0.1).
        max_k: largest number of quarter turns (default 3).

    Shape:
        ``batch_call`` returns the crop's ``(N, C, X, Y, Z)`` tensors; ``X == Y`` is required.

    Example:
        >>> t = BatchedRot90(fastpipe_crop, ["image", "label"]).set_random_state(0)  # doctest: +SKIP
        >>> t.batch_call([item_a, item_b])["image"].shape  # doctest: +SKIP
    """

    random = True

    def __init__(self, crop: Any, keys: list[str], prob: float = 0.1, max_k: int = 3) -> None:
        size = crop.spatial_size
        if size[0] != size[1]:
            raise ValueError(f"BatchedRot90: crops must be square in the rotated axes, got {size}")
        if not 0.0 <= prob <= 1.0 or max_k < 1:
            raise ValueError(f"BatchedRot90: prob must be in [0, 1] and max_k >= 1, got {prob}, {max_k}")
        self.crop, self.keys, self.prob, self.max_k = crop, list(keys), float(prob), int(max_k)
        self.generator = torch.Generator().manual_seed(0)

    def set_random_state(self, seed: int | None = None, state: Any = None) -> BatchedRot90:
        """Reseed the crop and this transform's own generator; returns ``self``."""
        seed = int(seed if seed is not None else torch.seed())
        self.crop.set_random_state(seed)
        self.generator = torch.Generator().manual_seed(seed + 7919)
        return self

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "generator": self.generator.get_state()}

    def __setstate__(self, state: dict[str, Any]) -> None:
        gen = torch.Generator()
        gen.set_state(state["generator"])
        self.__dict__.update(state, generator=gen)

    def _draw(self, n: int) -> torch.Tensor:
        turn = torch.rand(n, generator=self.generator) < self.prob
        k = torch.randint(1, self.max_k + 1, (n,), generator=self.generator)
        return torch.where(turn, k, torch.zeros_like(k))

    def batch_call(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        """The crop's batch with the drawn crops rotated in place (``crop_rot90`` holds ``k`` per crop)."""
        out = self.crop.batch_call(items)
        ks = self._draw(out[self.keys[0]].shape[0])
        for n in torch.nonzero(ks).flatten().tolist():
            for key in self.keys:
                if key in out:
                    out[key][n].copy_(torch.rot90(out[key][n], int(ks[n]), dims=(1, 2)))
        out["crop_rot90"] = ks
        return out

    def __call__(self, data: dict[str, Any]) -> list[dict[str, Any]]:
        """Per-item call: ``num_samples`` dicts, as MONAI's crop returns."""
        batch = self.batch_call([data])
        rest = {k: v for k, v in data.items() if k not in batch and not k.endswith("_indices")}
        return [{**rest, **{k: batch[k][i] for k in self.keys}} for i in range(self.crop.num_samples)]
