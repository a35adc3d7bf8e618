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


# --- where MONAI's CacheDataset would stop, fastpipe's datasets stop ----------------------------------


def _distinct_reads(chain, n=12):
    import numpy as np

    import fastpipe as fp

    ds = fp.CacheDataset([{"x": np.zeros(3, np.float32)}], chain, progress=False, num_workers=1)
    return len({tuple(np.asarray(ds[0]["x"]).round(6)) for _ in range(n)})


def _noise(d):
    import numpy as np

    return {**d, "x": np.asarray(d["x"]) + np.random.rand(3).astype(np.float32)}


def test_monai_randomizable_trait_transforms_are_random():
    import monai.transforms as M
    from monai.transforms import MapTransform, RandomizableTrait

    class UserRand(MapTransform, RandomizableTrait):  # MONAI's documented way to declare randomness
        def __call__(self, d):
            return _noise(d)

    assert is_random(UserRand("x")) and is_random(M.RandIdentity())
    assert _distinct_reads([UserRand("x")]) > 1
    assert _distinct_reads([M.RandIdentity(), M.Lambdad("x", lambda x: _noise({"x": x})["x"])]) > 1


def test_a_plain_callable_in_a_monai_chain_runs_on_every_read_unless_marked_deterministic():
    import monai.transforms as M

    from fastpipe.transforms import mark_deterministic

    assert _distinct_reads(M.Compose([_noise])) > 1  # MONAI's rule: not a Transform, so random
    assert _distinct_reads([M.Identityd("x"), _noise]) > 1
    assert _distinct_reads([M.Identityd("x"), mark_deterministic(lambda d: _noise(d))]) == 1  # cached
    assert _distinct_reads([lambda d: _noise(d)]) == 1  # a fastpipe chain: cached unless marked random
    assert _distinct_reads([mark_random(lambda d: _noise(d))]) > 1


def test_mark_random_wins_over_a_wrappers_inner_and_compose_seeds_around_it():
    class Sometimes:
        def __init__(self, inner):
            self.inner = inner

        def __call__(self, d):
            return d

    w = mark_random(Sometimes(add(1)))
    assert is_random(w)
    Compose([w, add(2)]).set_random_state(3)  # a marked callable has no set_random_state: skipped


def test_a_nested_monai_compose_with_its_own_settings_gets_the_whole_list():
    import monai.transforms as M
    from monai.transforms import RandomizableTransform

    class TwoSamples(RandomizableTransform):
        def __call__(self, d):
            return [dict(d), dict(d)]

    def first_only(items):  # reads the whole list: the reason for map_items=False
        return items[:1]

    nested = M.Compose([first_only], map_items=False)
    assert flatten([nested]) == [nested]  # kept whole, not inlined
    assert len(Compose([TwoSamples(), nested])({"x": 1})) == 1
    assert len(M.Compose([TwoSamples(), nested])({"x": 1})) == 1


def _crop_chain_item():
    import torch

    label = torch.zeros(1, 12, 12, 12)
    label[0, 3:8, 3:8, 3:8] = 1
    return {"image": torch.rand((1, 12, 12, 12), generator=torch.Generator().manual_seed(0)), "label": label}


@pytest.mark.parametrize("head", ["none", "pad", "indices"])
def test_reseeding_a_chain_transform_after_the_first_call_replays_it_like_monai(head):
    # Compose ran copies of the crop (fused with the flip after it, the pad or the indices before
    # it) made at the first call, so crop.set_random_state(0) afterwards changed nothing: the chain
    # went on with the copy's old stream instead of replaying the crop's draws
    import torch

    from fastpipe import transforms as T

    keys = ["image", "label"]
    crop = T.RandCropByPosNegLabeld(keys, "label", 6, num_samples=4)
    flip = T.RandFlipd(keys, prob=0.5)
    before = {"none": [], "pad": [T.SpatialPadd(keys, 14)], "indices": [T.FgBgToIndicesd("label")]}[head]
    chain = Compose([*before, crop, flip])
    d = _crop_chain_item()
    chain(d)
    runs = []
    for _ in range(2):
        crop.set_random_state(0)
        flip.set_random_state(1)
        runs.append(torch.stack([o["image"] for o in chain(d)]))
    assert torch.equal(runs[0], runs[1])
    # reseeding only the flip leaves the crop's stream going on: no crop is drawn again
    flip.set_random_state(1)
    assert not torch.equal(torch.stack([o["image"] for o in chain(d)]), runs[1])
