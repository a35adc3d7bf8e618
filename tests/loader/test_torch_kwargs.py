"""ThreadDataLoader takes the torch DataLoader keywords users pass by habit, or says why not."""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest
import torch
from _cache_helpers import CountingDet, RandAdd, items

from fastpipe import CacheDataset, ThreadDataLoader, list_data_collate

DATA = [{"x": torch.full((2,), float(i))} for i in range(6)]


def xs(loader) -> list[float]:
    return [v for b in loader for v in b["x"][:, 0].tolist()]


@pytest.mark.timeout(20)
def test_habitual_torch_keywords_are_accepted():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # default values: no warning either
        loader = ThreadDataLoader(
            DATA,
            batch_size=2,
            pin_memory=True,
            prefetch_factor=4,
            persistent_workers=False,
            timeout=0,
            worker_init_fn=None,
            multiprocessing_context=None,
            pin_memory_device="",
            drop_last=False,
            generator=None,
        )
    assert xs(loader) == [0, 1, 2, 3, 4, 5]
    assert loader.pin_memory == torch.cuda.is_available()


@pytest.mark.timeout(20)
def test_prefetch_factor_raises_the_buffer():
    loader = ThreadDataLoader(DATA, batch_size=2, num_workers=2, prefetch_factor=3)
    assert loader.buffer_size == 6


@pytest.mark.timeout(20)
def test_sampler_gives_the_order_and_length():
    loader = ThreadDataLoader(DATA, batch_size=2, sampler=[5, 4, 3])
    assert len(loader) == 2 and xs(loader) == [5, 4, 3]
    with pytest.raises(ValueError, match="sampler= and shuffle=True"):
        ThreadDataLoader(DATA, sampler=[0], shuffle=True)


@pytest.mark.timeout(20)
def test_process_only_keywords_warn_that_they_change_nothing():
    """timeout= was only warned about (it now holds, as in torch: test_timeout.py); the others still warn."""
    with pytest.warns(UserWarning, match="ignores multiprocessing_context='spawn': no worker processes"):
        loader = ThreadDataLoader(DATA, batch_size=3, multiprocessing_context="spawn")
    assert xs(loader) == [0, 1, 2, 3, 4, 5]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loader = ThreadDataLoader(DATA, batch_size=3, timeout=60)
    assert loader.timeout == 60 and xs(loader) == [0, 1, 2, 3, 4, 5]
    with pytest.raises(ValueError, match="timeout option should be non-negative"):
        ThreadDataLoader(DATA, timeout=-1)


@pytest.mark.parametrize(
    ("kwargs", "why"),
    [({"worker_init_fn": lambda i: None}, "no worker processes to initialise")],
)
def test_unsupported_keywords_say_why(kwargs, why):
    with pytest.raises(TypeError, match=why):
        ThreadDataLoader(DATA, **kwargs)


def test_unknown_keyword_lists_the_accepted_ones():
    with pytest.raises(TypeError) as err:
        ThreadDataLoader(DATA, bogus=1)
    assert "['bogus']" in str(err.value) and "prefetch_factor" in str(err.value)


@pytest.mark.timeout(20)
def test_monai_thread_data_loader_keywords_are_accepted():
    """MONAI's ThreadDataLoader(buffer_timeout=, use_thread_workers=) raised TypeError: not a drop-in."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loader = ThreadDataLoader(DATA, batch_size=2, buffer_size=1, buffer_timeout=0.01, repeats=1)
        threaded = ThreadDataLoader(DATA, batch_size=2, num_workers=2, use_thread_workers=True)
    assert xs(loader) == xs(threaded) == [0, 1, 2, 3, 4, 5]


@pytest.mark.timeout(30)
@pytest.mark.parametrize("shuffle", [True, False])
def test_a_seeded_generator_gives_torchs_order_every_epoch(shuffle):
    """generator= was used for randperm alone: torch's (and MONAI's) DataLoader first draws its base seed
    from it, and its RandomSampler a second permutation at the epoch's end, so a generator seeded alike
    gave another order than theirs from the first epoch on."""
    data = [{"x": torch.full((2,), float(i))} for i in range(10)]

    def epochs(loader):
        return [xs(loader) for _ in range(3)]

    theirs = torch.utils.data.DataLoader(data, 3, shuffle=shuffle, generator=torch.Generator().manual_seed(7))
    ours = ThreadDataLoader(data, 3, shuffle=shuffle, generator=torch.Generator().manual_seed(7))
    assert epochs(ours) == epochs(theirs)
    shared = [torch.Generator().manual_seed(3) for _ in range(2)]  # and they leave a shared generator alike
    list(torch.utils.data.DataLoader(data, 4, shuffle=shuffle, generator=shared[0]))
    list(ThreadDataLoader(data, 4, shuffle=shuffle, generator=shared[1]))
    assert torch.equal(torch.rand(4, generator=shared[0]), torch.rand(4, generator=shared[1]))


@pytest.mark.timeout(60)
@pytest.mark.parametrize("num_workers", [0, 2])
def test_a_users_collate_fn_gets_a_batched_datasets_crops(num_workers):
    """Over a dataset with a batched suffix the user's collate_fn was skipped, silently: the batch came
    without what it adds (torch's and MONAI's loaders call it on the crops)."""
    seen = []

    def tagged(batch):
        seen.append(len(batch))
        return {**list_data_collate(batch), "tag": "mine"}

    ds = CacheDataset(items(4), [CountingDet(), RandAdd(batched=True)], progress=False)
    assert ds.batched
    batches = list(ThreadDataLoader(ds, batch_size=2, num_workers=num_workers, collate_fn=tagged))
    plain = list(ThreadDataLoader(ds, batch_size=2, num_workers=num_workers))
    assert [b["tag"] for b in batches] == ["mine"] * 2 and seen == [2, 2]
    assert [b["image"].shape for b in batches] == [b["image"].shape for b in plain]


@pytest.mark.parametrize(
    ("kwargs", "error", "says"),
    [
        ({"batch_size": 2.5}, TypeError, "batch_size must be an integer, got 2.5"),
        ({"batch_size": None}, TypeError, "batch_size=None"),
        ({"num_workers": None}, TypeError, "num_workers must be an integer, got None"),
        ({"repeats": 1.5}, TypeError, "repeats must be an integer"),
        ({"batch_size": 0}, ValueError, "batch_size must be >= 1, got 0"),
    ],
)
def test_counts_that_are_not_integers_are_refused_naming_the_option(kwargs, error, says):
    """batch_size=2.5 was truncated to 2 without a word (torch raises), and batch_size=None (torch's
    unbatched mode) or num_workers=None raised int()'s TypeError, which names no option."""
    with pytest.raises(error, match=re.escape(says)):
        ThreadDataLoader(DATA, **kwargs)
    assert ThreadDataLoader(DATA, batch_size=np.int64(2)).batch_size == 2  # numpy integers are integers
