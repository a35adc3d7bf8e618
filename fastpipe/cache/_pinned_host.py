"""Pinned host copies for the host tier of a GPU cache: one copy, contiguous, real bytes accounted.

``t.cpu().pin_memory()`` copies a CUDA tensor twice (to pageable memory, then to pinned memory), and
torch's pinned allocator (``CachingHostAllocator``) rounds every block up to a power of two and
keeps freed blocks cached. :func:`host_copy` allocates the pinned block once and copies into it,
:func:`pinned_nbytes` is what such a block really takes (so a host budget holds), and
:func:`release_cached` hands the cached blocks back to the driver when a cache closes.
"""

from __future__ import annotations

import torch


def host_copy(t: torch.Tensor, pin: bool) -> torch.Tensor:
    """A contiguous host copy of ``t`` in one copy, in page-locked memory when ``pin``.

    A CPU tensor that needs no pinning and is already contiguous is returned as is.

    Shape:
        same shape, dtype and type (a MONAI ``MetaTensor`` keeps its metadata) as ``t``.
    """
    if not pin and t.device.type == "cpu" and t.is_contiguous():
        return t
    out = torch.empty(t.shape, dtype=t.dtype, device="cpu", pin_memory=pin)
    return keep_tensor_type(t, out.copy_(t.as_subclass(torch.Tensor)))


def keep_tensor_type(src: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """``out`` (a plain tensor holding ``src``'s values) as ``src``'s type, with ``src``'s attributes:
    a MONAI ``MetaTensor`` copied into a new block keeps its affine, metadata and applied operations."""
    if type(src) is torch.Tensor:
        return out
    out = out.as_subclass(type(src))
    out.__dict__.update(src.__dict__)
    return out


def pinned_nbytes(nbytes: int) -> int:
    """Bytes a pinned block of ``nbytes`` really takes: the allocator's power-of-two round-up.

    Example:
        >>> pinned_nbytes(0), pinned_nbytes(3000), pinned_nbytes(4096)
        (0, 4096, 4096)
    """
    return 0 if nbytes <= 0 else 1 << (int(nbytes) - 1).bit_length()


def pinned_bytes_of(tensors: list[torch.Tensor]) -> int:
    """Pinned bytes a host copy of every tensor in ``tensors`` takes (each its own block)."""
    return sum(pinned_nbytes(t.numel() * t.element_size()) for t in tensors)


def release_cached() -> None:
    """Return the pinned blocks no tensor uses any more to the driver (no-op without CUDA).

    ``torch.accelerator.empty_host_cache`` where torch has it, else the CUDA build's
    ``torch._C._host_emptyCache`` (older torch), else nothing can be released."""
    empty = getattr(getattr(torch, "accelerator", None), "empty_host_cache", None)
    if empty is None:
        empty = getattr(torch._C, "_host_emptyCache", None)
    if empty is not None and torch.cuda.is_available():
        empty()
