"""Partitioned caches under ``torch.distributed``: shards, re-dealing, equal batch counts, a fill barrier.

Under ``torchrun`` or SLURM every rank used to cache the whole dataset, so host or GPU memory ran out
(MONAI issue #913). Here each rank caches only its shard: ``CacheDataset(data, chain)`` partitions
``data`` itself when ``torch.distributed`` is initialised (or when ``rank``/``world_size`` are given),
with a permutation drawn from a seed shared by all ranks, so the ranks agree on disjoint shards that
cover the data without talking to each other.

Memory against mixing:

- *Fixed shards* (the default): per-rank cache bytes are ``total / world_size``; a rank only ever
  sees its own items, so batches mix items from one shard. With a random shard (``shuffle=True``)
  this is the same trade MONAI's ``partition_dataset`` makes, and for the usual DDP training (all
  ranks' gradients are averaged every step) it barely matters.
- *Re-dealt shards* (:func:`reshard`): the deal changes every epoch (seed ``seed + epoch``), so over
  epochs every rank sees every item and batches mix across the whole set. Memory stays
  ``total / world_size`` per rank, but each epoch the rank fills a new shard: with a shared
  ``persist_dir`` the items another rank computed load from disk (cost: reading ``total / world_size``
  bytes per epoch); without it they are recomputed (cost: a full fill per epoch).
- *Full copies* (``world_size=1`` on every rank): perfect mixing, ``world_size`` times the memory.

Threading/collective contract: :func:`equal_batches` and :func:`fill_barrier` are collective: every
rank of the process group must call them the same number of times, in the same order.

Example:
    >>> partition(list(range(5)), rank=1, world_size=2, shuffle=False)
    [1, 3, 0]
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import torch

from fastpipe.runtime import _env, _rendezvous
from fastpipe.runtime._rendezvous import FillBarrierError

T = TypeVar("T")
DEFAULT_FILL_TIMEOUT_S = 600.0


def _initialized() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def dist_info(rank: int | None = None, world_size: int | None = None) -> tuple[int, int]:
    """``(rank, world_size)``: explicit arguments win, else the initialised process group, else ``(0, 1)``.

    Args:
        rank: this process's rank (default ``None``: from ``torch.distributed``).
        world_size: number of ranks (default ``None``: from ``torch.distributed``).
    """
    if world_size is None:
        world_size = torch.distributed.get_world_size() if _initialized() else _env.single_process_world()
    if rank is None:
        if world_size > 1 and not _initialized():  # every process would take rank 0's shard
            raise ValueError(
                f"world_size={world_size} without rank=: pass this process's rank, or initialise "
                "torch.distributed so that it gives it"
            )
        rank = torch.distributed.get_rank() if world_size > 1 else 0
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
    return int(rank), int(world_size)


def local_device() -> torch.device:
    """This rank's device: ``cuda:$LOCAL_RANK`` when CUDA is present, else CPU.

    Without ``LOCAL_RANK`` (``torch.multiprocessing.spawn`` and other launchers that do not set it)
    it is the device the process chose with ``torch.cuda.set_device`` (``cuda:0`` if it chose none),
    so that ranks sharing a machine do not all land on ``cuda:0``. A process that sees one GPU only
    (``CUDA_VISIBLE_DEVICES`` set per rank, as SLURM's ``--gpus-per-task`` does) takes ``cuda:0``
    whatever its ``LOCAL_RANK``; a ``LOCAL_RANK`` past several visible GPUs is a ``ValueError``.
    """
    if not torch.cuda.is_available():
        return torch.device("cpu")
    rank = _env.local_rank()
    if rank is None:
        return torch.device("cuda", torch.cuda.current_device())
    count = torch.cuda.device_count()
    if count and rank >= count:
        if count == 1:  # this rank's one GPU, whatever its index on the machine
            return torch.device("cuda", 0)
        raise ValueError(
            f"LOCAL_RANK={rank} but this process sees {count} CUDA devices (CUDA_VISIBLE_DEVICES="
            f"{_env.cuda_visible_devices()}); start at most {count} ranks per node"
        )
    return torch.device("cuda", rank)


def partition_indices(
    n: int,
    rank: int | None = None,
    world_size: int | None = None,
    seed: int = 0,
    even_divisible: bool = True,
    shuffle: bool = True,
    drop_last: bool = False,
) -> list[int]:
    """Indices into ``range(n)`` of this rank's shard (MONAI ``partition_dataset`` semantics).

    The order is a permutation drawn from ``seed`` (identical on every rank; the identity when
    ``shuffle=False``); rank ``r`` takes every ``world_size``-th index from position ``r``.

    Args:
        n: number of items.
        rank, world_size: see :func:`dist_info` (default ``None``: from ``torch.distributed``).
        seed: the seed shared by all ranks (default 0).
        even_divisible: pad by repeating items from the start of the order so every rank gets
            ``ceil(n / world_size)`` items (default ``True``); ``False`` gives uneven shards (the first
            ``n % world_size`` ranks get one more) and no repeats.
        shuffle: permute before dealing (default ``True``).
        drop_last: drop the ``n % world_size`` extra items so every rank gets ``n // world_size``
            (default ``False``; overrides ``even_divisible``).

    Raises:
        ValueError: fewer items than ranks (``n < world_size``), as MONAI's ``partition_dataset``.
    """
    rank, world_size = dist_info(rank, world_size)
    if n < world_size:  # every rank raises alike, none waits at a barrier
        why = f"(even_divisible={even_divisible}, drop_last={drop_last})"
        if even_divisible and not drop_last:  # padding: two ranks, one item, one position, the same crops
            why = "of their own (padding would give two ranks one item, and the same crops of it)"
        raise ValueError(
            f"{world_size - n} of {world_size} ranks would get no items from {n} {why}, which MONAI's "
            "partition_dataset refuses too; use fewer ranks, or world_size=1 so every rank caches every item"
        )
    return _deal_order(n, world_size, seed, even_divisible, shuffle, drop_last)[rank::world_size]


def _deal_order(
    n: int, world_size: int, seed: int, even_divisible: bool, shuffle: bool, drop_last: bool
) -> list[int]:
    """The dealing order every rank computes alike: permuted (or not), then trimmed or padded."""
    if shuffle:
        order = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed))).tolist()
    else:
        order = list(range(n))
    if drop_last:
        return order[: (n // world_size) * world_size]
    if even_divisible and n:
        total = -(-n // world_size) * world_size
        return [order[i % n] for i in range(total)]
    return order


def partition(
    data: Sequence[T],
    rank: int | None = None,
    world_size: int | None = None,
    seed: int = 0,
    even_divisible: bool = True,
    shuffle: bool = True,
    drop_last: bool = False,
) -> list[T]:
    """This rank's shard of ``data``; the arguments are those of :func:`partition_indices`.

    Example:
        >>> [partition("abcde", r, 2, shuffle=False, even_divisible=False) for r in (0, 1)]
        [['a', 'c', 'e'], ['b', 'd']]
    """
    idx = partition_indices(len(data), rank, world_size, seed, even_divisible, shuffle, drop_last)
    return [data[i] for i in idx]


def epoch_seed(seed: int, epoch: int) -> int:
    """The partition seed of ``epoch`` when shards are re-dealt between epochs."""
    return int(seed) + 1_000_003 * int(epoch)


def reshard(
    data: Sequence[T],
    epoch: int,
    rank: int | None = None,
    world_size: int | None = None,
    seed: int = 0,
    even_divisible: bool = True,
) -> list[T]:
    """This rank's shard for ``epoch``: a fresh deal every epoch, so over epochs every rank sees every item.

    Build the epoch's dataset from it with a ``persist_dir`` shared by the ranks (one node, or a shared
    filesystem) so re-dealt items load from disk instead of being recomputed, and ``world_size=1`` so
    the dataset does not partition the shard again::

        for epoch in range(epochs):
            shard = fp.distributed.reshard(data, epoch)
            ds = fp.CacheDataset(shard, chain, persist_dir="/scratch/cache", rank=0, world_size=1)
            ...
            ds.close()
    """
    return partition(data, rank, world_size, epoch_seed(seed, epoch), even_divisible, shuffle=True)


def shard_inputs(
    inputs: list[T], rank: int | None, world_size: int | None, seed: int, even_divisible: bool
) -> tuple[list[T], dict[str, Any] | None]:
    """The hook datasets call on their input list: ``(shard, info)``, or ``(inputs, None)`` on one rank.

    ``info`` holds ``rank``, ``world_size``, ``indices`` (into ``inputs``), ``total`` and ``fingerprint``
    (of ``inputs``, for :func:`guarded_fill`'s check that every rank got the same list).
    """
    rank, world_size = dist_info(rank, world_size)
    if world_size == 1:
        return inputs, None
    idx = partition_indices(len(inputs), rank, world_size, seed, even_divisible)
    info = {"rank": rank, "world_size": world_size, "indices": idx, "total": len(inputs),
            "fingerprint": _rendezvous.list_fingerprint(inputs)}  # fmt: skip
    return [inputs[i] for i in idx], info


def check_device(device: torch.device) -> None:
    """Warn when a multi-rank cache lives on a CUDA device other than this rank's :func:`local_device`."""
    if device.type != "cuda" or _env.local_rank() is None or not _initialized():
        return
    want = local_device()
    index = device.index if device.index is not None else torch.cuda.current_device()
    if index != want.index:
        warnings.warn(
            f"rank {torch.distributed.get_rank()} caches on cuda:{index} but LOCAL_RANK gives {want}; "
            "use ToDeviced(..., device=fastpipe.distributed.local_device()) or torch.cuda.set_device",
            RuntimeWarning,
            stacklevel=3,
        )


def equal_batches(n_local: int, group: Any = None) -> int:
    """The smallest ``n_local`` over all ranks (all-reduce MIN); ``n_local`` itself on one rank.

    A loader that yields this many batches on every rank never leaves a collective waiting on a rank
    whose shard ran out one batch early. Collective: every rank must call it.
    """
    if not _initialized() or torch.distributed.get_world_size(group) == 1:
        return int(n_local)
    on_cuda = torch.distributed.get_backend(group) == "nccl"
    t = torch.tensor([int(n_local)], dtype=torch.int64, device=local_device() if on_cuda else "cpu")
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MIN, group=group)
    return int(t.item())


