"""Files of a store being written: its work folder, fsync, atomic writes and the writer's lock.

A writer keeps its work in a folder beside the store, ``feats.h5.partial/``: ``header.json``
(the run's configuration and session id), the committed parts, the workers' parts not yet
committed (``tmp-*.h5``), and ``LOCK``: a POSIX lock held by the writing process (released when
it exits, however it exits), so a second writer is refused and readers can tell "being written"
from "interrupted".
"""

from __future__ import annotations

import errno
import os
import shutil
import time
from pathlib import Path

from ser.errors import StoreError

try:
    import fcntl
except ImportError:  # not POSIX: no writer lock (one writer per store is then the user's care)
    fcntl = None  # type: ignore[assignment]

#: Suffix of the work folder beside a store that is being written: ``feats.h5.partial``.
WORK_SUFFIX = ".partial"
HEADER = "header.json"
LOCK = "LOCK"
PID = "PID"
_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def work_dir(path: str | Path) -> Path:
    """The folder where a store being written keeps its committed batches: ``feats.h5.partial``."""
    path = Path(path)
    return path.with_name(path.name + WORK_SUFFIX)


def fsync_path(path: Path, *, directory: bool = False) -> None:
    """Flush a file (or a folder's entries) to disk; a crash of the machine keeps what was committed."""
    flags = os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        if directory:  # some filesystems cannot open folders; the rename is still atomic
            return
        raise
    try:
        os.fsync(fd)
    except OSError:
        if not directory:
            raise
    finally:
        os.close(fd)


def atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_path(path.parent, directory=True)


def is_hdf5(path: Path) -> bool:
    """Whether ``path`` starts with the HDF5 signature (at 0 or a power-of-two user-block offset)."""
    try:
        with open(path, "rb") as f:
            for offset in (0, 512, 1024, 2048, 4096):
                f.seek(offset)
                if f.read(8) == _HDF5_SIGNATURE:
                    return True
    except OSError:
        return False
    return False


def writer_pid(work: Path) -> int | None:
    """The pid of the process writing ``work``, or None if no live process holds its lock.

    The pid file is read first: within the writer's own process the lock file must not be
    opened and closed (closing any descriptor of it would drop that process's POSIX lock).
    """
    try:
        pid = int((work / PID).read_text().strip() or 0)
    except (OSError, ValueError):
        pid = 0
    if pid == os.getpid():
        return pid
    if fcntl is None:
        return None
    try:
        fd = os.open(work / LOCK, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.lockf(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EACCES, errno.EAGAIN):
            return pid or -1
        return None
    finally:
        os.close(fd)  # also releases the shared lock just taken
    return None


class WriterLock:
    """An exclusive POSIX lock on ``work/LOCK``: one writer per store. POSIX (``lockf``) locks
    are not inherited by forked worker processes and vanish when the holder dies."""

    def __init__(self, work: Path, store: Path, *, wait_s: float = 3.0) -> None:
        self.fd: int | None = os.open(work / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        if fcntl is None:
            return
        deadline = time.monotonic() + wait_s  # a reader's brief shared lock must not refuse us
        while True:
            try:
                fcntl.lockf(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EACCES, errno.EAGAIN) or time.monotonic() > deadline:
                    os.close(self.fd)
                    self.fd = None
                    try:
                        pid = (work / PID).read_text().strip()
                    except OSError:
                        pid = "?"
                    raise StoreError(f"{store} is being written by another featurize (pid {pid}); wait for "
                                     "it to finish, or stop it and rerun") from None
                time.sleep(0.1)
        (work / PID).write_text(f"{os.getpid()}\n")

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def clear_work(work: Path, *, keep_lock: bool) -> None:
    """Remove a work folder's content, the header first (so a half-cleared folder reads as empty)."""
    if not work.is_dir():
        return
    header = work / HEADER
    if header.exists():
        header.unlink()
    for entry in sorted(work.iterdir()):
        if keep_lock and entry.name in (LOCK, PID):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
    if not keep_lock:
        work.rmdir()
