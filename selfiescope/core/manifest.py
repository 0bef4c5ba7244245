"""The SQLite manifest at ``<storage root>/manifest.sqlite`` (WAL mode).

One file records every decision (accepted and rejected images), the posts each source
has seen (resume), rate-limit budgets, the feature cache, runs, and the tables plugins keep
under their own namespace (:mod:`.plugin_state`: dedup's perceptual-hash index). It is shared
by the engine's worker threads behind one lock: SQLite has a single writer anyway, and each
statement is short.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Collection, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .events import Decision, ImageEvent
from .face_boxes import face_columns
from .manifest_io import ManifestConnection, checkpoint_truncate, connect, writable
from .plugin_state import PluginState, StateHandle, declared, open_state
from .privacy import Keyring, describe_extra, scrub_origin
from .text import printable, redact_url

SCHEMA = """
CREATE TABLE IF NOT EXISTS images (
    content_hash TEXT PRIMARY KEY,
    id TEXT,
    source TEXT, job TEXT, post_id TEXT, post_url TEXT, image_url TEXT, origin_path TEXT,
    label TEXT,
    phash TEXT,
    format TEXT, width INTEGER, height INTEGER, size INTEGER,
    face_box TEXT, face_area REAL, n_faces INTEGER, face_detector TEXT,
    decision TEXT NOT NULL,
    rejected_by TEXT, reject_code TEXT, reason TEXT,
    location TEXT,
    run_id INTEGER,
    first_seen REAL, updated REAL
);
CREATE INDEX IF NOT EXISTS images_label ON images(label, decision);
CREATE INDEX IF NOT EXISTS images_id ON images(id);
CREATE TABLE IF NOT EXISTS rejections (
    rowid INTEGER PRIMARY KEY,
    content_hash TEXT, source TEXT, job TEXT, post_id TEXT, label TEXT,
    rejected_by TEXT, reject_code TEXT, reason TEXT, run_id INTEGER, at REAL, origin_path TEXT
);
CREATE TABLE IF NOT EXISTS failures (
    rowid INTEGER PRIMARY KEY,
    content_hash TEXT, source TEXT, job TEXT, post_id TEXT, origin_path TEXT, label TEXT,
    step TEXT, code TEXT, reason TEXT, run_id INTEGER, at REAL
);
CREATE TABLE IF NOT EXISTS posts_seen (
    source TEXT NOT NULL, post_id TEXT NOT NULL, job TEXT, label TEXT, at REAL,
    PRIMARY KEY (source, post_id)
);
CREATE TABLE IF NOT EXISTS plugin_schema (
    namespace TEXT PRIMARY KEY, version INTEGER NOT NULL, tables TEXT NOT NULL, updated REAL
);
CREATE TABLE IF NOT EXISTS store_intents (
    content_hash TEXT NOT NULL, id TEXT NOT NULL, label TEXT NOT NULL, run_id INTEGER, at REAL,
    PRIMARY KEY (id, label)
);
CREATE TABLE IF NOT EXISTS budgets (
    key TEXT PRIMARY KEY, tokens REAL, updated REAL
);
CREATE TABLE IF NOT EXISTS features (
    content_hash TEXT NOT NULL, extractor TEXT NOT NULL, version TEXT NOT NULL, data TEXT NOT NULL,
    PRIMARY KEY (content_hash, extractor, version)
);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY, pipeline TEXT, settings_hash TEXT, started REAL, finished REAL,
    status TEXT, stats TEXT
);
CREATE TABLE IF NOT EXISTS tombstones (
    key TEXT PRIMARY KEY, kind TEXT NOT NULL, at REAL
);
CREATE TABLE IF NOT EXISTS forget_pending (
    kind TEXT NOT NULL, value TEXT NOT NULL, label TEXT, location TEXT, at REAL,
    PRIMARY KEY (kind, value)
);
CREATE TABLE IF NOT EXISTS models (
    path TEXT PRIMARY KEY, pipeline TEXT, trained REAL, images INTEGER
);
CREATE TABLE IF NOT EXISTS reviews (
    id INTEGER PRIMARY KEY, content_hash TEXT NOT NULL, action TEXT NOT NULL, old TEXT, new TEXT,
    at REAL NOT NULL, note TEXT, batch INTEGER NOT NULL, undoes INTEGER
);
"""
# Columns added after the first release: existing manifests get them on open.
ADDED_COLUMNS: dict[str, list[tuple[str, str]]] = {
    "images": [("owner", "TEXT"), ("owner_id", "TEXT"), ("caption", "TEXT"), ("taken_at", "REAL"),
               ("face_detector", "TEXT"), ("notes", "TEXT"),  # notes: JSON-safe event.notes of accepted images
               # `selfiescope review`: the reviewed label (NULL: as collected; `label` keeps the collected one,
               # which the stored file's place and per-job limits go by), when it was marked reviewed, excluded
               ("review_label", "TEXT"), ("reviewed", "REAL"), ("excluded", "INTEGER"),
               ("phash_centre", "TEXT"),  # ImageEvent.phash_centre (older manifests: dedup's note of it)
               ("face_boxes", "TEXT")],  # every box of ImageEvent.faces, largest first (core/face_boxes.py)
    "rejections": [("origin_path", "TEXT")],
}
ADDED_INDEXES = (
    "CREATE INDEX IF NOT EXISTS images_owner ON images(owner)",
    "CREATE INDEX IF NOT EXISTS images_post ON images(post_id)",
    "CREATE INDEX IF NOT EXISTS rejections_hash ON rejections(content_hash)",
    "CREATE INDEX IF NOT EXISTS rejections_post ON rejections(post_id)",
    "CREATE INDEX IF NOT EXISTS posts_seen_post ON posts_seen(post_id)",
    # The dataset card counts per source, job and label at the end of every run: an index-only scan.
    "CREATE INDEX IF NOT EXISTS images_card ON images(decision, source, job, label, first_seen)",
    "CREATE INDEX IF NOT EXISTS reviews_hash ON reviews(content_hash)",
    "CREATE INDEX IF NOT EXISTS reviews_batch ON reviews(batch)",
)



def _text(value: object) -> str | None:
    """A value as text SQLite can store (file names may hold undecodable bytes)."""
    return None if value is None else printable(value)


def storable(params: Any) -> Any:
    """Query parameters as SQLite takes them: text is :func:`_text` (a file name's undecodable
    bytes as escapes), so a lookup matches what was stored, and never raises UnicodeEncodeError."""
    if isinstance(params, dict):
        return {k: _text(v) if isinstance(v, str) else v for k, v in params.items()}
    return tuple(_text(v) if isinstance(v, str) else v for v in params)


def plain_notes(notes: dict[str, Any]) -> dict[str, Any]:
    """The JSON-safe part of an event's notes (what steps and the storage backend noted): what
    the manifest saves, and what a remote worker may send back."""
    plain = {}
    for key, value in notes.items():
        try:
            json.dumps(value)
        except (TypeError, ValueError):
            continue
        plain[str(key)] = value
    return plain


def json_notes(notes: dict[str, Any]) -> str | None:
    """:func:`plain_notes` as JSON (None when there is nothing to save)."""
    plain = plain_notes(notes)
    return json.dumps(plain, sort_keys=True) if plain else None


def phash_to_int(hex_hash: str) -> int:
    """A 16-hex-digit perceptual hash as an unsigned 64-bit int."""
    return int(hex_hash, 16)


def signed64(value: int) -> int:
    """An unsigned 64-bit value as SQLite's signed INTEGER stores it."""
    return value - (1 << 64) if value >= 1 << 63 else value