def fill_barrier(
    error: BaseException | None = None, timeout_s: float | None = None, what: str = "cache fill"
) -> None:
    """Exchange every rank's fill outcome through the process group's store; raise if another rank failed.

    Each rank writes ``ok`` or its error under a key of the rendezvous store, then waits at most
    ``timeout_s`` for the keys of all ranks (``store.wait`` with a timeout, so a rank that hung or died
    cannot block the others for longer). Collective: every rank calls it once per fill.

    Args:
        error: this rank's fill error, or ``None`` when its fill succeeded.
        timeout_s: seconds to wait for the other ranks after this one finished (default ``None``:
            the module's ``DEFAULT_FILL_TIMEOUT_S``, 600 s).
        what: names the step in messages (default ``"cache fill"``).

    Raises:
        FillBarrierError: on a rank whose own fill succeeded, when another rank reported an error
            (naming that rank and its error) or did not report within ``timeout_s`` (naming it). A
            failing rank returns so that its caller re-raises its own error.
    """
    if not _initialized() or torch.distributed.get_world_size() == 1:
        return
    timeout_s = DEFAULT_FILL_TIMEOUT_S if timeout_s is None else float(timeout_s)
    rank, world = dist_info()
    status = "ok" if error is None else f"{type(error).__name__}: {error}"
    try:
        outcome, abandoned = _rendezvous.exchange(status, rank, world, timeout_s)
    except RuntimeError as err:
        if error is not None:
            return
        raise FillBarrierError(
            f"rank {rank}: lost the rendezvous store during the {what} barrier ({err}); "
            "the rank or launcher hosting it (usually rank 0) probably died"
        ) from err
    if error is None:
        _rendezvous.raise_for(outcome, abandoned, world, rank, timeout_s, what)


