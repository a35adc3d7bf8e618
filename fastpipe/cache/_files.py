"""Atomic writes into a persistent-cache folder, and removal of the temporary files a crash leaves.

An entry is written to ``.{key[:16]}.{host}.{pid}.{random}.tmp`` in the cache folder, fsynced, then
``os.replace``d onto ``{key}.fpc``: a reader sees the old file or the new one, never a part. A process
killed mid-write (SIGKILL, power loss) leaves its temporary file behind; :func:`remove_stale_temps`
removes, when a cache is opened, the temporary files of processes of this host that are no longer
alive, and any temporary file (of another host, or of an older fastpipe that did not name its pid)
untouched for ``max_age_s`` seconds. A live writer's file is never removed while it is being written:
the writer holds an exclusive ``flock`` on it until the rename, which tells a live writer whose pid
means nothing here (a container of another PID namespace sharing the host name and the folder, where
that pid may be dead or this process's own) from a killed one.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import secrets
import socket
import time
from collections.abc import Iterable
from pathlib import Path

log = logging.getLogger(__name__)
STALE_AGE_S = 3600.0
#: this host's name as temporary files and tier folders carry it
HOST = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:64] or "host"
_TEMP = re.compile(r"^\.(?P<key>[0-9a-f]+)\.(?P<host>[A-Za-z0-9-]+)\.(?P<pid>\d+)\.[0-9a-f]+\.tmp$")


def temp_name(key: str) -> str:
    """The name of a new temporary file for ``key``, written by this process."""
    return f".{key[:16]}.{HOST}.{os.getpid()}.{secrets.token_hex(4)}.tmp"


#: names of the temporary files this process is writing now: a file named with this process's pid
#: but not in here was left by an earlier process that had the same pid (a restarted container)
_writing: set[str] = set()
_locks: dict[str, int] = {}  # name -> a descriptor holding the file's flock until its rename


def write_temp(root: Path, key: str, chunks: Iterable[bytes | memoryview]) -> Path:
    """Write ``chunks`` to a new temporary file in ``root`` and fsync it; removed again on any error."""
    tmp = root / temp_name(key)
    _writing.add(tmp.name)
    try:
        # the umask decides who may read it, as for any file: a team sharing the folder reads it too
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        _hold_lock(tmp.name, fd)
        with os.fdopen(fd, "wb") as f:
            for chunk in chunks:
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        _done(tmp.name)
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def _hold_lock(name: str, fd: int) -> None:
    """Hold an exclusive ``flock`` on the new file ``fd`` until :func:`_done` (none where the filesystem
    takes none: the pid rules alone then)."""
    lock = os.dup(fd)  # open until the rename, while the file object of fd is closed after the write
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(lock)
        return
    _locks[name] = lock


def _done(name: str) -> None:
    _writing.discard(name)
    lock = _locks.pop(name, None)
    if lock is not None:
        os.close(lock)  # releases the flock


def commit(tmp: Path, path: Path) -> None:
    """``os.replace`` ``tmp`` onto ``path``; on failure ``tmp`` is removed and the error raised."""
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        _done(tmp.name)


def remove_stale_temps(root: Path, max_age_s: float = STALE_AGE_S) -> list[Path]:
    """Remove the temporary files in ``root`` that no live process is writing; returns those removed."""
    removed = []
    now = time.time()
    try:
        entries = [e for e in os.scandir(root) if e.name.startswith(".") and e.name.endswith(".tmp")]
    except OSError as err:
        log.debug("cannot list %s for stale temporary files: %s", root, err)
        return removed
    for entry in entries:
        try:
            if _is_stale(entry, now, max_age_s):
                os.unlink(entry.path)
                removed.append(Path(entry.path))
        except OSError as err:  # gone meanwhile, or a folder we may not write to
            log.debug("cannot remove temporary file %s: %s", entry.path, err)
    if removed:
        log.info("removed %d stale temporary file(s) from %s", len(removed), root)
    return removed


def _is_stale(entry: os.DirEntry, now: float, max_age_s: float) -> bool:
    if _locked(entry.path):  # a live writer's, whatever its host or PID namespace
        return False
    match = _TEMP.match(entry.name)
    if match and match["host"] == HOST:
        pid = int(match["pid"])
        if pid == os.getpid():  # ours, or an earlier process's that had the same pid
            return entry.name not in _writing
        if not _alive(pid):
            return True
    return now - entry.stat(follow_symlinks=False).st_mtime > max_age_s


def _locked(path: str) -> bool:
    """Whether a process holds the ``flock`` of ``path`` (``False`` when it cannot be opened or locked)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)  # a FIFO: no wait
    except OSError:
        return False
    try:  # shared: enough to meet the writer's exclusive lock, and NFS takes it on a read-only descriptor
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:  # no flock on this filesystem
        return False
    finally:
        os.close(fd)  # releases a lock taken just now
    return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True
