"""The disk tier of a cache: uncompressed ``.npy`` files in a folder of its own, opened memory-mapped."""

from __future__ import annotations

import fcntl
import itertools
import logging
import math
import os
import re
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fastpipe._tensors import _same_kind, map_tensors, numpy_dtype
from fastpipe.cache._files import HOST
from fastpipe.cache._pinned_host import keep_tensor_type

log = logging.getLogger(__name__)
#: ``fastpipe-tier-{host}-{pid}-{random}``: the random part (``tempfile.mkdtemp``'s) holds no ``-``
_TIER = re.compile(r"^fastpipe-tier-(?P<host>[A-Za-z0-9-]+)-(?P<pid>\d+)-[A-Za-z0-9_]+$")


class DiskTier:
    """Uncompressed ``.npy`` files, one per tensor of an entry, opened memory-mapped (copy-on-write).

    A tensor comes back as the type it went in (a MONAI ``MetaTensor`` with its metadata) and dtype
    (``bfloat16``, which numpy lacks, is stored as its bytes).

    The files go to a new folder of this tier's own, ``fastpipe-tier-{host}-{pid}-*`` inside ``root``
    (the system's temporary folder when ``None``), removed on :meth:`close`. Two datasets given one
    ``disk_dir`` (a training and a validation set, or the ranks of one node) so never share a file name:
    slot numbers restart at 0 in each, and a shared name would rewrite another dataset's mapped entry in
    place. A tier holds a lock on its folder while it lives; the folders of this host whose lock nobody
    holds, left by killed processes (SIGKILL, the OOM killer), are removed when a tier opens in ``root``:
    a crashed run's copy of the data set does not fill the disk. The kernel releases the lock of a dead
    process, whatever PID namespace it ran in (containers sharing a host name and a ``disk_dir``).

    A worker process given a pickled copy (a ``DataLoader`` started by ``spawn``/``forkserver``) maps
    the same files read-only (:func:`pickle_slots`, :func:`open_slots`), as MONAI's
    ``PersistentDataset`` shares its ``cache_dir``: each file is checked against what was written, and
    only the tier that wrote the files deletes them.
    """

    def __init__(self, root: str | Path | None) -> None:
        if root is not None:
            # "~/scratch": the home folder's, not a folder named "~"; absolute: a later chdir (Hydra's, a
            # script's) must not send writes, removals and a worker's reads to another folder
            root = Path(root).expanduser().absolute()
            root.mkdir(parents=True, exist_ok=True)
        remove_dead_tiers(Path(root if root is not None else tempfile.gettempdir()))
        self.root, self._alive = _locked_folder(root)
        self._names = itertools.count()  # next() on a count is atomic under the GIL
        self._files: dict[int, Any] = {}  # slot -> its entry with a FileRef in place of each tensor
        self._pid = os.getpid()  # a forked child shares the object, not the folder: it removes nothing

    @property
    def owned(self) -> bool:
        """Whether this process made the tier (not a child forked from it): only it writes and removes."""
        return os.getpid() == self._pid

    def write(self, slot: int, entry: Any) -> Any:
        """Write the tensors of ``entry`` and return the entry with memory-mapped CPU tensors.

        Every file gets a fresh name, so a file still mapped by an old entry is never rewritten.
        """
        refs: list[FileRef] = []

        def spill(t: torch.Tensor) -> torch.Tensor:
            path = self.root / f"{slot}-{next(self._names)}.npy"
            data = t.detach().cpu().resolve_conj().resolve_neg().contiguous().as_subclass(torch.Tensor)
            raw = not _numpy_has(data.dtype)  # bfloat16: its bytes, viewed back as bfloat16
            np.save(path, (data.reshape(-1).view(torch.uint8) if raw else data).numpy())
            refs.append(FileRef(path, t, raw))
            return refs[-1].open(like=t)

        mapped = map_tensors(entry, spill)
        written = iter(refs)
        self._files[slot] = map_tensors(entry, lambda _: next(written))
        return mapped

    def files(self, slot: int) -> Any:
        """The entry of ``slot`` with a :class:`FileRef` in place of each tensor (``None`` if absent)."""
        return self._files.get(slot)

    def remove(self, slot: int) -> None:
        """Delete the files of ``slot``: those its entry was written to, or (a write that failed part way,
        so no entry) every ``{slot}-*.npy``; a listing of the folder per entry would make a SmartCache
        swap of R entries read the whole folder R times."""
        files = self._files.pop(slot, None)
        if not self.owned:  # the parent's files, which it still maps
            return
        paths = [r.path for r in _refs_in(files)] if files is not None else self.root.glob(f"{slot}-*.npy")
        for p in paths:
            Path(p).unlink(missing_ok=True)

    def close(self) -> None:
        """Remove this tier's folder and its files (in a forked child: nothing; they are the parent's)."""
        self._files.clear()
        if not self.owned:
            return
        shutil.rmtree(self.root, ignore_errors=True)
        if self._alive is not None:
            os.close(self._alive)  # releases the lock
            self._alive = None


