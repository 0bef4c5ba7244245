"""Opening the manifest for the review app: what a failure to open it means for the user, and
the side files a failed open leaves.

SQLite reports a full disk at open time in several ways: ``SQLITE_FULL``, ``ENOSPC``, or a plain
I/O error when it cannot grow the ``-shm`` index it just created. The last is told apart by the
free space of the root's filesystem at that moment.
"""

from __future__ import annotations

import errno
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

SIDE_FILES = ("-wal", "-shm")
NEARLY_FULL_BYTES = 256 * 1024  # less free space than this: an I/O error at open is the full disk
SHM_MIN_BYTES = 32 * 1024  # a working -shm index is at least one 32 KiB page: a smaller one is a failed start


def disk_full(exc: BaseException, root: Path) -> bool:
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    if isinstance(exc, sqlite3.Error):
        if getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL or "disk is full" in str(exc):
            return True
    io_error = (isinstance(exc, OSError) and exc.errno == errno.EIO) or "disk i/o error" in str(exc).lower()
    return io_error and free_bytes(root) < NEARLY_FULL_BYTES


def free_bytes(root: Path) -> int:
    try:
        stat = os.statvfs(root)
    except OSError:
        return 1 << 62
    return stat.f_bavail * stat.f_frsize


def why_unreadable(exc: BaseException, root: Path) -> str:
    if disk_full(exc, root):
        return "the disk is full (free some space and retry)"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    if isinstance(exc, sqlite3.DatabaseError) and "not a database" in str(exc):
        return "not a SQLite database (damaged, or another kind of file)"
    return "not a readable SQLite manifest"


@contextmanager
def tidy_failed_open(manifest: Path) -> Iterator[None]:
    """On a failed open, remove the ``-wal`` and ``-shm`` files this open created, only where
    they hold nothing: an empty ``-wal`` and a ``-shm`` too short to be any connection's index."""
    before = {suffix: _exists(manifest, suffix) for suffix in SIDE_FILES}
    try:
        yield
    except BaseException:
        wal, shm = (Path(f"{manifest}{suffix}") for suffix in SIDE_FILES)
        created = [s for s, was in before.items() if not was and _exists(manifest, s)]
        empty_wal = (_size(wal) or 0) == 0
        partial_shm = (_size(shm) or 0) < SHM_MIN_BYTES
        if created and empty_wal and partial_shm:
            for suffix in created:
                with _quiet():
                    Path(f"{manifest}{suffix}").unlink()
        raise


def _exists(manifest: Path, suffix: str) -> bool:
    return os.path.lexists(f"{manifest}{suffix}")


def _size(path: Path) -> int | None:
    try:
        return path.lstat().st_size
    except OSError:
        return None


@contextmanager
def _quiet() -> Iterator[None]:
    try:
        yield
    except OSError:
        pass
