"""ThreadDataLoader(device=cuda)'s copy path, checked on the CPU with a stand-in ``torch.cuda`` (and on a GPU for real)."""

from __future__ import annotations

import functools
import threading

import pytest
import torch

import fastpipe.loader.thread_loader as thread_loader_mod
from fastpipe.loader._pinned_ring import DeviceCopier
from fastpipe.loader.thread_loader import ThreadDataLoader


class FakeStream:
    def __init__(self, fake, name):
        self.fake, self.name = fake, name

    def wait_stream(self, other):
        self.fake.log.append(("wait_stream", self.name, other.name))

    def wait_event(self, event):
        self.fake.log.append(("wait_event", self.name, event.n))


class FakeCuda:
    """Records what the copier asks of streams and events; copies run at once."""

    def __init__(self) -> None:
        self.log: list[tuple] = []
        self.side = FakeStream(self, "side")
        self.consumer = FakeStream(self, "consumer")
        self.made = 0

    def Stream(self, device):  # noqa: N802 - mirrors torch.cuda.Stream
        self.made += 1
        return self.side

    def current_stream(self, device=None):
        return self.consumer

    def stream(self, s):
        fake = self

        class _Ctx:
            def __enter__(self):
                fake.log.append(("enter", s.name))

            def __exit__(self, *exc):
                fake.log.append(("exit", s.name))

        return _Ctx()

    def Event(self):  # noqa: N802 - mirrors torch.cuda.Event
        fake = self

        class _Event:
            n = sum(1 for e in fake.log if e[0] == "record")

            def record(self, stream):
                fake.log.append(("record", stream.name, self.n))

            def synchronize(self):
                fake.log.append(("synchronize", self.n))

        return _Event()


def _copier(fake, slots=2):
    return DeviceCopier(torch.device("cuda"), slots, cuda=fake, pin=False, h2d=lambda t: t.clone())


def test_copy_stages_into_reused_ring_buffers_and_records_an_event():
    fake = FakeCuda()
    copier = _copier(fake, slots=2)
    staged_ptrs = []
    for i in range(4):
        batch = {"image": torch.full((2, 3), float(i)), "name": ["a", "b"], "label": torch.arange(4) + i}
        out, ready = copier.copy(batch)
        assert torch.equal(out["image"], batch["image"]) and torch.equal(out["label"], batch["label"])
        assert out["image"].data_ptr() != batch["image"].data_ptr() and out["name"] == ["a", "b"]
        staged_ptrs.append(copier.slots[i % 2].buffers[0].data_ptr())
        assert ready.n == i
    assert fake.made == 1  # one side stream for the loader's life
    assert staged_ptrs[0] == staged_ptrs[2] and staged_ptrs[1] == staged_ptrs[3]  # no new staging memory
    syncs = [e for e in fake.log if e[0] == "synchronize"]
    assert syncs == [("synchronize", 0), ("synchronize", 1)]  # slot reuse waits for its previous copy
    assert not any(e[0] == "wait_stream" for e in fake.log)  # host batches never queue behind the step
    record = fake.log.index(("record", "side", 0))
    assert fake.log[record - 1] == ("enter", "side") or fake.log.index(("enter", "side")) < record
    assert copier.copied_bytes == 4 * (6 * 4 + 4 * 8)


def test_device_tensors_pass_through_after_the_producer_stream():
    fake = FakeCuda()
    copier = _copier(fake)
    on_device = torch.empty(3, device="meta")  # stands for a tensor the producer's kernels made on the GPU
    out, _ = copier.copy({"image": on_device, "meta": torch.zeros(2)})
    assert out["image"] is on_device and out["meta"].device.type == "cpu"
    assert fake.log.index(("wait_stream", "side", "consumer")) < fake.log.index(("record", "side", 0))
    assert copier.copied_bytes == 8


def test_bigger_batch_grows_the_slot_buffer():
    copier = _copier(FakeCuda(), slots=1)
    copier.copy({"x": torch.zeros(4)})
    out, _ = copier.copy({"x": torch.ones(10)})
    assert torch.equal(out["x"], torch.ones(10)) and copier.slots[0].buffers[0].numel() == 10
    out, _ = copier.copy({"x": torch.arange(3, dtype=torch.int16)})
    assert out["x"].dtype == torch.int16 and out["x"].tolist() == [0, 1, 2]


def test_hand_over_makes_the_consumer_stream_wait_on_the_event():
    fake = FakeCuda()
    copier = _copier(fake)
    out, ready = copier.copy({"x": torch.zeros(3)})
    copier.hand_over(out, ready)
    assert fake.log[-1] == ("wait_event", "consumer", ready.n)


def test_bad_slot_count():
    with pytest.raises(ValueError, match="slots"):
        DeviceCopier(torch.device("cuda"), 0)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("num_workers", [0, 2])
def test_loader_to_cuda_uses_the_ring_and_hands_over_every_batch(monkeypatch, num_workers):
    fake = FakeCuda()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    stand_in = functools.partial(DeviceCopier, cuda=fake, pin=False, h2d=lambda t: t.clone())
    monkeypatch.setattr(thread_loader_mod, "DeviceCopier", stand_in)
    data = [{"x": torch.full((2,), float(i))} for i in range(6)]
    loader = ThreadDataLoader(data, batch_size=2, device="cuda", num_workers=num_workers)
    got = [b["x"].clone() for b in loader]
    assert [g.tolist() for g in got] == [[[0, 0], [1, 1]], [[2, 2], [3, 3]], [[4, 4], [5, 5]]]
    waits = [e for e in fake.log if e[0] == "wait_event"]
    assert [w[2] for w in waits] == [0, 1, 2]  # each batch ordered on the consumer's stream, in order
    assert len(loader._copier.slots) == loader.buffer_size + num_workers + 2
    assert all("ready" not in t for t in loader.timings)
    loader.close()


