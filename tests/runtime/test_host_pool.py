"""HostBufferPool: memory comes back only once nothing references it; crops held by the caller never change."""

from __future__ import annotations

import copy
import pickle
import threading

import pytest
import torch

from fastpipe.runtime._host_pool import HostBufferPool
from fastpipe.transforms import RandCropByPosNegLabeld

SHAPE = (4, 1, 8, 8, 8)


def test_the_pool_is_enabled_on_this_interpreter():
    # without it every CPU batch would be fresh memory; the loader's speed relies on reuse
    assert HostBufferPool().enabled


def test_memory_is_reused_only_after_the_tensor_and_its_views_are_gone():
    pool = HostBufferPool()
    a = pool.empty(SHAPE, torch.float32)
    ptr = a.data_ptr()
    view = a[1:3]
    del a
    assert pool.empty(SHAPE, torch.float32).data_ptr() != ptr  # a view still holds the memory
    exported = view.numpy()
    del view
    assert pool.empty(SHAPE, torch.float32).data_ptr() != ptr  # so does a numpy export of it
    del exported
    again = pool.empty(SHAPE, torch.float32)
    assert again.data_ptr() == ptr and pool.allocated == 2  # a, then one while the view lived (reused after)
    assert again.shape == SHAPE and again.dtype == torch.float32 and again.is_contiguous()


def test_kinds_are_shape_and_dtype():
    pool = HostBufferPool()
    ptr = pool.empty(SHAPE, torch.float32).data_ptr()  # dropped at once
    u8 = pool.empty(SHAPE, torch.uint8)
    other = pool.empty((2, 1, 8, 8, 8), torch.float32)
    assert u8.dtype == torch.uint8 and other.shape == (2, 1, 8, 8, 8)
    assert ptr not in (u8.data_ptr(), other.data_ptr())
    assert pool.empty(SHAPE, torch.float32).data_ptr() == ptr


def test_kept_buffers_are_bounded_per_kind_and_by_kinds():
    pool = HostBufferPool(max_per_shape=2, max_shapes=2)
    held = [pool.empty(SHAPE, torch.float32) for _ in range(5)]  # all alive: 5 allocations, 2 kept
    assert len({t.data_ptr() for t in held}) == 5
    assert pool.nbytes() == 2 * held[0].nbytes and pool.allocated == 5
    for n in (1, 2, 3):
        pool.empty((n, 8), torch.float32)
    assert pool.nbytes() == 2 * 8 * 4 + 3 * 8 * 4  # only the two most recent kinds are kept
    pool.clear()
    assert pool.nbytes() == 0
    held[0].fill_(7.0)
    assert bool((held[0] == 7.0).all())  # buffers in use outlive the pool's forgetting them
    with pytest.raises(ValueError, match="max_per_shape and max_shapes must be >= 1, got 0, 1"):
        HostBufferPool(max_per_shape=0, max_shapes=1)


def test_dtype_numpy_lacks_is_served_unpooled():
    pool = HostBufferPool()
    t = pool.empty(SHAPE, torch.bfloat16)
    assert t.dtype == torch.bfloat16 and t.shape == SHAPE and pool.nbytes() == 0


def test_threads_never_share_a_live_buffer():
    pool = HostBufferPool(max_per_shape=3)
    errors: list[str] = []

    def work(tag: int) -> None:
        for i in range(200):
            t = pool.empty((64,), torch.int64)
            t.fill_(tag * 1000 + i)
            if not bool((t == tag * 1000 + i).all()):
                errors.append(f"thread {tag} iteration {i}: buffer written by another thread")
            del t

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=30)
    assert not any(th.is_alive() for th in threads) and errors == []
    assert pool.reused > 0


def test_deepcopy_shares_the_pool_and_pickling_gives_a_new_one():
    pool = HostBufferPool(max_per_shape=3, max_shapes=5)
    assert copy.deepcopy(pool) is pool
    again = pickle.loads(pickle.dumps(pool))
    assert again is not pool and (again.max_per_shape, again.max_shapes) == (3, 5) and again.nbytes() == 0


def _items(n: int) -> list[dict]:
    out = []
    for i in range(n):
        g = torch.Generator().manual_seed(i)
        label = torch.zeros((1, 20, 22, 24), dtype=torch.uint8)
        label[0, 5:15, 6:16, 7:17] = 1
        out.append({"image": torch.randn((1, 20, 22, 24), generator=g), "label": label})
    return out


def test_batches_the_caller_holds_keep_their_values_and_dropped_ones_are_recycled():
    crop = RandCropByPosNegLabeld(["image", "label"], "label", 8, num_samples=4).set_random_state(0)
    items = _items(2)
    held = [crop.batch_call(items) for _ in range(4)]
    snapshots = [{k: b[k].clone() for k in ("image", "label")} for b in held]
    more = [crop.batch_call(items) for _ in range(4)]  # would overwrite ``held`` if it aliased them
    for b, snap in zip(held, snapshots, strict=True):
        for key in ("image", "label"):
            assert torch.equal(b[key], snap[key])
    ptrs = {b["image"].data_ptr() for b in held + more}
    assert len(ptrs) == 8
    old = held[0]["image"].data_ptr()
    del held, more, b
    assert crop.batch_call(items)["image"].data_ptr() in ptrs | {old}
    assert crop._out_pool.reused > 0
    # and each recycled batch is still exactly its windows
    b = crop.batch_call(items)
    for n in range(b["image"].shape[0]):
        x, y, z = b["crop_starts"][n].tolist()
        src = items[n // 4]
        assert torch.equal(b["image"][n], src["image"][:, x : x + 8, y : y + 8, z : z + 8])
        assert torch.equal(b["label"][n], src["label"][:, x : x + 8, y : y + 8, z : z + 8])


def test_per_item_patches_are_views_that_keep_their_memory():
    crop = RandCropByPosNegLabeld(["image", "label"], "label", 8, num_samples=2).set_random_state(1)
    items = _items(1)
    first = crop(items[0])
    kept = first[1]["image"].clone()
    for _ in range(5):
        crop(items[0])
    assert torch.equal(first[1]["image"], kept)
