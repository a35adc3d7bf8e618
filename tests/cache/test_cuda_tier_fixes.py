"""GPU-cache fixes checked on the CPU with stand-ins: default CUDA budget, the prefetch race, pinned accounting."""

from __future__ import annotations

import contextlib

import pytest
import torch

from fastpipe.cache import _tiers as _cache_tiers
from fastpipe.cache._cuda_budget import DEFAULT_CUDA_SHARE, default_cuda_budget
from fastpipe.cache._pinned_host import host_copy, pinned_bytes_of, pinned_nbytes
from fastpipe.cache._tiers import TierStore

GiB = 2**30


@pytest.fixture
def fake_gpu(monkeypatch):
    """torch.cuda as a GPU with 8 GiB free of 80 GiB, streams and events that do nothing."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (8 * GiB, 80 * GiB))

    class Stream:
        def __init__(self, *args, **kwargs):
            pass

        def wait_stream(self, other):
            pass

        def wait_event(self, event):
            pass

    monkeypatch.setattr(torch.cuda, "Stream", Stream)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: Stream())
    monkeypatch.setattr(torch.cuda, "stream", lambda s: contextlib.nullcontext())
    return monkeypatch


def test_default_cuda_budget_is_a_share_of_free_memory(fake_gpu):
    store = TierStore(torch.device("cuda"), {})
    assert store.budgets["cuda"] == int(8 * GiB * DEFAULT_CUDA_SHARE)
    stats = store.stats()
    assert stats["budgets"]["cuda"] == int(8 * GiB * DEFAULT_CUDA_SHARE)
    assert "50% of the 8.0 GiB free of 80.0 GiB" in stats["budget_rules"]["cuda"]


def test_explicit_cuda_budget_wins_and_none_means_unlimited(fake_gpu):
    assert TierStore(torch.device("cuda"), {"cuda": 123}).budgets["cuda"] == 123
    store = TierStore(torch.device("cuda"), {"cuda": None})
    assert store.budgets["cuda"] is None and store.budget_rules["cuda"] == "given"


def test_default_cuda_budget_without_gpu_is_unlimited():
    if torch.cuda.is_available():
        pytest.skip("checks the CPU-only answer")
    assert default_cuda_budget(torch.device("cuda"))[0] is None
    with pytest.raises(ValueError, match="share"):
        default_cuda_budget(torch.device("cuda"), share=1.5)


def test_prefetch_of_a_replaced_entry_is_never_returned(fake_gpu):
    """SmartCache drops and re-puts a slot between the prefetch's read and its store: get() must see the new entry."""
    store = TierStore(torch.device("cuda"), {"cuda": 0})
    store.cuda_full = True  # every entry goes to the host tier
    store.put(0, {"v": "old"})
    races = []

    class Event:
        def record(self, stream=None):  # runs after the prefetch read the entry, before it stores its copy
            if not races:
                races.append(1)
                store.drop(0)
                store.put(0, {"v": "new"})

    fake_gpu.setattr(torch.cuda, "Event", Event)
    store.prefetch([0])
    assert races == [1]
    assert store.get(0) == {"v": "new"}


def test_prefetched_copy_is_used_when_the_entry_is_unchanged(fake_gpu):
    store = TierStore(torch.device("cuda"), {"cuda": 0})
    store.cuda_full = True
    store.put(0, {"v": "same"})
    fake_gpu.setattr(torch.cuda, "Event", type("Event", (), {"record": lambda self, s=None: None}))
    store.prefetch([0])
    entry = store._slots[0][1]
    moved = store._inflight[0][1]
    assert moved is not entry and store.get(0) is moved and 0 not in store._inflight


def test_pinned_host_tier_accounts_the_allocator_round_up(fake_gpu):
    fake_gpu.setattr(_cache_tiers, "host_copy", lambda t, pin: t.clone())  # stand-in for the pinned block
    fake_gpu.setattr(_cache_tiers, "release_cached", lambda: None)
    store = TierStore(torch.device("cuda"), {"cuda": 0, "host": 8000})
    store.cuda_full = True
    item = {"image": torch.zeros(750)}  # 3000 bytes -> a 4096-byte pinned block
    assert store.put(0, item) == "host"
    assert store.stats()["bytes"]["host"] == 4096
    assert store.put(1, {"image": torch.zeros(750)}) == "disk"  # 2 x 4096 > 8000
    store.close()


def test_host_copy_is_one_contiguous_copy():
    t = torch.arange(24.0).reshape(2, 3, 4).permute(2, 0, 1)
    out = host_copy(t, pin=False)
    assert out.is_contiguous() and torch.equal(out, t) and out.data_ptr() != t.data_ptr()
    c = torch.zeros(5)
    assert host_copy(c, pin=False) is c
    assert [pinned_nbytes(n) for n in (1, 4096, 4097)] == [1, 4096, 8192]
    assert pinned_bytes_of([torch.zeros(750), torch.zeros(3, dtype=torch.uint8)]) == 4096 + 4


