"""Tiny transforms and items shared by the cache and loader tests."""

from __future__ import annotations

import threading

import torch

from fastpipe.transforms import mark_random


class CountingDet:
    """Deterministic: makes an ``image`` volume from ``x``; counts its calls (thread-safe)."""

    random = False  # says so, as a MONAI chain needs of a plain callable before caching it

    def __init__(self, scale: float = 1.0, shape: tuple[int, ...] = (1, 6, 6, 6)) -> None:
        self.scale = scale
        self.shape = shape
        self._lock = threading.Lock()
        self._calls = 0

    @property
    def calls(self) -> int:
        return self._calls

    def __call__(self, d: dict) -> dict:
        with self._lock:
            self._calls += 1
        if d.get("fail"):
            raise ValueError(f"cannot read {d['name']}")
        x = float(d["x"])
        return {
            **d,
            "image": torch.arange(torch.Size(self.shape).numel(), dtype=torch.float32).reshape(self.shape)
            + x,
        }


class RandAdd:
    """Random, fastpipe style: writes a new tensor ``image + u``; optional batched path."""

    random = True

    def __init__(self, batched: bool = False) -> None:
        self.generator = torch.Generator()
        if batched:
            self.batch_call = self._batch_call

    def set_random_state(self, seed: int) -> RandAdd:
        self.generator.manual_seed(seed)
        return self

    def __call__(self, d: dict) -> dict:
        # a Python float: a 1-element CPU tensor cannot be added to a CUDA image
        return {**d, "image": d["image"] + float(torch.rand(1, generator=self.generator))}

    def _batch_call(self, items: list[dict]) -> dict:
        u = torch.rand(len(items), generator=self.generator)
        return {
            "image": torch.stack([it["image"] + u[i] for i, it in enumerate(items)]),
            "x": torch.tensor([it["x"] for it in items]),
        }


@mark_random
def rand_noise_list(d: dict) -> list[dict]:
    """Random multi-sample transform (two new tensors per item) without its own state."""
    return [{**d, "image": d["image"] * 1.0}, {**d, "image": d["image"] * 2.0}]


def items(n: int) -> list[dict]:
    return [{"x": i, "name": f"vol{i}.nii.gz"} for i in range(n)]
