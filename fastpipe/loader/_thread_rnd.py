"""Copies of a dataset's random transforms for ``ThreadDataLoader``'s fetch threads (``num_workers > 0``).

torch's and MONAI's ``DataLoader`` workers are processes: each holds its own copy of the dataset and
of its random transforms. fastpipe's fetch threads share one dataset object, and a MONAI random
transform keeps its draw on the object (``randomize()`` sets its parameters, then every key is
transformed with them): two threads inside one ``RandSpatialCropd`` would crop an item's image with
one draw and its label with the other's. A dataset fastpipe does not seed itself (no ``fetch_seeded``)
is therefore read through copies: the path from the dataset to each random transform (anything with
``set_random_state`` that is not a dataset, found as MONAI's ``set_rnd`` finds it) is copied, the
rest (data list, cache) is shared. A copy serves one read at a time and is seeded before each read
from that read's own seed, so an item's draw depends on the loader's seed, the epoch, the batch and
its position, never on which thread read it. A transform that cannot be deep-copied makes the reads
take turns on the dataset itself instead (one warning).

Threading contract: :meth:`ThreadCopies.use` from any number of threads; a copy is in one thread's hands at a time.
"""

from __future__ import annotations

import copy
import threading
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch

from fastpipe.transforms._read_traces import copy_ids, restore_trace_ids

MAX_SEED = 2**32  # MONAI's: a numpy RandomState seed is below it
_MAX_DEPTH = 8  # from the dataset down to a random transform
_MAX_STATE_DEPTH = (
    16  # inside a transform down to its random states (nested Compose / OneOf / sub-transforms)
)
Path = tuple[Any, ...]  # attribute names (str) and list/tuple positions (int) from the dataset down


def _attr(obj: Any, name: str) -> Any:
    """``getattr(obj, name, None)``, also for an object whose ``__getattr__`` raises something else (a proxy)."""
    try:
        return getattr(obj, name, None)
    except Exception:  # noqa: BLE001 - an object we only look at: not ours to fail on
        return None


def _is_random_leaf(obj: Any) -> bool:
    return callable(_attr(obj, "set_random_state")) and not isinstance(obj, torch.utils.data.Dataset)


def random_paths(obj: Any, path: Path = (), seen: set[int] | None = None) -> list[Path]:
    """The paths to the random transforms inside ``obj``, in MONAI's ``set_rnd`` order. A fastpipe cache
    (``fetch_seeded``) seeds its own transforms per read and is not entered."""
    seen = set() if seen is None else seen
    if id(obj) in seen or len(path) > _MAX_DEPTH or isinstance(obj, (torch.Tensor, np.ndarray, str, bytes)):
        return []
    seen.add(id(obj))
    if isinstance(obj, (list, tuple)):
        return [p for i, item in enumerate(obj) for p in random_paths(item, (*path, i), seen)]
    if path and _is_random_leaf(obj):
        return [path]
    attrs = _attr(obj, "__dict__")
    if not isinstance(attrs, dict) or _attr(obj, "fetch_seeded") is not None:
        return []
    return [
        p
        for key in list(attrs)
        if not key.startswith("__")
        for p in random_paths(attrs[key], (*path, key), seen)
    ]


def _copy_paths(dataset: Any, paths: list[Path]) -> tuple[Any, list[Any], list[Any]]:
    """``(copy of dataset, its random transforms, every object copied)``: shallow copies down each path, a
    deep copy at its end."""
    root = _shallow(dataset)
    copies: dict[Path, Any] = {(): root}  # the dataset and the objects down to each leaf, copied
    tuples = []  # copied as lists to set their items, made tuples again once done (deepest first)
    leaves = []
    for path in paths:
        parent = root
        for depth in range(1, len(path) + 1):
            sub = path[:depth]
            if sub not in copies:
                original = _child(parent, sub[-1])
                if depth == len(path):
                    new = copy.deepcopy(original)
                else:
                    new = list(original) if isinstance(original, tuple) else _shallow(original)
                    if isinstance(original, tuple):
                        tuples.append(sub)
                copies[sub] = _set_child(parent, sub[-1], new)
            parent = copies[sub]
        leaves.append(parent)
    for sub in sorted(tuples, key=len, reverse=True):
        _set_child(copies[sub[:-1]], sub[-1], tuple(copies[sub]))
    return root, leaves, list(copies.values())


def _own_states(nodes: list[Any]) -> list[np.random.RandomState]:
    """The copied datasets that draw themselves (MONAI's ``ArrayDataset`` seeds its transforms from its own
    ``R`` per item), each given its own ``R``: the original's is shared by every copy, and drawn in
    whichever order the threads come."""
    states = []
    for node in nodes:
        if isinstance(node, torch.utils.data.Dataset) and callable(_attr(node, "set_random_state")):
            node.set_random_state(seed=0)
            if isinstance(vars(node).get("R"), np.random.RandomState):
                states.append(vars(node)["R"])
    return states


def _shallow(obj: Any) -> Any:
    """A new object of ``obj``'s class sharing its attributes, without ``__getstate__``/``__copy__``: a dataset
    whose pickling drops a file handle (reopened in each worker process) keeps it here, as a thread shares it."""
    if isinstance(obj, list):
        return list(obj)
    try:
        new = object.__new__(type(obj))
    except TypeError:  # a builtin's subclass (a dict's, say): its contents need its own copy
        return copy.copy(obj)
    new.__dict__.update(vars(obj))
    return new


