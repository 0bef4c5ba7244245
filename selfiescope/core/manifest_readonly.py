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
        manifest._db = upgraded_copy(manifest._db, manifest.path)
    refuse_newer_namespaces(manifest)
    manifest.keyring = Keyring(manifest.path.parent, read_only=True)
    return manifest


def upgraded_copy(db: sqlite3.Connection, path: Path) -> sqlite3.Connection:
    """An older manifest read as this version reads it: a copy in memory, given the tables and
    columns it lacks there (the file is never written). It has no plugin tables yet: each
    plugin reads the legacy tables it ``adopts``, as on any manifest not upgraded."""
    from .manifest import ADDED_COLUMNS, SCHEMA
    from .manifest_io import ManifestConnection

    memory = sqlite3.connect(":memory:", check_same_thread=False, isolation_level=None, factory=ManifestConnection)
    try:
        db.backup(memory)
        db.close()
        memory.executescript(SCHEMA)
        for table, columns in ADDED_COLUMNS.items():
            have = {row[1] for row in memory.execute(f"PRAGMA table_info({table})")}
            for name, kind in columns:
                if name not in have:
                    memory.execute(f"ALTER TABLE {table} ADD COLUMN {name} {kind}")
    except sqlite3.Error as exc:
        memory.close()
        raise ManifestUnreadable(f"cannot read {printable(path)}: {exc}") from None
    memory.manifest_path = path  # type: ignore[attr-defined]
    memory.row_factory = sqlite3.Row
    return memory


def refuse_newer_namespaces(manifest: "Manifest") -> None:
    """Raise the error every command gives when a plugin's tables are newer than the plugin
    (a dry run must not read tables whose meaning this version does not know)."""
    from .plugin_state import declared, newer_error, recorded_versions

    versions = recorded_versions(manifest) or {}
    for state in declared():
        if versions.get(state.namespace, -1) > state.version:
            manifest._db.close()
            raise newer_error(manifest, state, versions[state.namespace])
