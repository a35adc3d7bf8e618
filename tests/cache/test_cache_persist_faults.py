"""Persistent-cache faults: a fill killed mid-write, a folder that cannot be written, a folder in place."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _persist_helpers import LoadNpy, assert_same_items, write_files

from fastpipe import CacheDataset
from fastpipe.cache._files import _writing, remove_stale_temps, temp_name

ROOT = Path(__file__).resolve().parents[2]


def _open(data, cache, load=None):
    return CacheDataset(data, [load or LoadNpy()], progress=False, persist_dir=cache, num_workers=1)


@pytest.mark.timeout(180)
def test_sigkill_mid_fill_leaves_no_temporary_file_and_no_corrupt_entry(tmp_path):
    data, cache, ready = (
        write_files(tmp_path, n=4, shape=(1, 32, 32, 32)),
        tmp_path / "cache",
        tmp_path / "ready",
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")])}
    args = [json.dumps(data), str(cache), str(ready), "3"]  # hang in the third entry's write
    code = "import sys, _persist_helpers as h; h.fill_and_hang(*sys.argv[1:4], int(sys.argv[4]))"
    child = subprocess.Popen([sys.executable, "-c", code, *args], env=env)  # same module name as here
    try:
        deadline = time.monotonic() + 150
        while not ready.exists():
            assert child.poll() is None, f"the filling child exited early with {child.returncode}"
            assert time.monotonic() < deadline, "the filling child never reached its third write"
            time.sleep(0.05)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.kill()
        child.wait()
    left = list(cache.glob(".*.tmp"))
    assert len(left) == 1 and len(list(cache.glob("*.fpc"))) == 2  # what the kill left behind
    load = LoadNpy()
    ds = _open(data, cache, load)
    assert list(cache.glob(".*.tmp")) == [], "a stale temporary file survived opening the cache"
    assert ds.stats()["persist"]["loads"] == 2 and load._calls == 2
    assert_same_items(ds, CacheDataset(data, [LoadNpy()], progress=False))


def test_stale_temp_cleanup_spares_live_writers_and_fresh_unknown_files(tmp_path):
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    try:
        mine = temp_name("a" * 64)
        names = {
            "live": mine.replace(f".{os.getpid()}.", f".{live.pid}."),
            "dead": mine.replace(f".{os.getpid()}.", f".{dead.pid}."),
            "own, being written": mine,
            "own pid, an earlier process's": temp_name("b" * 64),  # a restarted container reuses pids
            "old-style fresh": ".0123456789abcdef-x1y2z3.tmp",
            "old-style stale": ".fedcba9876543210-x1y2z3.tmp",
        }
        for name in names.values():
            (tmp_path / name).write_bytes(b"partial")
        two_hours_ago = time.time() - 7200
        os.utime(tmp_path / names["old-style stale"], (two_hours_ago, two_hours_ago))
        _writing.add(names["own, being written"])
        removed = {p.name for p in remove_stale_temps(tmp_path)}
    finally:
        _writing.discard(names["own, being written"])
        live.kill()
        live.wait()
    assert removed == {names["dead"], names["old-style stale"], names["own pid, an earlier process's"]}


def test_folder_in_place_of_an_entry_warns_and_goes_on(tmp_path):
    data, cache = write_files(tmp_path, n=3), tmp_path / "cache"
    fresh = _open(data, cache)
    victim = sorted(cache.glob("*.fpc"))[0]
    victim.unlink()
    victim.mkdir()
    with pytest.warns(RuntimeWarning) as record:
        ds = _open(data, cache)
    messages = [str(w.message) for w in record]
    assert any(f"{victim.name} rejected (IsADirectoryError" in m for m in messages)
    assert any(f"{victim.name} cannot be replaced" in m for m in messages)
    assert ds.stats()["persist"]["loads"] == 2 and ds.stats()["persist"]["write_errors"] == 1
    assert_same_items(ds, fresh)


def test_corrupt_entries_in_a_read_only_folder_warn_once_and_go_on_in_memory(tmp_path, monkeypatch):
    data, cache = write_files(tmp_path, n=3), tmp_path / "cache"
    fresh = _open(data, cache)
    for entry in sorted(cache.glob("*.fpc"))[:2]:
        entry.write_bytes(entry.read_bytes()[:100])  # truncated: both recomputed, neither can be saved
    real_open = os.open

    def read_only_folder(path, flags, *args, **kwargs):
        # Tests run as root here, where chmod cannot stop a write: creating a file in the cache folder
        # fails as it would in a read-only folder; reads go through.
        if flags & os.O_CREAT and Path(path).parent == cache:
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", read_only_folder)
    with pytest.warns(RuntimeWarning) as record:
        ds = _open(data, cache)
    unwritable = [w for w in record if "cannot be written" in str(w.message)]
    assert len(unwritable) == 1 and str(cache) in str(unwritable[0].message)
    assert "PermissionError" in str(unwritable[0].message)
    assert ds.stats()["persist"]["rejected"] == 2 and ds.stats()["persist"]["loads"] == 1
    assert_same_items(ds, fresh)


def test_folder_that_cannot_be_created_warns_once_and_goes_on_in_memory(tmp_path):
    data = write_files(tmp_path, n=2)
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder's parent should be")
    with pytest.warns(RuntimeWarning, match="cannot be created") as record:
        ds = _open(data, blocker / "cache")
    assert len(record) == 1 and ds.stats()["persist"]["writable"] is False
    assert_same_items(ds, CacheDataset(data, [LoadNpy()], progress=False))


def test_a_rejected_entry_names_the_item_it_was_for(tmp_path):
    """A rejection named the .fpc file only ('... rejected (checksum mismatch); recomputing it'): nothing
    said which data file's entry was damaged; the warning now names the item's source file."""
    data, cache = write_files(tmp_path, n=2), tmp_path / "cache"
    _open(data, cache)
    for entry in cache.glob("*.fpc"):
        blob = bytearray(entry.read_bytes())
        blob[-10] ^= 1  # one flipped bit in a stored tensor
        entry.write_bytes(bytes(blob))
    with pytest.warns(RuntimeWarning) as record:
        _open(data, cache)
    messages = [str(w.message) for w in record if "rejected (corrupt" in str(w.message)]
    assert len(messages) == 2
    for item in data:
        assert any(m.endswith(f"recomputing the item of {item['image']}") for m in messages)


def test_a_killed_run_s_disk_tier_folder_is_removed_when_a_tier_opens_there(tmp_path):
    """A run killed with a disk tier (SIGKILL, the OOM killer) left its fastpipe-tier-* folder, a copy
    of the data set, behind for good: each crash took that much more of the disk, until the disk tier
    of later runs failed for want of room. A tier folder of this host that no process holds locked goes
    when a tier opens; a live tier's (another process's, or this one's) and another host's stay."""
    from fastpipe.cache._disk_tier import DiskTier
    from fastpipe.cache._files import HOST

    names = {
        "killed": f"fastpipe-tier-{HOST}-999999-ab_c1234",
        "live": f"fastpipe-tier-{HOST}-999998-ab_c1234",
        "another host's": f"fastpipe-tier-not{HOST}-999999-ab_c1234",
        "not a tier": "fastpipe-tier-data",
    }
    for name in names.values():
        (tmp_path / name).mkdir()
        (tmp_path / name / "0-0.npy").write_bytes(b"entry")
    hold = "import fcntl, os, sys, time; fcntl.flock(os.open(sys.argv[1], os.O_RDONLY), fcntl.LOCK_EX)"
    live = subprocess.Popen(
        [
            sys.executable,
            "-c",
            hold + "; print(1, flush=True); time.sleep(60)",
            str(tmp_path / names["live"]),
        ],
        stdout=subprocess.PIPE,
    )
    try:
        assert live.stdout.readline().strip() == b"1"  # the live tier's process holds its folder
        tier = DiskTier(tmp_path)
        other = DiskTier(tmp_path)  # a second tier of this process spares the first
    finally:
        live.kill()
        live.wait()
    left = {p.name for p in tmp_path.iterdir()}
    kept = {names[k] for k in ("live", "another host's", "not a tier")}
    assert left == kept | {tier.root.name, other.root.name}
    other.close()
    DiskTier(tmp_path).close()  # its process gone, the live tier's folder is a killed one's now
    assert {p.name for p in tmp_path.iterdir()} == kept - {names["live"]} | {tier.root.name}
    tier.close()


def test_entries_are_readable_as_the_umask_says_so_a_shared_folder_is_shared(tmp_path):
    """Entries were written with mode 0600 whatever the umask: in a cache folder a team shares (a group
    scratch space), every other user's entries were 'rejected (PermissionError)', recomputed and written
    over, so nobody's entries were reused and each run undid the last one's."""
    data, cache = write_files(tmp_path, n=1), tmp_path / "cache"
    old = os.umask(0o022)
    try:
        _open(data, cache)
    finally:
        os.umask(old)
    (entry,) = cache.glob("*.fpc")
    assert entry.stat().st_mode & 0o777 == 0o644


@pytest.mark.timeout(60)
@pytest.mark.parametrize("seen_as", ["a dead pid", "this process's pid"])
def test_a_live_writer_of_another_pid_namespace_keeps_its_temporary_file(tmp_path, monkeypatch, seen_as):
    """Containers sharing the host name (``--net=host``) and a cache folder see each other's pids as dead,
    or as their own: opening a cache removed another container's temporary file mid-write, so its save
    failed ('cannot be replaced') and its entry was not stored. A writer now holds a flock on its file."""
    import fastpipe.cache._files as files

    cache, ready = tmp_path / "cache", tmp_path / "ready"
    cache.mkdir()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")])}
    code = "import sys, _persist_helpers as h; h.write_and_hang(sys.argv[1], sys.argv[2])"
    writer = subprocess.Popen([sys.executable, "-c", code, str(cache), str(ready)], env=env)
    try:
        deadline = time.monotonic() + 50
        while not ready.exists():
            assert writer.poll() is None, f"the writer exited early with {writer.returncode}"
            assert time.monotonic() < deadline, "the writer never started its write"
            time.sleep(0.05)
        (tmp,) = cache.glob(".*.tmp")
        if seen_as == "a dead pid":
            monkeypatch.setattr(files, "_alive", lambda pid: False)  # its pid means nothing here
        else:  # the same pid as ours, in its own namespace (the lock follows the file, not its name)
            tmp = tmp.rename(tmp.with_name(tmp.name.replace(f".{writer.pid}.", f".{os.getpid()}.")))
        assert remove_stale_temps(cache) == [] and tmp.exists()
    finally:
        writer.kill()
        writer.wait()
    assert remove_stale_temps(cache) == [tmp]  # killed: its lock went with it
