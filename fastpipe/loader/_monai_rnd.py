"""Seeding a MONAI dataset's random transforms when a ``ThreadDataLoader`` is made, as MONAI's loaders do.

MONAI's ``DataLoader`` (and so its ``ThreadDataLoader``) draws one seed from torch's generator (the
loader's ``generator``, else the global one) when it is made with ``num_workers=0`` (only then), and hands it to
every ``Randomizable`` inside the dataset (``monai.data.utils.set_rnd``). That is what makes
``torch.manual_seed(0)`` give the same augmentations run after run. fastpipe's own datasets take a seed
per batch (``fetch_seeded``) and need none of this; any other dataset (a MONAI one, a ``Subset`` of
it, a user's own holding MONAI transforms) read by a fastpipe loader gets the same seed MONAI's loader
would give it (the loader's threads then share its transforms, as MONAI's ``num_workers=0`` loader does). Unlike MONAI's, the generator's state is restored afterwards
instead of being reset to its initial seed, so the user's later random draws are left as they were.
"""

from __future__ import annotations

import sys
from typing import Any

import torch


def seed_monai_dataset(dataset: Any, generator: torch.Generator | None, num_workers: int = 0) -> None:
    """Seed ``dataset``'s MONAI random transforms from ``generator`` (or torch's) when ``num_workers`` is 0,
    as MONAI's loader seeds any dataset: a MONAI one, a ``Subset`` of it (``random_split``) or a user's
    class holding MONAI transforms (fastpipe's own datasets seed each batch themselves). With workers MONAI's loader leaves the dataset alone (each worker seeds its
    own copy; fastpipe's fetch threads seed theirs per item, :mod:`fastpipe.loader._thread_rnd`): a
    seed here would also reseed a MONAI ``SmartCacheDataset``'s shuffle, so that a later ``set_data``
    gave other windows than MONAI's."""
    utils = sys.modules.get("monai.data.utils")  # loaded whenever a MONAI transform exists
    if num_workers > 0 or utils is None or hasattr(dataset, "fetch_seeded"):
        return
    gen = torch.random.default_generator if generator is None else generator
    state = gen.get_state()
    seed = int(torch.empty((), dtype=torch.int64).random_(generator=gen).item())
    gen.set_state(state)
    if type(dataset).__module__.startswith("monai."):
        utils.set_rnd(dataset, seed)
    else:  # any object graph: MONAI's walk, without looping on a cycle
        _set_rnd(dataset, seed, set(), int(utils.MAX_SEED))


def _attr(obj: Any, name: str) -> Any:
    """``getattr(obj, name, None)``, also for an object whose ``__getattr__`` raises something else (a proxy)."""
    try:
        return getattr(obj, name, None)
    except Exception:  # noqa: BLE001 - a user's object we only look at: not ours to fail on
        return None


def _set_rnd(obj: Any, seed: int, above: set[int], max_seed: int) -> int:
    """``monai.data.utils.set_rnd`` (same order, same seeds), skipping an object already on the path
    from the dataset down to it (a cycle, on which MONAI's recursion would never end)."""
    if id(obj) in above:
        return seed
    if isinstance(obj, (tuple, list)):  # MONAI's: every item gets the same seed
        above.add(id(obj))
        last = seed
        for item in obj:
            last = _set_rnd(item, seed, above, max_seed)
        above.discard(id(obj))
        return seed if last == seed else seed + 1
    attrs = _attr(obj, "__dict__")
    if not isinstance(attrs, dict):
        return seed
    if _attr(obj, "set_random_state") is not None:
        obj.set_random_state(seed=seed % max_seed)
        return seed + 1
    above.add(id(obj))
    for key in list(attrs):
        if not (isinstance(key, str) and key.startswith("__")):
            seed = _set_rnd(attrs[key], seed, above, max_seed)
    above.discard(id(obj))
    return seed
