"""Compose and the chain split: where a cache stops."""

from __future__ import annotations

import pytest

from fastpipe.transforms import Compose, flatten, is_random, mark_random, split_chain


def add(n):
    def f(d):
        return {**d, "x": d["x"] + n}

    f.__name__ = f"add{n}"
    return f


class FakeMonaiRandom:
    """Duck-typed like monai.transforms.Randomizable: set_random_state + R."""

    def __init__(self):
        self.R = object()

    def set_random_state(self, seed=None, state=None):
        return self

    def __call__(self, d):
        return d


def test_split_at_first_random():
    a, b, r, c = add(1), add(2), mark_random(add(3)), add(4)
    prefix, rest = split_chain([a, Compose([b, r]), c])
    assert prefix == [a, b]
    assert rest == [r, c]


def test_split_all_deterministic():
    chain = [add(1), add(2)]
    prefix, rest = split_chain(chain)
    assert prefix == chain and rest == []


def test_monai_randomizable_is_detected_by_duck_typing():
    assert is_random(FakeMonaiRandom())
    assert not is_random(add(1))


def test_real_monai_transforms_split():
    monai_t = pytest.importorskip("monai.transforms", reason="MONAI is a dev dependency")
    chain = monai_t.Compose(
        [monai_t.ScaleIntensityRanged("image", a_min=0, a_max=1), monai_t.RandFlipd("image", prob=0.5)]
    )
    prefix, rest = split_chain(chain)
    assert [type(t).__name__ for t in prefix] == ["ScaleIntensityRanged"]
    assert [type(t).__name__ for t in rest] == ["RandFlipd"]


def test_wrapped_transform_keeps_randomness():
    class Wrapper:
        def __init__(self, inner):
            self.inner = inner

    assert is_random(Wrapper(mark_random(add(1))))
    assert not is_random(Wrapper(add(1)))


def test_compose_runs_in_order_and_maps_lists():
    def two(d):
        return [dict(d), dict(d)]

    out = Compose([add(1), two, add(10)])({"x": 0})
    assert out == [{"x": 11}, {"x": 11}]


def test_flatten_nested():
    a, b, c = add(1), add(2), add(3)
    assert flatten(Compose([a, Compose([b, [c]])])) == [a, b, c]


def test_mark_random_rejects_builtins_with_clear_error():
    with pytest.raises(TypeError, match="cannot mark"):
        mark_random(len)
