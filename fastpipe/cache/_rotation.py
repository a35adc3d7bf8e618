"""SmartCache's rotation policy: which items are in the window each round, and the checks of its sizes."""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np


class Rotation:
    """MONAI's running window: ``order[start : start + cache_num]`` (cyclic), then the next ``replace_num``.

    Args:
        n: number of data items.
        cache_num: items in the window.
        replace_num: items replaced per round.
        shuffle: permute the data order once with ``numpy.random.RandomState(seed)`` (MONAI's draw).
        seed: seed of that permutation (default 0).
        rng: the ``numpy.random.RandomState`` that shuffles instead of a new one seeded with ``seed``
            (default ``None``); MONAI shuffles the data of each ``set_data`` with one state.

    Example:
        >>> r = Rotation(5, cache_num=4, replace_num=1, shuffle=False)
        >>> r.window(), r.incoming(), r.outgoing()
        ([0, 1, 2, 3], [4], [0])
    """

    def __init__(
        self,
        n: int,
        cache_num: int,
        replace_num: int,
        shuffle: bool,
        seed: int = 0,
        rng: np.random.RandomState | None = None,
    ) -> None:
        self.order = list(range(n))
        if shuffle:
            (rng or np.random.RandomState(seed % 2**32)).shuffle(self.order)  # any int seed, as MONAI's
        self.n, self.cache_num, self.replace_num = n, cache_num, replace_num
        self.start = 0

    def _take(self, offset: int, count: int) -> list[int]:
        return [self.order[(self.start + offset + i) % self.n] for i in range(count)]

    def window(self) -> list[int]:
        """Data indices of the current window, oldest first."""
        return self._take(0, self.cache_num)

    def incoming(self) -> list[int]:
        """Data indices that enter at the next round."""
        return self._take(self.cache_num, self.replace_num)

    def outgoing(self) -> list[int]:
        """Data indices that leave at the next round (the oldest of the window)."""
        return self._take(0, self.replace_num)

    def advance(self) -> None:
        """Move the window by one round."""
        self.start = (self.start + self.replace_num) % self.n


def check_args(cache_num: Any, replace_rate: Any, cache_rate: Any) -> None:
    """Validate ``SmartCacheDataset``'s sizes: ``TypeError``/``ValueError`` with the value received."""
    if cache_num is None:  # MONAI's default: the window is int(len(data) * cache_rate)
        pass
    elif isinstance(cache_num, bool) or not isinstance(cache_num, numbers.Integral):  # numpy's ints too
        hint = ""
        if isinstance(cache_num, float) and 0.0 < cache_num <= 1.0:  # MONAI's third parameter is replace_rate
            hint = (
                " (a rate? MONAI's SmartCacheDataset takes replace_rate third and cache_num fourth, fastpipe's "
                "cache_num third: pass both by keyword)"
            )
        raise TypeError(f"cache_num must be an int, got {type(cache_num).__name__} {cache_num!r}{hint}")
    elif cache_num <= 0:
        raise ValueError(f"cache_num must be > 0, got {cache_num} (None: int(len(data) * cache_rate))")
    if not 0.0 < float(replace_rate) <= 1.0:
        raise ValueError(f"replace_rate must be in (0, 1], got {replace_rate}")
    if not 0.0 < float(cache_rate) <= 1.0:
        raise ValueError(f"cache_rate must be in (0, 1], got {cache_rate}")
