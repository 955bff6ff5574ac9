"""Temporary folders beside the outputs: owned by one process, swept once that process is gone.

Every output is written into a hidden folder ``.lstm-convert-<pid>-<random>`` beside its target and renamed
into place when complete. A run killed mid-write (SIGKILL, a power cut) cannot remove its folder, so the
next run that writes into the same folder removes the temporaries of processes that are gone.

"Gone" needs two signs, because either alone can be wrong: the owner holds an exclusive ``flock`` on
``<folder>/.owner`` for the folder's whole life (the kernel drops it when the process dies, even after
SIGKILL, and it is seen across PID namespaces and from other hosts on NFS), and the pid in the name is no
live process here (which covers the moment between making the folder and taking the lock). A folder
whose owner is alive, or that was made by an older lstm-convert without a pid, is never removed; folder
scans (``batch.expand``) skip every temporary, so nothing inside one is ever taken for an export.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: only the pid tells
    fcntl = None  # type: ignore[assignment]

PREFIX = ".lstm-convert-"
LOCK_NAME = ".owner"
_OWNED = re.compile(r"\.lstm-convert-(\d+)-\w+$")


def is_temporary(name: str) -> bool:
    """A name lstm-convert gives its temporary folders (of this version or an older one)."""
    return name.startswith(PREFIX)


def inside_temporary(path: Path, root: Path) -> bool:
    """``path`` (found under ``root``) lies inside one of lstm-convert's temporary folders."""
    try:
        parts = path.relative_to(root).parts[:-1]
    except ValueError:
        parts = path.parts[:-1]
    return any(is_temporary(part) for part in parts)


@contextmanager
def scratch_folder(parent: Path) -> Iterator[Path]:
    """A new temporary folder in ``parent``, locked by this process, removed when the block ends.

    Stale temporaries of dead processes in ``parent`` are removed first. ``OSError`` (a read-only folder,
    a full disk) propagates for the caller to explain.
    """
    sweep(parent)
    folder = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-", dir=parent))
    lock = None
    try:
        lock = _take_lock(folder)
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        if lock is not None:
            os.close(lock)  # only now: a sweeper must never see this folder unlocked while it exists


def sweep(parent: Path) -> list[Path]:
    """Remove the temporaries in ``parent`` whose owning process is gone; return what was removed."""
    try:
        entries = list(os.scandir(parent))
    except OSError:
        return []
    removed = []
    for entry in entries:
        match = _OWNED.match(entry.name)
        if match is None or not entry.is_dir(follow_symlinks=False):
            continue
        pid = int(match.group(1))
        if pid == os.getpid() or _alive(pid):
            continue
        if _remove_if_unlocked(Path(entry.path)):
            removed.append(Path(entry.path))
    return removed


def _take_lock(folder: Path) -> int:
    fd = os.open(folder / LOCK_NAME, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o600)
    if fcntl is not None:
        with suppress(OSError):  # a file system without locks: the pid alone protects the folder
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return fd


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: a process of another user holds that pid
        return True
    return True


def _remove_if_unlocked(folder: Path) -> bool:
    try:
        fd = os.open(folder / LOCK_NAME, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:  # killed before it took its lock (its pid is gone, checked above)
        shutil.rmtree(folder, ignore_errors=True)
        return True
    except OSError:
        return False
    try:
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False  # its owner is alive (in another PID namespace or on another host)
            except OSError:
                pass
        shutil.rmtree(folder, ignore_errors=True)  # holding the lock: no other sweeper races this one
        return True
    finally:
        os.close(fd)
