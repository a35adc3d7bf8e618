"""run_copies: a batch's CPU copies shared with helper threads, each single-threaded in OpenMP, same bytes."""

from __future__ import annotations

import os
import threading
import time

import pytest
import torch

from fastpipe.ops.crop import crop_batch_torch
from fastpipe.runtime import _openmp
from fastpipe.runtime._copy_threads import MIN_SPLIT_BYTES, run_copies
from fastpipe.runtime._openmp import available

BIG = 4 * MIN_SPLIT_BYTES


@pytest.fixture
def two_threads(torch_threads):
    """torch at 2 intra-op threads (the split uses the caller's count), restored afterwards."""
    torch_threads(2)


def _off_main(fn):
    """``fn()`` in a new thread (a loader thread, say: the main thread never splits); its result or error."""
    out: list = []

    def run() -> None:
        try:
            out.append(("ok", fn()))
        except BaseException as err:  # noqa: BLE001 - handed back to the test
            out.append(("err", err))

    t = threading.Thread(target=run, name="test-loader")
    t.start()
    t.join(timeout=30)
    assert out, "the thread hung"
    kind, value = out[0]
    if kind == "err":
        raise value
    return value


def _recording_jobs(n: int, seen: list, delay: float = 0.0) -> list:
    def job(i: int) -> None:
        time.sleep(delay)
        seen.append((i, threading.current_thread().name, torch.get_num_threads()))

    return [lambda i=i: job(i) for i in range(n)]


def test_torchs_openmp_runtime_is_found_and_probed_where_it_is_loaded():
    # where torch's OpenMP runtime is in this process the split must be on: the loader's speed rests on it
    assert available() == (_openmp._find() is not None)


@pytest.mark.timeout(60)
def test_big_batches_are_split_and_every_chunk_runs_one_openmp_thread(two_threads):
    if not available():
        pytest.skip("no OpenMP runtime found in this process: copies run in the caller (tested below)")
    seen: list = []

    def call() -> int:
        run_copies(_recording_jobs(8, seen, delay=0.01), BIG)
        return torch.get_num_threads()

    assert _off_main(call) == 2  # the caller's setting comes back
    assert sorted(i for i, _, _ in seen) == list(range(8))  # every job once
    threads = {name for _, name, _ in seen}
    assert "test-loader" in threads
    assert any(name.startswith("fastpipe-copy") for name in threads)
    assert {n for _, _, n in seen} == {1}  # the caller's chunk too
    assert _off_main(torch.get_num_threads) == 2  # torch's global thread count is untouched


def test_small_batches_one_thread_and_the_main_thread_run_in_the_caller(two_threads):
    seen: list = []
    _off_main(lambda: run_copies(_recording_jobs(8, seen), MIN_SPLIT_BYTES - 1))
    assert {name for _, name, _ in seen} == {"test-loader"}
    seen.clear()
    run_copies(_recording_jobs(8, seen), BIG)  # on the main thread: its own warm team does the copies
    assert {name for _, name, _ in seen} == {threading.main_thread().name}
    assert {n for _, _, n in seen} == {2}
    torch.set_num_threads(1)
    seen.clear()
    _off_main(lambda: run_copies(_recording_jobs(8, seen), BIG))
    assert {name for _, name, _ in seen} == {"test-loader"}


@pytest.mark.timeout(60)
def test_an_error_stops_the_handing_out_and_is_raised_once_every_thread_has_stopped(two_threads):
    done: list = []

    def slow(i: int) -> None:
        time.sleep(0.05)
        done.append(i)

    def bad() -> None:
        raise ValueError("copy 0 failed")

    # the first job fails at once; at most the one job another thread took meanwhile still runs
    jobs = [bad, *(lambda i=i: slow(i) for i in range(1, 6))]
    with pytest.raises(ValueError, match="copy 0 failed"):
        _off_main(lambda: run_copies(jobs, BIG))
    at_raise = sorted(done)
    assert at_raise in ([], [1])  # no job was handed out after the error
    time.sleep(0.3)
    assert sorted(done) == at_raise  # nothing was still running when the error reached the caller


@pytest.mark.timeout(60)
def test_a_slow_copy_does_not_hold_up_the_others(two_threads):
    """Jobs go to whichever thread is free: one long copy first, the short ones all run beside it."""
    if not available():
        pytest.skip("no OpenMP runtime found in this process: copies run in the caller")
    ran: list = []

    def job(i: int, s: float) -> None:
        time.sleep(s)
        ran.append((i, threading.current_thread().name))

    jobs = [lambda: job(0, 0.3), *(lambda i=i: job(i, 0.01) for i in range(1, 9))]
    _off_main(lambda: run_copies(jobs, BIG))
    long_thread = next(name for i, name in ran if i == 0)
    # the other thread took every short one (fixed halves would give the long one's thread 2, 4, 6, 8)
    assert all(name != long_thread for i, name in ran if i != 0)
    assert sorted(i for i, _ in ran) == list(range(9))