@pytest.mark.gpu
def test_cuda_tier_stores_strided_volumes_contiguous(cuda_device):
    store = TierStore(cuda_device, {})
    strided = torch.zeros(1, 8, 9, 10).permute(0, 3, 2, 1)
    assert store.put(0, {"image": strided}) == "cuda"
    assert store.get(0)["image"].is_contiguous()
    assert store.stats()["budgets"]["cuda"] > 0
    store.close()


@pytest.mark.gpu
@pytest.mark.timeout(60)
def test_a_late_prefetch_is_ready_on_the_readers_stream(cuda_device):
    """A prefetched copy still queued on the side stream when read: only get's wait orders the read after
    it (without it the read sees the freed memory of the copy before, zeros)."""
    store = TierStore(cuda_device, {"cuda": 0})  # no device room: both entries on the pinned host tier
    assert store.put(0, {"image": torch.full((1 << 20,), 3.0)}) == "host"
    assert store.put(1, {"image": torch.zeros(1 << 20)}) == "host"
    store.prefetch([1])
    store.get(1)  # made the side stream; this copy is freed there
    torch.cuda.synchronize()
    with torch.cuda.stream(store._stream):
        torch.cuda._sleep(int(1e9))  # the side stream busy: the next prefetch lands late
    store.prefetch([0])
    got = store.get(0)["image"].clone()  # queued on the reader's stream
    assert not store._stream.query()  # the copy was still pending when the read was queued
    assert got.eq(3.0).all().item()
    store.close()


@pytest.mark.parametrize("accelerator_hook", [True, False])
def test_closing_releases_the_cached_pinned_blocks_on_any_torch(fake_gpu, accelerator_hook):
    """torch without ``torch.accelerator.empty_host_cache`` (older than the one it was written on) still
    hands the pinned blocks back through the CUDA build's ``torch._C._host_emptyCache``."""
    from fastpipe.cache import _pinned_host

    calls = []
    if accelerator_hook:
        fake_gpu.setattr(
            torch.accelerator, "empty_host_cache", lambda: calls.append("accelerator"), raising=False
        )
    else:
        fake_gpu.delattr(torch.accelerator, "empty_host_cache", raising=False)
    fake_gpu.setattr(torch._C, "_host_emptyCache", lambda: calls.append("_C"), raising=False)
    _pinned_host.release_cached()
    assert calls == ["accelerator" if accelerator_hook else "_C"]


@pytest.mark.parametrize(
    "failure",
    [
        torch.AcceleratorError("CUDA error: out of memory\nCompile with TORCH_USE_CUDA_DSA"),  # cudaHostAlloc
        torch.OutOfMemoryError("pinned allocation failed (simulated)"),
    ],
)
def test_a_failed_pinned_allocation_spills_to_disk_with_one_warning(fake_gpu, failure):
    """torch raises AcceleratorError, not torch.cuda.OutOfMemoryError, when cudaHostAlloc fails: the fill
    went on aborting; now the entry spills to the next tier, the reserved bytes come back, one warning."""

    def no_pinned_memory(t, pin):
        raise failure

    fake_gpu.setattr(_cache_tiers, "host_copy", no_pinned_memory)
    fake_gpu.setattr(_cache_tiers, "release_cached", lambda: None)
    store = TierStore(torch.device("cuda"), {"cuda": 0, "host": 10**6, "disk": 10**6})
    with pytest.warns(RuntimeWarning, match="pinned host memory allocation of 4096 bytes failed") as rec:
        tiers = [store.put(s, {"image": torch.zeros(750)}) for s in range(3)]
    assert tiers == ["disk"] * 3 and len(rec) == 1
    s = store.stats()
    assert s["bytes"] == {"cuda": 0, "host": 0, "disk": 9000} and s["pin_failures"] == 1
    assert not store.cuda_full and s["oom_fallbacks"] == 0
    store.close()


def test_an_unrelated_error_while_placing_is_raised_and_frees_its_reservation(fake_gpu):
    def broken(t, pin):
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    fake_gpu.setattr(_cache_tiers, "host_copy", broken)
    fake_gpu.setattr(_cache_tiers, "release_cached", lambda: None)
    store = TierStore(torch.device("cuda"), {"cuda": 0, "host": 10**6, "disk": 10**6})
    with pytest.raises(RuntimeError, match="illegal memory access"):
        store.put(0, {"image": torch.zeros(750)})
    assert store.stats()["bytes"]["host"] == 0 and store.stats()["pin_failures"] == 0
    store.close()


def test_bare_cuda_is_resolved_in_the_constructing_thread(fake_gpu):
    """``"cuda"`` resolved later in a fill thread (which starts on cuda:0) cached rank 1's items on cuda:0."""
    fake_gpu.setattr(torch.cuda, "device_count", lambda: 2)
    fake_gpu.setattr(torch.cuda, "current_device", lambda: 1)  # torch.cuda.set_device(1) in this thread
    assert TierStore(torch.device("cuda"), {"cuda": None}).device == torch.device("cuda", 1)
    assert TierStore(torch.device("cuda", 0), {"cuda": None}).device == torch.device("cuda", 0)
