"""Opening the SQLite manifest, and SQLite's errors as the OS errors they are.

SQLite reports a full disk, a read-only filesystem or a folder it cannot open as
``sqlite3.OperationalError`` with a message and no path. The manifest's connection
raises :class:`ManifestError` instead: an ``OSError`` with the errno and the manifest's
path, so every command reports it like any other file error ("disk full: PATH", exit 1;
"PATH: read-only", exit 2) instead of a traceback.

Reading commands (``export``, ``card``, ``stats``, ``forget --dry-run``, ``fsck``) open
the manifest read-only when the storage root cannot be written (a read-only mount, a
folder without write permission): ``mode=ro``, or ``immutable=1`` where SQLite cannot
even create its shared-memory file beside a WAL database (on a read-only filesystem no
one can change the file under us, so that is safe).
"""

from __future__ import annotations

import errno
import os
import sqlite3
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

from .errors import FilesystemError

# SQLite's message fragment -> the errno it means (None: no errno, the text says it).
_ERRNOS: tuple[tuple[str, int | None], ...] = (
    ("disk is full", errno.ENOSPC),
    ("disk i/o error", errno.EIO),
    ("readonly database", errno.EROFS),
    ("unable to open database file", errno.EACCES),
    ("file is not a database", None),
)


class ManifestError(FilesystemError):
    """A manifest operation failed for a reason of the filesystem (full, read-only, unreadable)."""


def translated(exc: sqlite3.Error, path: Path) -> BaseException:
    """``exc`` as a :class:`ManifestError` when it is a filesystem problem, else ``exc`` itself."""
    text = str(exc).lower()
    for fragment, code in _ERRNOS:
        if fragment not in text:
            continue
        if code is None:
            return ManifestError(None, "not a SQLite database: the manifest is damaged, or another file has its name",
                                 str(path))
        if code == errno.EACCES:
            if _read_only_fs(path.parent):
                code = errno.EROFS
            elif os.access(path.parent, os.W_OK):  # not a permission problem: say what SQLite said
                return ManifestError(None, f"cannot open the manifest ({exc})", str(path))
        return ManifestError(code, os.strerror(code), str(path))
    return exc


def _read_only_fs(folder: Path) -> bool:
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except OSError:
        return False


class ManifestConnection(sqlite3.Connection):
    """A connection whose statement errors name the manifest and their errno."""

    manifest_path = Path("manifest.sqlite")

    def execute(self, *args: Any, **kwargs: Any) -> sqlite3.Cursor:  # type: ignore[override]
        try:
            return super().execute(*args, **kwargs)
        except sqlite3.DatabaseError as exc:
            raise translated(exc, self.manifest_path) from None

    def executemany(self, *args: Any, **kwargs: Any) -> sqlite3.Cursor:  # type: ignore[override]
        try:
            return super().executemany(*args, **kwargs)
        except sqlite3.DatabaseError as exc:
            raise translated(exc, self.manifest_path) from None

    def executescript(self, *args: Any, **kwargs: Any) -> sqlite3.Cursor:  # type: ignore[override]
        try:
            return super().executescript(*args, **kwargs)
        except sqlite3.DatabaseError as exc:
            raise translated(exc, self.manifest_path) from None

    def rollback_if_open(self) -> None:
        """Roll back the transaction in progress, if SQLite has not already (it rolls back by
        itself on a full disk, and a second ROLLBACK would hide the real error)."""
        if self.in_transaction:
            try:
                super().execute("ROLLBACK")
            except sqlite3.OperationalError:
                pass


def writable(root: Path) -> bool:
    """Whether this process can write under ``root`` (a read-only mount says no even to root)."""
    root = Path(root)
    return os.access(root, os.W_OK | os.X_OK) and not _read_only_fs(root)


def connect(path: Path, *, readonly: bool = False) -> ManifestConnection:
    """A connection to the manifest at ``path``; ``readonly`` never writes a byte under its folder."""
    if not readonly:
        if str(path) != ":memory:":
            path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(str(path), check_same_thread=False, timeout=30, isolation_level=None,
                             factory=ManifestConnection)
        db.manifest_path = path
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        # A deleted row's bytes are zeroed, not left in free pages: what forget removes (owners'
        # pseudonyms, face boxes) is not in the file either, whatever SQLite's build default.
        db.execute("PRAGMA secure_delete=ON")
        return db  # type: ignore[return-value]
    if not path.is_file():
        raise ManifestError(errno.ENOENT, "no manifest", str(path))
    try:
        return _open(path, "mode=ro")  # sees a live writer's commits, and a killed writer's WAL
    except ManifestError:
        if writable(path.parent):
            raise
    # SQLite could not create the -shm file a WAL database needs (a read-only filesystem, a
    # cleanly closed manifest): immutable=1 reads the main file alone, which then holds everything,
    # unless a killed writer left commits in the -wal file that only mode=ro could have read.
    wal = path.with_name(path.name + "-wal")
    if wal.exists() and wal.stat().st_size:
        raise ManifestError(None, "a killed run left its last changes in the -wal file, which SQLite cannot "
                            "read on a read-only filesystem; mount it writable once and run any command", str(path))
    return _open(path, "immutable=1")


def _open(path: Path, query: str) -> ManifestConnection:
    db = sqlite3.connect(f"file:{quote(str(path.resolve()))}?{query}", uri=True, check_same_thread=False,
                         timeout=30, isolation_level=None, factory=ManifestConnection)
    db.manifest_path = path
    db.row_factory = sqlite3.Row
    try:
        db.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
    except BaseException:
        db.close()
        raise
    return db  # type: ignore[return-value]


def checkpoint_truncate(db: sqlite3.Connection, deadline_s: float = 10.0) -> bool:
    """Copy the write-ahead log into the main file and empty it.

    After a DELETE the older versions of its pages are still in the WAL's earlier frames and in
    the main file until a checkpoint: what ``secure_delete`` zeroed is zeroed on disk only after
    this. False when another connection's open read keeps it from finishing by ``deadline_s``.
    """
    end = time.monotonic() + deadline_s
    while True:
        busy = db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
        if not busy:
            return True
        if time.monotonic() >= end:
            return False
        time.sleep(0.1)