def _child(parent: Any, key: Any) -> Any:
    return parent[key] if isinstance(key, int) else getattr(parent, key)


def _at(obj: Any, path: Path) -> Any:
    """The object at ``path`` inside ``obj``."""
    for key in path:
        obj = _child(obj, key)
    return obj


def _set_child(parent: Any, key: Any, new: Any) -> Any:
    if isinstance(key, int):
        parent[key] = new
    else:
        object.__setattr__(parent, key, new)
    return new


def _states(obj: Any, found: list[Any], seen: set[int], depth: int = 0) -> None:
    """Append the random states reachable from ``obj`` (numpy ``RandomState``, ``torch.Generator``) to ``found``."""
    if id(obj) in seen or depth > _MAX_STATE_DEPTH or isinstance(obj, (torch.Tensor, np.ndarray, str, bytes)):
        return
    seen.add(id(obj))
    if isinstance(obj, (np.random.RandomState, torch.Generator)):
        found.append(obj)
    elif isinstance(obj, (list, tuple)):
        for item in obj:
            _states(item, found, seen, depth + 1)
    elif isinstance(_attr(obj, "__dict__"), dict):
        for value in list(vars(obj).values()):
            _states(value, found, seen, depth + 1)


def reseeder(leaves: list[Any], nodes: list[Any] = ()) -> Callable[[int], None]:
    """``reseed(seed)`` for a copy's random transforms. Each is given its own state once (MONAI's class-level
    ``R`` would be shared by every copy); then every random state found inside them (numpy ``RandomState``,
    ``torch.Generator``: MONAI's ``Compose`` does not reseed a fastpipe transform it holds) is reseeded in
    place per read (a new ``RandomState`` costs about 100 us); a transform holding none is given
    ``set_random_state`` again."""
    states: list[Any] = _own_states(list(nodes))
    calls, seen = [], {id(state) for state in states}
    for leaf in leaves:
        leaf.set_random_state(seed=0)
        found: list[Any] = []
        _states(leaf, found, seen)
        states.extend(found)
        if not found:
            calls.append(leaf)

    def reseed(seed: int) -> None:
        for k, state in enumerate(states):
            if isinstance(state, torch.Generator):
                state.manual_seed((seed + k) % MAX_SEED)
            else:
                state.seed((seed + k) % MAX_SEED)
        for k, leaf in enumerate(calls, start=len(states)):
            leaf.set_random_state(seed=(seed + k) % MAX_SEED)

    return reseed


class ThreadCopies:
    """Copies of ``dataset`` with their own random transforms, handed out one read at a time.

    Args:
        dataset: the loader's dataset (read by index or ``__getitems__``).
        paths: :func:`random_paths` of it (not empty).
    """

    def __init__(self, dataset: Any, paths: list[Path]) -> None:
        self.dataset, self.paths = dataset, paths
        self._free: list[tuple[Any, Callable[[int], None]]] = []
        self._lock = threading.Lock()
        self._turns: threading.Lock | None = None  # set when the transforms cannot be copied
        self._ids: dict[int, dict[int, int]] = {}  # per copy: its transforms' ids -> the originals'

    def restored(self, own: Any, out: Any) -> Any:
        """``out``, read from ``own`` (a copy :meth:`use` gave), with the MONAI trace records its
        transforms made naming the original transforms, which MONAI's ``Invertd`` is given."""
        ids = self._ids.get(id(own))
        return restore_trace_ids(out, ids) if ids else out

    @contextmanager
    def use(self, seed: int) -> Iterator[Any]:
        """A dataset to read from, its random transforms seeded from ``seed`` (``seed + k`` for the ``k``-th)."""
        if self._turns is not None:
            with self._turns:
                yield self.dataset
            return
        with self._lock:
            pair = self._free.pop() if self._free else None
        if pair is None:
            try:
                root, leaves, nodes = _copy_paths(self.dataset, self.paths)
                pair = root, reseeder(leaves, nodes)
                originals = [_at(self.dataset, path) for path in self.paths]
                self._ids[id(root)] = copy_ids(leaves, originals)
            except Exception as err:  # noqa: BLE001 - any copy that fails: the reads take turns instead
                self._take_turns(err)
                with self._turns:
                    yield self.dataset
                return
        pair[1](seed)
        try:
            yield pair[0]
        finally:
            with self._lock:
                self._free.append(pair)

    def _take_turns(self, err: Exception) -> None:
        with self._lock:
            if self._turns is None:
                self._turns = threading.Lock()
                warnings.warn(
                    f"ThreadDataLoader: the random transforms of {type(self.dataset).__name__} cannot be copied "
                    f"for each fetch thread ({type(err).__name__}: {err}); its items are read one at a time",
                    RuntimeWarning,
                    stacklevel=2,
                )


def thread_copies(dataset: Any, num_workers: int) -> ThreadCopies | None:
    """:class:`ThreadCopies` for a dataset read by several fetch threads that holds random transforms
    it does not seed per read itself; ``None`` when no copies are needed."""
    if (
        num_workers < 1
        or hasattr(dataset, "fetch_seeded")
        or isinstance(dataset, torch.utils.data.IterableDataset)
    ):
        return None
    paths = random_paths(dataset)
    return ThreadCopies(dataset, paths) if paths else None