@pytest.mark.gpu
@pytest.mark.timeout(60)
def test_loader_cuda_copy_is_pinned_and_equal(cuda_device):
    data = [{"x": torch.randn(3, 5), "y": torch.arange(4, dtype=torch.int16)} for _ in range(8)]
    loader = ThreadDataLoader(data, batch_size=2, device=cuda_device, buffer_size=2)
    out = [(b["x"].cpu(), b["y"].cpu()) for b in loader]
    expect = [
        (torch.stack([d["x"] for d in data[i : i + 2]]), torch.stack([d["y"] for d in data[i : i + 2]]))
        for i in range(0, 8, 2)
    ]
    assert all(torch.equal(a, c) and torch.equal(b, d) for (a, b), (c, d) in zip(out, expect, strict=True))
    assert all(buf.is_pinned() for slot in loader._copier.slots for buf in slot.buffers.values())
    side = torch.cuda.Stream(cuda_device)
    with torch.cuda.stream(side):  # the stream contract: ready on the stream current at next()
        again = [(b["x"].clone(), b["y"].clone()) for b in loader]  # copied on the side stream
        side.synchronize()
    assert all(a.is_cuda and torch.equal(a.cpu(), c) and torch.equal(b.cpu(), d)
               for (a, b), (c, d) in zip(again, expect, strict=True))  # fmt: skip
    loader.close()


@pytest.mark.gpu
@pytest.mark.timeout(60)
def test_copy_overlaps_a_step_on_the_consumer_stream(cuda_device):
    copier = DeviceCopier(cuda_device)
    for _ in copier.slots:  # warm-up of every slot: side stream, allocator, and the pinned buffers, since
        copier.copy({"x": torch.ones(1 << 20)})  # a page-locked allocation may serialise the two streams
    torch.cuda.synchronize()
    torch.cuda._sleep(int(2e9))  # a training step of about a second on the consumer's stream
    out, ready = copier.copy({"x": torch.ones(1 << 20)})
    ready.synchronize()  # the copy finished ...
    assert not torch.cuda.current_stream(cuda_device).query()  # ... while the step still runs
    copier.hand_over(out, ready)
    assert out["x"].sum().item() == 1 << 20


@pytest.mark.gpu
@pytest.mark.timeout(60)
def test_a_late_copy_is_ready_on_the_consumer_stream_after_hand_over(cuda_device):
    """The consumer reads a batch whose copy is still queued: only hand_over's wait orders the read after
    it (without it the read sees the freed memory of the batch before, zeros)."""
    copier = DeviceCopier(cuda_device, slots=2)
    copier.copy({"x": torch.zeros(1 << 20)})  # makes the side stream; its output is freed there
    torch.cuda.synchronize()
    with torch.cuda.stream(copier._stream):
        torch.cuda._sleep(int(1e9))  # the side stream busy: the next copy lands late
    out, ready = copier.copy({"x": torch.full((1 << 20,), 7.0)})
    copier.hand_over(out, ready)
    got = out["x"].clone()  # queued on the consumer's stream
    assert not ready.query()  # the copy was still pending when the read was queued
    assert got.eq(7.0).all().item()


class _OnGpu(torch.Tensor):
    """A stand-in for a tensor on ``cuda:<index>`` (no GPU here): records where it is moved."""

    moves: list = []

    @property
    def device(self):
        return torch.device("cuda", self.index)

    def to(self, *args, **kwargs):
        _OnGpu.moves.append((args, kwargs))
        return torch.Tensor.clone(self).as_subclass(torch.Tensor)


def _on_gpu(index):
    t = torch.ones(2).as_subclass(_OnGpu)
    t.index = index
    return t


def test_a_batch_on_another_gpu_is_copied_to_the_loaders_device():
    """``ThreadDataLoader(device="cuda:1")`` over a dataset cached on cuda:0 hands batches on cuda:1."""
    fake, _OnGpu.moves = FakeCuda(), []
    copier = DeviceCopier(torch.device("cuda", 1), 2, cuda=fake, pin=False, h2d=lambda t: t.clone())
    out, _ = copier.copy({"far": _on_gpu(0), "here": _on_gpu(1)})
    assert _OnGpu.moves == [((torch.device("cuda", 1),), {"non_blocking": True})]  # only the far one
    assert type(out["far"]) is torch.Tensor and type(out["here"]) is _OnGpu  # the near one passed through
    assert ("wait_stream", "side", "consumer") in fake.log  # after the kernels that made them


@pytest.mark.timeout(30)
def test_bare_cuda_is_the_constructing_threads_device_not_the_producers(monkeypatch):
    """A rank that ran ``torch.cuda.set_device(1)`` and asked for ``device="cuda"`` got its batches on
    cuda:0: the producer thread, like every new thread, starts on device 0 and resolved "cuda" there."""
    local = threading.local()
    local.index = 1  # this (main) thread chose cuda:1; other threads start on cuda:0, as CUDA's do
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: getattr(local, "index", 0))
    fake, made_on = FakeCuda(), []
    side = fake.Stream
    fake.Stream = lambda device: made_on.append(torch.device(device)) or side(device)
    stand_in = functools.partial(DeviceCopier, cuda=fake, pin=False, h2d=lambda t: t.clone())
    monkeypatch.setattr(thread_loader_mod, "DeviceCopier", stand_in)
    loader = ThreadDataLoader([{"x": torch.zeros(2)}] * 4, batch_size=2, device="cuda")
    assert len(list(loader)) == 2
    loader.close()
    assert loader._copier.device == torch.device("cuda", 1)
    assert made_on == [torch.device("cuda", 1)]  # the side stream on the rank's GPU, made in the producer