def guarded_fill(
    fill: Callable[[], T], enabled: bool = True, timeout_s: float | None = None, agree: str | None = None
) -> T:
    """Run ``fill()`` then :func:`fill_barrier`: every rank raises if any rank's fill failed.

    The failing rank re-raises its own error; the others raise :class:`FillBarrierError` naming it.
    ``agree`` (a data list's ``shard["fingerprint"]``): first check that every rank was given the same
    list (``ValueError`` on every rank if not). With ``enabled=False`` (a dataset built on some ranks
    only) or on one process this is ``fill()``.
    """
    if not enabled:
        return fill()
    if agree is not None and _initialized() and torch.distributed.get_world_size() > 1:
        rank, world = dist_info()
        _rendezvous.agree(
            agree, rank, world, DEFAULT_FILL_TIMEOUT_S if timeout_s is None else float(timeout_s)
        )
    watch = _initialized() and torch.distributed.get_world_size() > 1  # stop early if another rank failed
    try:
        with _rendezvous.watching(*dist_info(), "cache fill") if watch else contextlib.nullcontext():
            result = fill()
    except Exception as err:
        fill_barrier(err, timeout_s)
        raise
    fill_barrier(None, timeout_s)
    return result


def loader_batches(dataset: Any, n_local: int, even_batches: bool | None = None) -> int:
    """How many of its ``n_local`` batches a loader yields this epoch (the hook ``ThreadDataLoader`` calls).

    ``even_batches=None`` (auto) equalises, via :func:`equal_batches`, only when ``dataset`` is a rank
    shard (its ``shard`` attribute is set, so every rank holds one and takes part in the all-reduce);
    ``True`` always equalises (collective), ``False`` never.
    """
    if even_batches is False or (even_batches is None and getattr(dataset, "shard", None) is None):
        return n_local
    return equal_batches(n_local)
