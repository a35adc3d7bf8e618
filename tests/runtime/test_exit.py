"""The interpreter exits cleanly while fastpipe's threads are inside a torch op (fastpipe.runtime._exit)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# each item runs torch ops for a fixed time, longer than SmartCache's 1 s join of its workers
HEAVY = """
import time, torch, warnings
warnings.simplefilter("ignore")
import fastpipe

def heavy(d):
    x, t0 = torch.rand(32, 32, 32), time.monotonic()
    while time.monotonic() - t0 < {seconds}:
        x = torch.nn.functional.avg_pool3d(x[None], 3, 1, 1)[0]
    return {{**d, "x": x.sum()}}

heavy.random = False
"""

SCRIPTS = {
    "loader": """
class Heavy(torch.utils.data.Dataset):
    def __len__(self):
        return 16
    def __getitem__(self, i):
        return heavy({"i": i})

it = iter(fastpipe.ThreadDataLoader(Heavy(), batch_size=1, buffer_size=4))
next(it)  # the producer goes on making the next batches while the script ends
""",
    "smartcache": """
ds = fastpipe.SmartCacheDataset([{"i": i} for i in range(8)], [heavy], cache_num=2, replace_rate=1.0,
                                num_init_workers=1, num_replace_workers=2, progress=False)
ds.start()
time.sleep(0.5)  # both workers are inside an item when the script ends
""",
}


@pytest.mark.timeout(180)
@pytest.mark.parametrize("what,seconds", [("loader", 0.5), ("smartcache", 2.0)])
def test_exit_while_a_thread_is_inside_a_torch_op_is_clean(what, seconds):
    """A daemon thread still in a torch op when Python 3.11 finalizes is unwound out of C++ code: the
    process aborted ('terminate called without an active exception', exit status 134) after the
    script had finished (a loader iterator left mid-epoch: every run; a SmartCache replacement longer
    than shutdown's 1 s join: every run). The exit hook now stops and joins those threads first."""
    code = textwrap.dedent(HEAVY.format(seconds=seconds)) + textwrap.dedent(SCRIPTS[what]) + "print('done')\n"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=150, cwd=ROOT)
    assert r.returncode == 0 and r.stdout.strip() == "done", (r.returncode, r.stderr[-2000:])
    assert "terminate called" not in r.stderr


@pytest.mark.timeout(120)
@pytest.mark.parametrize("num_workers", [0, 2])
def test_exit_does_not_wait_for_a_read_a_loader_timeout_abandoned(num_workers):
    """A read found hung by ``timeout=`` is left to itself: the exit does not wait for it. With fetch
    workers (ThreadPoolExecutor threads, which the interpreter joins at exit) the script never exited."""
    code = textwrap.dedent(
        """
        import time, torch, fastpipe
        class Hung(torch.utils.data.Dataset):
            def __len__(self):
                return 4
            def __getitem__(self, i):
                time.sleep(600 if i == 1 else 0)
                return {{"i": torch.tensor(i)}}
        try:
            list(fastpipe.ThreadDataLoader(Hung(), timeout=1, num_workers={num_workers}))
        except RuntimeError:
            print("timed out")
        """
    ).format(num_workers=num_workers)
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert r.returncode == 0 and r.stdout.strip() == "timed out", r.stderr[-2000:]
    assert time.monotonic() - t0 < 40  # not the exit hook's 60 s
    assert "left running at interpreter exit" in r.stderr


@pytest.mark.timeout(60)
def test_idle_copy_threads_are_not_reported_as_left_running():
    """The exit hook listed the copy helpers (a ThreadPoolExecutor's threads, daemon when a loader
    thread made them, and joined by concurrent.futures at exit) as 'threads left running ... after
    60 s' at the end of every script that had used them."""
    script = textwrap.dedent("""
        import logging, threading
        logging.basicConfig()
        from fastpipe.runtime import _copy_threads
        t = threading.Thread(target=lambda: _copy_threads._helpers.get().submit(int).result(), daemon=True)
        t.start(); t.join()
    """)
    res = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=50)
    assert res.returncode == 0, res.stderr
    assert "left running" not in res.stderr, res.stderr
