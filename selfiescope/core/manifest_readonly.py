"""Reading a manifest without changing anything under its root (a dry run, a read-only dataset).

The usual open creates the folder, switches the journal to WAL, creates missing tables and
adds missing columns: all writes. Here, without a ``-wal`` file beside the database, the file
is complete and is opened ``immutable`` (SQLite then makes no ``-wal``/``-shm`` files and
takes no lock); with one (a writer is running, or was killed) it is opened ``mode=ro``, which
reads the writer's pages. The keyring never creates the key nor narrows its mode.
"""

from __future__ import annotations

import os
import re
import sqlite3
import threading
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

from .errors import UsageError
from .privacy import Keyring
from .text import printable

if TYPE_CHECKING:  # pragma: no cover
    from .manifest import Manifest


class ManifestUnreadable(UsageError, RuntimeError):
    """A manifest that cannot be read without changing it (phrased for the user)."""


def missing_schema(db: sqlite3.Connection) -> list[str]:
    """Tables and columns of this version that an older manifest lacks."""
    from .manifest import ADDED_COLUMNS, SCHEMA

    missing = []
    for table in re.findall(r"CREATE TABLE IF NOT EXISTS (\w+)", SCHEMA):
        have = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
        if not have:
            missing.append(f"table {table}")
        missing += [f"{table}.{name}" for name, _ in ADDED_COLUMNS.get(table, []) if have and name not in have]
    return missing


def open_read_only(cls: type["Manifest"], root: Path | str) -> "Manifest":
    """A :class:`Manifest` on ``<root>/manifest.sqlite`` that writes nothing; raises
    :class:`ManifestUnreadable` for a damaged manifest, or one this version cannot read unchanged."""
    manifest = cls.__new__(cls)
    manifest.path, manifest.readonly, manifest._states = Path(root) / "manifest.sqlite", True, {}
    manifest._lock = threading.RLock()
    wal = manifest.path.with_name(manifest.path.name + "-wal").exists()
    uri = "file:" + quote(os.fsencode(manifest.path.absolute())) + ("?mode=ro" if wal else "?mode=ro&immutable=1")
    try:
        manifest._db = sqlite3.connect(uri, uri=True, check_same_thread=False, timeout=30, isolation_level=None)
        manifest._db.row_factory = sqlite3.Row
        missing = missing_schema(manifest._db)
    except sqlite3.Error as exc:
        raise ManifestUnreadable(f"cannot read {printable(manifest.path)}: {exc}") from None
    if missing:
        manifest._db.close()
        raise ManifestUnreadable(
            f"{printable(manifest.path)} was written by an older version (it lacks {', '.join(missing[:3])}); "
            "any run that writes (e.g. forget without --dry-run) upgrades it"
        )
    manifest.keyring = Keyring(manifest.path.parent, read_only=True)
    return manifest