def _number(value: Any) -> float | None:
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


class Manifest:
    def __init__(self, path: Path | str, *, readonly: bool = False) -> None:
        """Open (or create) the manifest; ``readonly`` opens an existing one without writing
        anything under its folder (no schema change, no key created: see :mod:`.manifest_io`)."""
        self.path, self.readonly = Path(path), readonly
        self._lock = threading.RLock()
        self._db: ManifestConnection = connect(self.path, readonly=readonly)  # WAL mode when it writes
        self._states: dict[str, StateHandle] = {}
        if not readonly:
            self._db.executescript(SCHEMA)
            self._migrate()
            for state in declared():  # every plugin's tables, created or migrated before any run uses them
                self.state(state)
        self.keyring = Keyring(self.path.parent, read_only=readonly)  # read (or made) on first use only

    def _migrate(self) -> None:
        """Additive schema changes, safe on a manifest of any earlier version."""
        with self._lock:
            for table, columns in ADDED_COLUMNS.items():
                have = {row[1] for row in self._db.execute(f"PRAGMA table_info({table})")}
                for name, kind in columns:
                    if name not in have:
                        try:
                            self._db.execute(f"ALTER TABLE {table} ADD COLUMN {name} {kind}")
                        except sqlite3.OperationalError as exc:  # another process added it first
                            if "duplicate column" not in str(exc):
                                raise
                        else:
                            self._fill_added(table, name)
            for sql in ADDED_INDEXES:
                self._db.execute(sql)

    def _fill_added(self, table: str, column: str) -> None:
        """A column new to this manifest that older versions kept elsewhere: copied once."""
        if (table, column) == ("images", "phash_centre"):  # kept in the notes JSON before it was a field
            self._db.execute("UPDATE images SET phash_centre = json_extract(notes, '$.phash_centre')"
                             " WHERE notes IS NOT NULL AND json_valid(notes)"
                             " AND json_type(notes, '$.phash_centre') = 'text'")

    def state(self, declaration: PluginState) -> StateHandle:
        """The handle on a plugin's own tables (:mod:`.plugin_state`), created or migrated on
        first use in this manifest."""
        handle = self._states.get(declaration.namespace)
        if handle is None or handle.state is not declaration:
            handle = self._states[declaration.namespace] = open_state(self, declaration)
        return handle

    @classmethod
    def read_only(cls, root: Path | str) -> "Manifest":
        """Open ``<root>/manifest.sqlite`` changing nothing under ``root`` (:mod:`.manifest_readonly`)."""
        from .manifest_readonly import open_read_only

        return open_read_only(cls, root)

    @property
    def root(self) -> Path:
        return self.path.parent

    @classmethod
    def at_root(cls, root: Path | str) -> "Manifest":
        return cls(Path(root) / "manifest.sqlite")

    @classmethod
    def for_reading(cls, root: Path | str) -> "Manifest":
        """The manifest for a command that only reads: read-only when the root cannot be written."""
        return cls(Path(root) / "manifest.sqlite", readonly=not writable(Path(root)))

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def checkpoint(self, deadline_s: float = 10.0) -> bool:
        """Deleted rows gone from the files on disk too (:func:`~.manifest_io.checkpoint_truncate`)."""
        with self._lock:
            return checkpoint_truncate(self._db, deadline_s)

    def vacuum(self) -> bool:
        """Rewrite the file from its live rows: SQLite leaves fragments of deleted and moved rows
        in pages it reorganised, which ``secure_delete`` does not reach; a VACUUM leaves none.
        False when another connection's open transaction, or a full disk, prevents it."""
        with self._lock:
            try:
                self._db.execute("VACUUM")
            except sqlite3.OperationalError:
                return False
            return True

    def execute(self, sql: str, params: tuple[Any, ...] | dict[str, Any] = ()) -> sqlite3.Cursor:
        with self._lock:
            return self._db.execute(sql, storable(params))

    def executemany(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        with self._lock:
            self._db.execute("BEGIN")
            try:
                self._db.executemany(sql, [storable(row) for row in rows])
                self._db.execute("COMMIT")
            except BaseException:
                self._db.rollback_if_open()
                raise

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (taken at once: no other writer can slip in between)."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
                self._db.execute("COMMIT")
            except BaseException:
                self._db.rollback_if_open()
                raise

    def query(self, sql: str, params: tuple[Any, ...] | dict[str, Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, storable(params)).fetchall()

    # --- runs -------------------------------------------------------------------------
    def start_run(self, pipeline: str, settings_hash: str) -> int:
        cur = self.execute(
            "INSERT INTO runs(pipeline, settings_hash, started, status) VALUES (?,?,?,?)",
            (pipeline, settings_hash, time.time(), "running"),
        )
        return int(cur.lastrowid)

    def mark_interrupted(self) -> int:
        """Runs still marked ``running`` were killed (call while holding the root's lock). Returns how many."""
        cur = self.execute("UPDATE runs SET status='interrupted' WHERE status='running'")
        return cur.rowcount

    def finish_run(self, run_id: int, status: str, stats: dict[str, Any]) -> None:
        self.execute(
            "UPDATE runs SET finished=?, status=?, stats=? WHERE id=?",
            (time.time(), status, json.dumps(stats), run_id),
        )

    # --- posts (resume) ----------------------------------------------------------------
    def post_seen(self, source: str, post_id: str) -> bool:
        """Whether a source need not fetch this post: met before, or forgotten (tombstone)."""
        if self.query("SELECT 1 FROM posts_seen WHERE source=? AND post_id=?", (source, post_id)):
            return True
        return self.has_tombstones() and self.tombstoned([self.keyring.post(post_id)])

    # --- tombstones (selfiescope forget) -------------------------------------------------
    def has_tombstones(self) -> bool:
        return bool(self.query("SELECT 1 FROM tombstones LIMIT 1"))

    def tombstoned(self, keys: list[str]) -> bool:
        if not keys:
            return False
        marks = ",".join("?" * len(keys))
        return bool(self.query(f"SELECT 1 FROM tombstones WHERE key IN ({marks}) LIMIT 1", tuple(keys)))

    def mark_post(self, source: str, post_id: str, job: str = "", label: str = "") -> None:
        self.execute(
            "INSERT OR IGNORE INTO posts_seen(source, post_id, job, label, at) VALUES (?,?,?,?,?)",
            (source, post_id, _text(job), label, time.time()),
        )

    def reject_post(self, source: str, post_id: str, job: str, label: str, code: str, reason: str,
                    run_id: int | None = None) -> None:
        """A post a source decided against before it had an image (gone, too large): a rejection
        row with its reason (``stats``, the card) and done for good, in one transaction."""
        now = time.time()
        with self.transaction() as db:
            db.execute(
                "INSERT INTO rejections(content_hash, source, job, post_id, label, rejected_by, reject_code, reason,"
                " run_id, at) VALUES (NULL,?,?,?,?,?,?,?,?,?)",
                (source, _text(job), post_id, label, source, code, _text(reason), run_id, now),
            )
            db.execute("INSERT OR IGNORE INTO posts_seen(source, post_id, job, label, at) VALUES (?,?,?,?,?)",
                       (source, post_id, _text(job), label, now))

    # --- images ------------------------------------------------------------------------
    def get_image(self, content_hash: str) -> sqlite3.Row | None:
        rows = self.query("SELECT * FROM images WHERE content_hash=?", (content_hash,))
        return rows[0] if rows else None

    def is_stored(self, content_hash: str, before_run: int | None = None) -> bool:
        """Whether these bytes are in the dataset (stored by a run before ``before_run``).

        An image accepted by a chain that stores nothing has no location: it is not stored.
        """
        sql = "SELECT 1 FROM images WHERE content_hash=? AND decision='accepted' AND location IS NOT NULL"
        if before_run is None:
            return bool(self.query(sql, (content_hash,)))
        return bool(self.query(sql + " AND (run_id IS NULL OR run_id < ?)", (content_hash, before_run)))

    def stored_count(self, source: str, job: str, label: str) -> int:
        """Images stored for one job (a per-job limit counts them, so a rerun finishes the job)."""
        rows = self.query(
            "SELECT COUNT(*) n FROM images WHERE decision='accepted' AND location IS NOT NULL"
            " AND source=? AND job=? AND label=?",
            (source, job, label),
        )
        return int(rows[0]["n"])

    def record(self, event: ImageEvent, run_id: int | None = None) -> None:
        """Record the outcome for an image (upsert on content hash).

        A stored image is never downgraded by a later rejection of the same bytes (e.g.
        the copy met again is rejected as a duplicate of itself); rejections are also
        appended to ``rejections`` so every decision is kept. A failure is not a decision:
        it goes to ``failures`` only, and the image stays free to be processed again.
        """
        o = event.origin
        scrub_origin(o, self.keyring)  # a no-op after the engine's gate; a guard for direct callers
        extra = describe_extra(o.extra)
        now = time.time()
        if event.decision is Decision.FAILED:
            self.execute(
                "INSERT INTO failures(content_hash, source, job, post_id, origin_path, label, step, code, reason,"
                " run_id, at) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (event.content_hash, o.source, _text(o.job), o.post_id, _text(o.path), event.label,
                 event.rejected_by, event.reject_code, _text(event.reject_reason), run_id, now),
            )
            return
        face_box, face_boxes = face_columns(event.faces)
        row = dict(
            content_hash=event.content_hash, id=event.id, source=o.source, job=_text(o.job),
            post_id=o.post_id, post_url=redact_url(o.post_url), image_url=redact_url(o.image_url),
            origin_path=_text(o.path),
            label=event.label, phash=event.phash, phash_centre=event.phash_centre, format=event.format,
            width=event.width, height=event.height, size=event.size, face_box=face_box, face_boxes=face_boxes,
            face_area=event.face_area, n_faces=len(event.faces), face_detector=event.face_detector,
            decision=event.decision.value, rejected_by=event.rejected_by,
            reject_code=event.reject_code, reason=_text(event.reject_reason), location=event.location,
            run_id=run_id, first_seen=now, updated=now,
            owner=extra.get("owner"), owner_id=extra.get("owner_id"),
            caption=extra.get("caption"), taken_at=_number(extra.get("taken_at")),
            notes=json_notes(event.notes) if event.decision is Decision.ACCEPTED else None,
        )
        cols = ", ".join(row)
        marks = ", ".join(f":{k}" for k in row)
        updates = ", ".join(f"{k}=excluded.{k}" for k in row if k not in ("content_hash", "first_seen"))
        with self._lock:
            self._db.execute("BEGIN")
            try:
                if event.decision.value == "rejected":
                    self._db.execute(
                        "INSERT INTO rejections(content_hash, source, job, post_id, label, rejected_by,"
                        " reject_code, reason, run_id, at, origin_path) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                        (event.content_hash, o.source, row["job"], o.post_id, event.label,
                         event.rejected_by, event.reject_code, row["reason"], run_id, now, row["origin_path"]),
                    )
                self._db.execute(
                    f"INSERT INTO images({cols}) VALUES ({marks}) ON CONFLICT(content_hash) DO UPDATE SET"
                    f" {updates} WHERE images.decision != 'accepted' OR images.location IS NULL",
                    row,
                )
                if o.post_id and (event.decision is Decision.REJECTED or event.location is not None):
                    self._db.execute(
                        "INSERT OR IGNORE INTO posts_seen(source, post_id, job, label, at) VALUES (?,?,?,?,?)",
                        (o.source, o.post_id, row["job"], event.label, now),
                    )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.rollback_if_open()
                raise

    def accepted(self, label: str | None = None) -> Iterator[sqlite3.Row]:
        """Stored images (accepted, with a location), oldest first."""
        sql = "SELECT * FROM images WHERE decision='accepted' AND location IS NOT NULL"
        params: tuple[Any, ...] = ()
        if label:
            sql += " AND label=?"
            params = (label,)
        yield from self.query(sql + " ORDER BY first_seen", params)

    def counts(self) -> dict[str, int]:
        rows = self.query("SELECT decision, COUNT(*) n FROM images GROUP BY decision")
        return {r["decision"]: r["n"] for r in rows}

    # --- feature cache -----------------------------------------------------------------
    def get_features(self, wanted: "Collection[tuple[str, str, str]]") -> dict[tuple[str, str, str], dict[str, float]]:
        """Cached feature values for each wanted ``(content hash, extractor, version)`` found.

        One query per extractor name (an index range), filtered here: a training set asks for
        every image at once, which is far faster than a query per image.
        """
        out: dict[tuple[str, str, str], dict[str, float]] = {}
        keys = set(wanted)
        for extractor in sorted({k[1] for k in keys}):
            for rec in self.query("SELECT content_hash, extractor, version, data FROM features WHERE extractor=?",
                                  (extractor,)):
                key = (rec["content_hash"], rec["extractor"], rec["version"])
                if key in keys:
                    out[key] = json.loads(rec["data"])
        return out

    def put_features(self, rows: "Iterable[tuple[str, str, str, dict[str, float]]]") -> None:
        """Cache ``(content hash, extractor, version, values)`` rows, in one transaction."""
        batch = [(h, e, v, json.dumps(data)) for h, e, v, data in rows]
        if batch:
            self.executemany(
                "INSERT OR REPLACE INTO features(content_hash, extractor, version, data) VALUES (?,?,?,?)", batch
            )

    # --- what a plugin may read of the images (dedup's index) ----------------------------
    def stored_phashes(self, *, count_only: bool = False) -> Any:
        """``(content hash, phash hex, label)`` of every stored image with a perceptual hash
        (oldest first), or with ``count_only`` how many there are."""
        where = "FROM images WHERE decision='accepted' AND phash IS NOT NULL AND location IS NOT NULL"
        if count_only:
            return int(self.query(f"SELECT COUNT(*) {where}")[0][0])
        return [tuple(r) for r in self.query(f"SELECT content_hash, phash, label {where} ORDER BY first_seen")]

    def accepted_unstored(self) -> list[str]:
        """Content hashes accepted by a chain that stored nothing (no location)."""
        return [r[0] for r in self.query(
            "SELECT content_hash FROM images WHERE decision='accepted' AND location IS NULL")]
