"""The disk tier of a cache: uncompressed ``.npy`` files in a folder of its own, opened memory-mapped."""

from __future__ import annotations

import itertools
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fastpipe._tensors import map_tensors, numpy_dtype
from fastpipe.cache._pinned_host import keep_tensor_type


class DiskTier:
    """Uncompressed ``.npy`` files, one per tensor of an entry, opened memory-mapped (copy-on-write).

    A tensor comes back as the type it went in (a MONAI ``MetaTensor`` with its metadata) and dtype
    (``bfloat16``, which numpy lacks, is stored as its bytes).

    The files go to a new folder of this tier's own, ``fastpipe-tier-*`` inside ``root`` (the system's
    temporary folder when ``None``), removed on :meth:`close`. Two datasets given one ``disk_dir`` (a
    training and a validation set, or the ranks of one node) so never share a file name: slot numbers
    restart at 0 in each, and a shared name would rewrite another dataset's mapped entry in place.
    """

    def __init__(self, root: str | Path | None) -> None:
        if root is not None:
            root = Path(root).expanduser()  # "~/scratch": the home folder's, not a folder named "~"
            root.mkdir(parents=True, exist_ok=True)
        self.root = Path(tempfile.mkdtemp(prefix="fastpipe-tier-", dir=root))
        self._names = itertools.count()  # next() on a count is atomic under the GIL

    def write(self, slot: int, entry: Any) -> Any:
        """Write the tensors of ``entry`` and return the entry with memory-mapped CPU tensors.

        Every file gets a fresh name, so a file still mapped by an old entry is never rewritten.
        """

        def spill(t: torch.Tensor) -> torch.Tensor:
            path = self.root / f"{slot}-{next(self._names)}.npy"
            data = t.detach().cpu().contiguous().as_subclass(torch.Tensor)
            raw = not _numpy_has(data.dtype)  # bfloat16: its bytes, viewed back as bfloat16
            np.save(path, (data.reshape(-1).view(torch.uint8) if raw else data).numpy())
            mapped = torch.from_numpy(np.load(path, mmap_mode="c"))
            if raw:
                mapped = mapped.view(t.dtype).reshape(t.shape)
            return keep_tensor_type(t, mapped)

        return map_tensors(entry, spill)

    def remove(self, slot: int) -> None:
        """Delete the files of ``slot``."""
        for p in self.root.glob(f"{slot}-*.npy"):
            p.unlink(missing_ok=True)

    def close(self) -> None:
        """Remove this tier's folder and its files."""
        shutil.rmtree(self.root, ignore_errors=True)


def _numpy_has(dtype: torch.dtype) -> bool:
    try:
        numpy_dtype(dtype)
    except TypeError:
        return False
    return True
