"""The peers of ``benchmarks.cached_epoch``: fastpipe, MONAI (best practice, without metadata, defaults)
and the plain-copy floor, each built (and its cache filled) in its own process by :func:`serve_peer`.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import torch

from benchmarks import workload
from benchmarks.workload import make_volumes

PATCH, NUM_SAMPLES = workload.PATCH, workload.NUM_SAMPLES
BATCH = 2
MONAI_PEERS = {  # name: (copy_cache, track_meta)
    "monai_best": (False, True),
    "monai_best_no_meta": (False, False),
    "monai_default": (True, True),
}


def fastpipe_peer(data: list[dict], workers: int) -> tuple[Any, float]:
    import fastpipe as fp
    from fastpipe import transforms as T

    ds = fp.CacheDataset(
        data, [*workload.volume_prefix(T), workload.fastpipe_crop()], num_workers=workers, progress=False
    )
    return fp.ThreadDataLoader(ds, batch_size=BATCH, shuffle=True), ds.fill_report.seconds


def monai_peer(data: list[dict], workers: int, copy_cache: bool) -> tuple[Any, float]:
    from monai import transforms as M
    from monai.data import CacheDataset, ThreadDataLoader

    chain = M.Compose(
        [
            # MONAI's LoadImaged gives float32 (MetaTensors while track_meta is on) and its chain keeps
            # labels float32 from there (fastpipe keeps the file's uint8): each library caches the label
            # as its own chain does.
            M.EnsureTyped("label", dtype=torch.float32),
            *workload.volume_prefix(M),
            M.RandCropByPosNegLabeld(workload.KEYS, **workload.CROP),
        ]
    )
    t0 = time.perf_counter()
    ds = CacheDataset(data, chain, num_workers=workers, copy_cache=copy_cache, progress=False)
    fill = time.perf_counter() - t0
    return ThreadDataLoader(ds, batch_size=BATCH, shuffle=True, num_workers=0), fill


class PlainCopy:
    """The floor: copy the same crop bytes (4 windows of image and label per volume) into new batches.

    ``reuse_buffers`` writes every batch into the same preallocated tensors instead (a consumer that
    keeps a batch would see it overwritten: a floor, not a loader), so the copy pays no first-touch
    page faults for fresh memory.
    """

    def __init__(self, data: list[dict], seed: int = 0, reuse_buffers: bool = False) -> None:
        from fastpipe import transforms as T

        prefix = workload.volume_prefix(T)
        self.items = [_apply(prefix, d) for d in data]
        self.g = torch.Generator().manual_seed(seed)
        self.reuse_buffers = reuse_buffers
        self._kept: dict[int, dict[str, torch.Tensor]] = {}

    def _out(self, vols: list[dict], n: int) -> dict[str, torch.Tensor]:
        if self.reuse_buffers and n in self._kept:
            return self._kept[n]
        out = {k: torch.empty((n, 1, *PATCH), dtype=vols[0][k].dtype) for k in ("image", "label")}
        if self.reuse_buffers:
            self._kept[n] = out
        return out

    def __iter__(self):
        order = torch.randperm(len(self.items), generator=self.g).tolist()
        for b in range(0, len(order), BATCH):
            vols = [self.items[i] for i in order[b : b + BATCH]]
            n = len(vols) * NUM_SAMPLES
            out = self._out(vols, n)
            for j in range(n):
                src = vols[j // NUM_SAMPLES]
                x, y, z = (
                    int(torch.randint(0, s - p + 1, (1,), generator=self.g))
                    for s, p in zip(src["image"].shape[1:], PATCH, strict=True)
                )
                for k in out:
                    out[k][j].copy_(src[k][:, x : x + PATCH[0], y : y + PATCH[1], z : z + PATCH[2]])
            yield out


def _apply(chain: list[Any], d: dict) -> dict:
    for t in chain:
        d = t(d)
    return d


def _epoch(loader: Any) -> tuple[float, float, int]:
    """Wall seconds, process CPU seconds (all threads) and crops of one epoch."""
    t0, c0 = time.perf_counter(), time.process_time()
    crops = 0
    for batch in loader:
        crops += int(batch["image"].shape[0])
    return time.perf_counter() - t0, time.process_time() - c0, crops


def _epoch_in_thread(loader: Any) -> tuple[float, float, int]:
    """:func:`_epoch` run in a background thread, where every loader peer makes its batches.

    torch's intra-op threading differs between the main thread and other threads (on a busy machine the
    main thread's OpenMP team can be several times slower), so the floor runs where the peers run.
    """
    result: list[tuple[float, float, int]] = []
    worker = threading.Thread(target=lambda: result.append(_epoch(loader)), name="plain-copy")
    worker.start()
    worker.join()
    return result[0]


def _set_track_meta(on: bool) -> None:
    from monai.data import set_track_meta

    set_track_meta(on)


class _Peer:
    """One peer's loader, built (and its cache filled) in the peer's own process."""

    def __init__(self, name: str, volumes: int, shape: tuple[int, int, int], workers: int) -> None:
        data = make_volumes(volumes, shape)  # same seed in every process: the same volumes
        self.name = name
        if name == "fastpipe":
            self.loader, fill = fastpipe_peer(data, workers)
        elif name in MONAI_PEERS:
            copy_cache, track_meta = MONAI_PEERS[name]
            _set_track_meta(track_meta)  # this process's setting, for the fill and every epoch
            self.loader, fill = monai_peer(data, workers, copy_cache=copy_cache)
        elif name == "plain_copy":
            self.loader, fill = PlainCopy(data), None
        else:
            raise ValueError(
                f"unknown peer {name!r}; expected fastpipe, plain_copy or one of {list(MONAI_PEERS)}"
            )
        self.ready_info = {"fill_s": fill}

    def epoch(self) -> tuple[float, float, int]:
        return (_epoch_in_thread if self.name == "plain_copy" else _epoch)(self.loader)

    def stats(self) -> dict[str, Any]:
        """fastpipe's loader and cache counters (empty for the other peers)."""
        if self.name != "fastpipe":
            return {}
        cache = self.loader.dataset.stats()
        return {
            "cache": {k: v for k, v in cache.items() if k in ("items", "bytes", "hits")},
            "loader": {k: v for k, v in self.loader.stats().items() if k != "stages"},
        }


def serve_peer(name: str, volumes: int, shape: tuple[int, int, int], workers: int) -> _Peer:
    """Build one peer (the factory :class:`benchmarks.peer_process.PeerProcess` calls in the child)."""
    return _Peer(name, volumes, tuple(shape), workers)


PEERS = ("fastpipe", *MONAI_PEERS, "plain_copy")
