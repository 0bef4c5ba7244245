"""Reading a test's manifest: one query, the manifest closed again whatever happens."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from selfiescope.core.manifest import Manifest


def manifest_query(root: Path, sql: str, params: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
    """The rows ``sql`` selects from the manifest under the storage root ``root``."""
    manifest = Manifest.at_root(root)
    try:
        return manifest.query(sql, params)
    finally:
        manifest.close()