class FileRef:
    """One tensor of a disk-tier entry: its file and what was written there (dtype, shape, type and
    attributes of a ``MetaTensor``, and the file's identity), to map it again in another process."""

    def __init__(self, path: Path, t: torch.Tensor, raw: bool) -> None:
        self.path, self.raw = str(path), raw
        self.dtype, self.shape = t.dtype, tuple(t.shape)
        self.kind = type(t)
        self.attrs = dict(t.__dict__) if self.kind is not torch.Tensor else {}
        self.identity = _identity(self.path)

    def open(self, like: torch.Tensor | None = None) -> torch.Tensor:
        """The file mapped copy-on-write (never written back), as the tensor written.

        Raises:
            OSError: the file is gone or cannot be read.
            ValueError: it is not the file written (replaced, truncated, another dtype or shape).
        """
        changed = ValueError(f"{self.path} is not the file the disk tier wrote (replaced or changed)")
        if _identity(self.path) != self.identity:  # checked first: an emptied file is an EOFError to numpy
            raise changed
        mapped = torch.from_numpy(np.load(self.path, mmap_mode="c", allow_pickle=False))
        nbytes = math.prod(self.shape) * self.dtype.itemsize
        stored = (torch.uint8, (nbytes,)) if self.raw else (self.dtype, self.shape)
        if _identity(self.path) != self.identity or (mapped.dtype, tuple(mapped.shape)) != stored:
            raise changed  # replaced while it was mapped
        if self.raw:
            mapped = mapped.view(self.dtype).reshape(self.shape)
        if like is not None:
            return keep_tensor_type(like, mapped)
        if self.kind is torch.Tensor:
            return mapped
        mapped = mapped.as_subclass(self.kind)
        mapped.__dict__.update(self.attrs)
        return mapped


def pickle_slots(
    slots: dict[int, tuple[str, Any, int]], used: dict[str, int], disk: DiskTier | None
) -> tuple[dict[int, tuple[str, Any, int]], dict[str, int]]:
    """A tier store's ``(slots, used bytes)`` as they travel to another process: each disk-tier entry as
    its files (:class:`FileRef`), not its mapped tensors (pickling would copy those into shared memory).
    A disk slot whose files this process did not write (a copy's) is left out: computed per read."""
    kept = {}
    for slot, (tier, entry, nb) in slots.items():
        if tier == "disk":
            entry = None if disk is None else disk.files(slot)
        if entry is not None or tier != "disk":
            kept[slot] = (tier, entry, nb)
    return kept, {**used, "disk": sum(nb for tier, _, nb in kept.values() if tier == "disk")}


def open_slots(
    slots: dict[int, tuple[str, Any, int]], used: dict[str, int]
) -> tuple[dict[int, tuple[str, Any, int]], dict[str, int]]:
    """:func:`pickle_slots`'s answer back in a worker: each disk entry's files mapped (:meth:`FileRef.open`);
    a slot whose file is gone or changed is left out (computed per read; warned once)."""
    opened, lost, why = {}, 0, None
    for slot, (tier, entry, nb) in slots.items():
        try:
            opened[slot] = (tier, _open_files(entry) if tier == "disk" else entry, nb)
        except (OSError, ValueError) as err:
            lost, why = lost + nb, why or err
    if why is not None:
        warnings.warn(
            f"disk-tier entries written by the parent process cannot be read ({why}); "
            f"their items ({lost} bytes) are computed on every read in this process",
            RuntimeWarning,
            stacklevel=3,
        )
    return opened, {**used, "disk": used["disk"] - lost}


def _refs_in(obj: Any) -> list[FileRef]:
    if isinstance(obj, FileRef):
        return [obj]
    if isinstance(obj, dict):
        return [r for v in obj.values() for r in _refs_in(v)]
    if isinstance(obj, (list, tuple)):
        return [r for v in obj for r in _refs_in(v)]
    return []


def _open_files(obj: Any) -> Any:
    if isinstance(obj, FileRef):
        return obj.open()
    if isinstance(obj, dict):
        return {k: _open_files(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return _same_kind(obj, [_open_files(v) for v in obj])
    return obj


def _identity(path: str) -> tuple[int, int, int, int]:
    st = os.stat(path)
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


def remove_dead_tiers(root: Path) -> list[Path]:
    """Remove the tier folders in ``root`` of this host whose lock no live process holds; returns them."""
    try:
        names = [e.name for e in os.scandir(root) if e.is_dir(follow_symlinks=False)]
    except OSError as err:
        log.debug("cannot list %s for the folders of killed disk tiers: %s", root, err)
        return []
    removed = []
    for name in names:
        match = _TIER.match(name)
        if match and match["host"] == HOST and _abandoned(root / name):
            shutil.rmtree(root / name, ignore_errors=True)
            removed.append(root / name)
    if removed:
        log.info("removed %d disk-tier folder(s) of killed processes from %s", len(removed), root)
    return removed


def _locked_folder(root: Path | None) -> tuple[Path, int | None]:
    """A new tier folder, named ``fastpipe-tier-{host}-{pid}-*`` only once this process holds an
    exclusive ``flock`` on it (so none of that name is ever seen unlocked while its tier lives), and the
    descriptor holding the lock (``None`` where the filesystem takes no lock on a folder: never removed)."""
    made = Path(tempfile.mkdtemp(prefix=".fastpipe-tier-new-", dir=root))
    fd: int | None = os.open(made, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a new folder: nobody else holds it
    except OSError:
        os.close(fd)
        fd = None
    folder = made.with_name(f"fastpipe-tier-{HOST}-{os.getpid()}-{made.name.rsplit('-', 1)[1]}")
    try:
        os.rename(made, folder)
    except OSError:
        shutil.rmtree(made, ignore_errors=True)
        if fd is not None:
            os.close(fd)
        raise
    return folder, fd


def _abandoned(folder: Path) -> bool:
    """Whether no process holds the lock of tier ``folder``: the process that made it is gone."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:  # held: its tier is alive
        return False
    finally:
        os.close(fd)  # releases the lock taken just now
    return True


def _numpy_has(dtype: torch.dtype) -> bool:
    try:
        numpy_dtype(dtype)
    except TypeError:
        return False
    return True
