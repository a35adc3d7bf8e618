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
    u_fire, u = torch.rand((n, 2), generator=generator, dtype=torch.float64).unbind(1)
    if (lo, hi) == (0.0, 1.0):  # the same values, without two tensor ops (a flip reads only ``fire``)
        return u_fire < prob, u
    return u_fire < prob, lo + (hi - lo) * u


def draw_k(n: int, generator: torch.Generator | None, prob: float, max_k: int) -> torch.Tensor:
    """``(n,)`` int64 quarter turns: 0 when the transform does not fire, else uniform in ``1..max_k``.

    From the same ``2 * n`` float64 values as :func:`draw_uniform`, on host floats (``n`` is a batch's
    crop count: cheaper than six tensor ops); ``int`` floors the non-negative ``u * max_k``.
    """
    u = torch.rand((n, 2), generator=generator, dtype=torch.float64).tolist()
    return torch.tensor([min(int(b * max_k) + 1, max_k) if a < prob else 0 for a, b in u], dtype=torch.int64)


def _host(t: torch.Tensor | Sequence) -> list:
    return t.tolist() if isinstance(t, torch.Tensor) else list(t)


@dataclass
class Orientation:
    """A signed permutation per crop: output axis ``a`` reads source axis ``axes[n][a]``, reversed where ``flips[n][a]``.

    Host lists, one 3-tuple per crop: a batch has a few crops, and composing them in Python costs less
    than the tensor ops that would vectorise it. :meth:`tensors` gives what
    :func:`fastpipe.ops.crop_batch` takes.

    Example:
        >>> o = Orientation.identity(2)
        >>> o.rot90(torch.tensor([1, 0]), (0, 1)).axes
        [(1, 0, 2), (0, 1, 2)]
    """

    axes: list[tuple[int, ...]]
    flips: list[tuple[bool, ...]]

    @staticmethod
    def identity(n: int) -> Orientation:
        return Orientation([(0, 1, 2)] * n, [(False, False, False)] * n)

    def flip(self, fire: torch.Tensor | Sequence[bool], spatial_axes: Sequence[int]) -> Orientation:
        """Reverse the current axes ``spatial_axes`` of the crops where ``fire`` (``torch.flip``)."""
        fire = _host(fire)
        if not any(fire):
            return self
        mask = tuple(a in spatial_axes for a in range(3))
        flips = [tuple(f != m for f, m in zip(fl, mask, strict=True)) if on else fl
                 for fl, on in zip(self.flips, fire, strict=True)]  # fmt: skip
        return Orientation(self.axes, flips)

    def rot90(self, k: torch.Tensor | Sequence[int], spatial_axes: Sequence[int]) -> Orientation:
        """Rotate each crop by ``k`` quarter turns in the plane ``spatial_axes`` (``torch.rot90``).

        One turn is ``x.flip(b).transpose(a, b)``: new axis ``a`` reads old axis ``b`` reversed, new
        axis ``b`` reads old axis ``a``. ``k`` turns are the signed permutation ``_turns(plane)[k % 4]``:
        new axis ``i`` reads current axis ``perm[i]``, reversed once more where ``rev[i]``.
        """
        k = [int(kk) % 4 for kk in _host(k)]
        if not any(k):
            return self
        turns = _turns(tuple(spatial_axes))
        axes, flips = [], []
        for ax, fl, kk in zip(self.axes, self.flips, k, strict=True):
            perm, rev = turns[kk]
            axes.append(tuple(ax[i] for i in perm))
            flips.append(tuple(fl[i] != r for i, r in zip(perm, rev, strict=True)))
        return Orientation(axes, flips)

    def is_identity(self) -> bool:
        return all(a == (0, 1, 2) for a in self.axes) and not any(any(f) for f in self.flips)

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(axes, flips)``: ``(n, 3)`` int64 and ``(n, 3)`` bool CPU tensors."""
        return torch.tensor(self.axes, dtype=torch.int64), torch.tensor(self.flips, dtype=torch.bool)


@functools.cache
def _turns(plane: tuple[int, int]) -> tuple[tuple[tuple[int, ...], tuple[bool, ...]], ...]:
    """``k`` quarter turns in ``plane``, for ``k = 0..3``, as ``(perm, rev)``: new axis ``i`` reads current
    axis ``perm[i]``, reversed where ``rev[i]``; built one turn at a time."""
    a, b = plane
    perm, rev = [[0, 1, 2]], [[False] * 3]
    for _ in range(3):
        p, r = list(perm[-1]), list(rev[-1])
        p[a], p[b], r[a], r[b] = perm[-1][b], perm[-1][a], not rev[-1][b], rev[-1][a]
        perm.append(p)
        rev.append(r)
    return tuple((tuple(p), tuple(r)) for p, r in zip(perm, rev, strict=True))