def _crop_args(seed: int):
    g = torch.Generator().manual_seed(seed)
    vols = [torch.rand((1, 60, 50, 70), generator=g) for _ in range(3)]
    size = (32, 32, 32)
    n = 12
    starts = torch.stack(
        [
            torch.randint(0, s - e + 1, (n,), generator=g)
            for s, e in zip(vols[0].shape[1:], size, strict=True)
        ],
        1,
    )
    vol_index = torch.randint(0, 3, (n,), generator=g)
    flips = torch.rand((n, 3), generator=g) < 0.5
    scale, shift = 0.5 + torch.rand(n, generator=g), torch.rand(n, generator=g) - 0.5
    return vols, starts, vol_index, size, flips, scale, shift


def _expected(vols, starts, vol_index, size, flips, scale, shift):
    out = []
    for n in range(starts.shape[0]):
        x, y, z = starts[n].tolist()
        w = vols[int(vol_index[n])][:, x : x + size[0], y : y + size[1], z : z + size[2]]
        w = w.flip([d + 1 for d in range(3) if flips[n, d]])
        out.append(w * scale[n] + shift[n])
    return torch.stack(out)


@pytest.mark.timeout(120)
def test_crops_from_four_threads_at_once_are_the_exact_windows(two_threads):
    torch.ones(1 << 16).sum()  # the main thread has its own OpenMP team, as in a training script
    results: dict[int, tuple] = {}

    def work(seed: int) -> None:
        args = _crop_args(seed)
        for _ in range(5):
            got = crop_batch_torch(*args[:4], flips=args[4], scale=args[5], shift=args[6])
        results[seed] = (got, _expected(*args))

    threads = [threading.Thread(target=work, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(results) == 4
    for got, want in results.values():
        assert got.nbytes >= MIN_SPLIT_BYTES  # big enough to be split
        torch.testing.assert_close(got, want, rtol=0, atol=1e-6)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork (POSIX)")
@pytest.mark.timeout(120)
def test_a_forked_child_makes_its_own_helpers(two_threads):
    from tests.runtime.test_fork_locks import _run_in_fork

    args = _crop_args(7)
    want = _expected(*args)
    assert torch.allclose(crop_batch_torch(*args[:4], flips=args[4], scale=args[5], shift=args[6]), want)

    def crop() -> None:
        got = crop_batch_torch(*args[:4], flips=args[4], scale=args[5], shift=args[6])
        results.append(torch.allclose(got, want))
        helpers = [t for t in threading.enumerate() if t.name.startswith("fastpipe-copy")]
        results.append(bool(helpers) == available())  # split in the child too, by its own threads

    def work() -> None:  # the parent's helper threads do not exist in the child: it must make its own
        # In a thread: libgomp hangs a forked child's first parallel region on the thread whose team the
        # parent had (torch's DataLoader workers set one thread for that reason); a new thread has none.
        t = threading.Thread(target=crop)
        t.start()
        t.join(timeout=20)
        assert results == [True, True]

    results: list = []
    torch.ones(1 << 16).sum()  # the parent's main thread has an OpenMP team
    assert _run_in_fork(work) == 0, "the forked child hung or got wrong crops"


@pytest.mark.timeout(60)
def test_the_environment_caps_or_turns_off_the_split(two_threads, monkeypatch):
    seen: list = []
    monkeypatch.setenv("FASTPIPE_COPY_THREADS", "0")
    _off_main(lambda: run_copies(_recording_jobs(8, seen), BIG))
    assert {name for _, name, _ in seen} == {"test-loader"}
    monkeypatch.setenv("FASTPIPE_COPY_THREADS", "many")
    with pytest.raises(ValueError, match="FASTPIPE_COPY_THREADS must be a whole number.*'many'"):
        _off_main(lambda: run_copies(_recording_jobs(8, seen), BIG))
    if available():
        monkeypatch.setenv("FASTPIPE_COPY_THREADS", "2")
        seen.clear()
        _off_main(lambda: run_copies(_recording_jobs(8, seen, delay=0.01), BIG))
        assert len({name for _, name, _ in seen}) == 2


@pytest.mark.timeout(120)
def test_every_keys_crops_in_one_shared_run_equal_each_key_cut_alone(two_threads):
    """``crop_batches`` on the CPU plans every key first, then copies all their crops in one shared run:
    the same bytes as each key's own ``crop_batch_torch``, from a loader thread (split on) and the main thread."""
    from fastpipe.ops._backends import crop_batches

    vols, starts, vol_index, size, flips, scale, shift = _crop_args(7)
    labels = [(v > 0.5).to(torch.uint8) for v in vols]
    axes = torch.tensor([[0, 1, 2], [1, 0, 2], [2, 1, 0]] * (starts.shape[0] // 3))
    image = dict(volumes=vols, starts=starts, vol_index=vol_index, size=size, flips=flips, axes=axes,
                 scale=scale, shift=shift)  # fmt: skip
    label = dict(volumes=labels, starts=starts, vol_index=vol_index, size=size, flips=flips, axes=axes)
    want = {"image": crop_batch_torch(**image), "label": crop_batch_torch(**label)}
    # the label first: the run copies the bigger image crops first, but results keep the calls' order
    for order, got in (
        (("label", "image"), _off_main(lambda: crop_batches([label, image]))),
        (("image", "label"), crop_batches([image, label])),
    ):
        for key, g in zip(order, got, strict=True):
            assert torch.equal(g.view(torch.uint8), want[key].view(torch.uint8)), key
