"""Parameter draws of the batched random transforms, and their composition into one crop op.

Sample, then apply: every random transform draws its parameters for all ``n`` crops of a batch as
one tensor (on the CPU, from a ``torch.Generator``: a few bytes per crop), then a deterministic op
applies them. ``draw_*`` return host tensors; :class:`Orientation` composes flips and 90-degree
rotations into the signed axis permutation that :func:`fastpipe.ops.crop_batch` applies while it
gathers (``axes`` + ``flips``).

Each draw takes ``torch.rand((n, 2))`` float64 values: column 0 decides whether the transform fires
(``u < prob``, MONAI's ``R.rand() < prob``), column 1 is its value, so a transform consumes the same
number of random numbers whatever it decides and batches stay replayable.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import torch


def draw_uniform(
    n: int, generator: torch.Generator | None, prob: float, lo: float, hi: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(fire, value)``: ``(n,)`` bool with ``P(fire) = prob`` and ``(n,)`` float64 ``~ U(lo, hi)``."""
    u = torch.rand((n, 2), generator=generator, dtype=torch.float64)
    return u[:, 0] < prob, lo + (hi - lo) * u[:, 1]


def draw_k(n: int, generator: torch.Generator | None, prob: float, max_k: int) -> torch.Tensor:
    """``(n,)`` int64 quarter turns: 0 when the transform does not fire, else uniform in ``1..max_k``."""
    fire, u = draw_uniform(n, generator, prob, 0.0, 1.0)
    k = torch.clamp((u * max_k).floor().to(torch.int64) + 1, max=max_k)
    return torch.where(fire, k, 0)


@dataclass
class Orientation:
    """A signed permutation per crop: output axis ``a`` reads source axis ``axes[:, a]``, reversed where ``flips[:, a]``.

    Shape:
        axes: ``(n, 3)`` int64; flips: ``(n, 3)`` bool (both on the CPU).

    Example:
        >>> o = Orientation.identity(2)
        >>> o.rot90(torch.tensor([1, 0]), (0, 1)).axes.tolist()
        [[1, 0, 2], [0, 1, 2]]
    """

    axes: torch.Tensor
    flips: torch.Tensor

    @staticmethod
    def identity(n: int) -> Orientation:
        return Orientation(torch.arange(3).repeat(n, 1), torch.zeros((n, 3), dtype=torch.bool))

    def flip(self, fire: torch.Tensor, spatial_axes: Sequence[int]) -> Orientation:
        """Reverse the current axes ``spatial_axes`` of the crops where ``fire`` (``torch.flip``)."""
        if not bool(fire.any()):
            return self
        return Orientation(self.axes, self.flips ^ (fire[:, None] & _axis_mask(tuple(spatial_axes))))

    def rot90(self, k: torch.Tensor, spatial_axes: Sequence[int]) -> Orientation:
        """Rotate each crop by ``k`` quarter turns in the plane ``spatial_axes`` (``torch.rot90``).

        One turn is ``x.flip(b).transpose(a, b)``: new axis ``a`` reads old axis ``b`` reversed, new
        axis ``b`` reads old axis ``a``. ``k`` turns are the signed permutation ``_turns(plane)[k % 4]``,
        applied to every crop at once with one gather.
        """
        k = k % 4
        if not bool(k.any()):
            return self
        perm, rev = _turns(tuple(spatial_axes))
        idx = perm[k]  # (n, 3): new axis i reads current axis idx[:, i]
        return Orientation(self.axes.gather(1, idx), self.flips.gather(1, idx) ^ rev[k])

    def is_identity(self) -> bool:
        return bool((self.axes == torch.arange(3)).all()) and not bool(self.flips.any())


@functools.cache
def _turns(plane: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(perm, rev)``, each ``(4, 3)``: ``k`` quarter turns in ``plane`` as a signed permutation (new
    axis ``i`` reads current axis ``perm[k, i]``, reversed where ``rev[k, i]``), one turn at a time."""
    a, b = plane
    perm, rev = [[0, 1, 2]], [[False] * 3]
    for _ in range(3):
        p, r = list(perm[-1]), list(rev[-1])
        p[a], p[b], r[a], r[b] = perm[-1][b], perm[-1][a], not rev[-1][b], rev[-1][a]
        perm.append(p)
        rev.append(r)
    return torch.tensor(perm), torch.tensor(rev)


@functools.cache
def _axis_mask(spatial_axes: tuple[int, ...]) -> torch.Tensor:
    """``(3,)`` bool, true on ``spatial_axes`` (read only: shared between calls)."""
    return torch.tensor([a in spatial_axes for a in range(3)])
