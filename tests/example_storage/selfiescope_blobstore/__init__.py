"""An example third-party storage backend: every image is a row of one SQLite file.

No image is a file on a path: ``location`` is this backend's own key (``label/id``), and
selfiescope reads images back only through ``read`` and ``iterate``. This is the
example of docs/storage.md; tests/test_example_storage.py installs the package and runs
import -> train -> predict with it.

    [storage]
    backend = "blobstore"
    [plugins.blobstore]
    database = "/data/blobs.sqlite"   # default: blobs.sqlite beside the manifest
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

from selfiescope.api import ImageEvent, Options, Storage, StoredImage, hookimpl


class BlobOptions(Options):
    database: str = ""  # the SQLite file; "" = <storage.root>/blobs.sqlite


class BlobStorage(Storage):
    name = "blobstore"
    Options = BlobOptions

    async def open(self) -> None:
        path = Path(self.options.database or Path(self.run.settings.storage.root) / "blobs.sqlite")
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()  # one connection, shared by the run's threads
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS blobs (label TEXT, id TEXT, data BLOB NOT NULL,"
                         " PRIMARY KEY (label, id))")

    async def close(self) -> None:
        self._db.close()

    def _sql(self, sql: str, params: tuple = ()) -> list[tuple]:
        with self._lock:
            return self._db.execute(sql, params).fetchall()

    async def write(self, event: ImageEvent) -> str:
        # One INSERT is atomic (a reader sees the whole blob or none); OR IGNORE makes a second
        # write of the same id a no-op, so a rerun that retries it stores one copy.
        await asyncio.to_thread(self._sql, "INSERT OR IGNORE INTO blobs(label, id, data) VALUES (?,?,?)",
                                (event.label, event.id, event.data))
        event.notes["blobstore"] = "sqlite"  # JSON-safe notes are saved with the image in the manifest
        return f"{event.label}/{event.id}"

    def iterate(self, label: str | None = None) -> Iterator[StoredImage]:
        rows = self._sql("SELECT label, id FROM blobs WHERE ? IS NULL OR label=? ORDER BY label, id", (label, label))
        for row_label, image_id in rows:
            yield StoredImage(image_id, row_label, f"{row_label}/{image_id}")

    async def read(self, stored: StoredImage) -> bytes:
        label, _, image_id = stored.location.partition("/")
        rows = await asyncio.to_thread(self._sql, "SELECT data FROM blobs WHERE label=? AND id=?", (label, image_id))
        if not rows:
            raise FileNotFoundError(f"no blob {stored.location!r}")
        return rows[0][0]

    async def delete(self, stored: StoredImage) -> bool:
        label, _, image_id = stored.location.partition("/")
        with self._lock:
            cur = self._db.execute("DELETE FROM blobs WHERE label=? AND id=?", (label, image_id))
        return cur.rowcount > 0  # a second delete finds nothing: idempotent


@hookimpl
def selfiescope_storage():
    return [BlobStorage]
