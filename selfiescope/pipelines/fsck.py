"""``selfiescope fsck``: do storage and the manifest agree? ``--repair`` mends where they do not.

Two ways they can part, each found through the storage backend (``Storage.iterate`` lists
what is stored, ``Storage.read`` reads it back), never through paths:

- **orphan**: a stored image that no accepted row names (a write whose record was lost, a
  file of an older version). Repair moves it to ``<root>/.selfiescope-quarantine/<location>``:
  copied there, read back and compared, and only then deleted from storage. Only a file
  under the backend's layout whose name is one the ``store`` step writes
  (``<label>/<id>.<ext>``) counts; anything else is listed as ``unknown`` and left alone.
- **missing** / **mismatch**: an accepted row whose stored file is gone, or whose bytes are
  not the ones recorded (the content hash, or the stripped copy's ``stored_sha256``).
  Repair quarantines a mismatching file, then removes the row, its perceptual hashes and
  (when no other image of the post stays) the post's resume record, so a rerun of the
  same scrape or import fetches the image again.

Unfinished business is finished first with ``--repair``: an interrupted ``forget`` and the
unrecorded writes of a killed run (:mod:`selfiescope.core.intents`). Holding the root's
lock, so no run writes meanwhile; a read-only root is checked, never repaired.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..core.components import Storage, StoredImage
from ..core.context import RunContext
from ..core.intents import sweep
from ..core.lock import RootLock
from ..core.manifest import Manifest
from ..core.manifest_io import writable
from ..core.plugins import Registry, registry_for
from ..core.settings import Settings
from ..plugins.decode import EXTENSIONS
from ..plugins.store import STORED_SHA256
from .forget import complete_pending, pending_count

QUARANTINE = ".selfiescope-quarantine"
# The ids the store step writes: 16 hex digits of the content hash, or <source>-<post>-<8 hex digits>.
OUR_ID = re.compile(r"^(?:[0-9a-f]{16}|[A-Za-z0-9][A-Za-z0-9_-]*-[0-9a-f]{8})$")
OUR_EXTENSIONS = {*EXTENSIONS.values(), "bin"}


class FsckError(Exception):
    """A check that cannot be made (no dataset, a read-only root to repair): phrased for the user."""


@dataclass
class Finding:
    kind: str  # orphan | missing | mismatch | unreadable | unknown
    location: str
    detail: str = ""
    content_hash: str | None = None
    repaired: str | None = None  # what --repair did


@dataclass
class FsckResult:
    root: str
    rows: int = 0  # accepted rows checked
    stored: int = 0  # images the backend lists
    unverifiable: int = 0  # stripped copies stored before their hash was recorded: present, bytes not checked
    findings: list[Finding] = field(default_factory=list)
    finished: dict[str, int] = field(default_factory=dict)  # unfinished business completed first (--repair)
    pending: dict[str, int] = field(default_factory=dict)  # ... or left for --repair / the next run
    repair: bool = False

    @property
    def problems(self) -> list[Finding]:
        """What is still wrong (unknown files are not ours to judge)."""
        return [f for f in self.findings if f.kind != "unknown" and not f.repaired]

    @property
    def ok(self) -> bool:
        """No disagreement left, and no forget half done (its files may still be there). A
        killed run's intents are no problem in themselves: what they left shows as orphans."""
        return not self.problems and not self.pending.get("forget_entries")

    def as_dict(self) -> dict[str, Any]:
        return {"root": self.root, "ok": self.ok, "rows": self.rows, "stored": self.stored,
                "unverifiable": self.unverifiable, "repair": self.repair, "finished": self.finished,
                "pending": self.pending, "findings": [asdict(f) for f in self.findings]}


def ours(stored: StoredImage) -> bool:
    """Whether a listed file has a name the store step writes (so fsck may judge it)."""
    name = stored.location.rsplit("/", 1)[-1]
    stem, _, ext = name.rpartition(".")
    return stored.location.count("/") == 1 and ext in OUR_EXTENSIONS and bool(OUR_ID.match(stem))


def expected_hash(row: Any) -> str | None:
    """The sha256 the stored bytes must have, or None where it was never recorded."""
    notes = json.loads(row["notes"]) if row["notes"] else {}
    if notes.get(STORED_SHA256):
        return str(notes[STORED_SHA256])
    if notes.get("metadata_removed"):
        return None  # a stripped copy from before its hash was kept
    return str(row["content_hash"])


async def quarantine(storage: Storage, root: Path, stored: StoredImage) -> str:
    """Move a stored image to the quarantine folder: copy, verify the copy, then delete."""
    data = await storage.read(stored)
    target = root / QUARANTINE / stored.location
    target.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    while target.exists() and target.read_bytes() != data:  # never over another file
        n += 1
        target = target.with_name(f"{Path(stored.location).stem}-{n}{Path(stored.location).suffix}")
    if not target.exists():
        tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
        try:
            with open(tmp, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
    if target.read_bytes() != data:
        raise OSError(f"the quarantined copy {target} does not read back the same; the stored file was kept")
    await storage.delete(stored)
    return f"moved to {target.relative_to(root)}"


def drop_row(manifest: Manifest, row: Any) -> None:
    """Remove an image's row so a rerun fetches it again (its post too, when nothing of it stays)."""
    with manifest.transaction() as db:
        for table in ("images", "phashes"):
            db.execute(f"DELETE FROM {table} WHERE content_hash=?", (row["content_hash"],))
        if row["post_id"] and not db.execute(
            "SELECT 1 FROM images WHERE post_id=? AND source=? AND decision='accepted' LIMIT 1",
            (row["post_id"], row["source"]),
        ).fetchone():
            db.execute("DELETE FROM posts_seen WHERE source=? AND post_id=?", (row["source"], row["post_id"]))


async def check(manifest: Manifest, storage: Storage, root: Path, *, repair: bool) -> FsckResult:
    """Compare storage with the manifest (and mend with ``repair``) on an open manifest and storage."""
    result = FsckResult(str(root), repair=repair)
    if repair:
        result.finished["killed_writes_removed"] = await sweep(manifest, storage)
        if n := pending_count(manifest):
            await complete_pending(manifest, storage)
            result.finished["forget_entries"] = n
    else:
        result.pending = {"forget_entries": pending_count(manifest),
                          "unrecorded_writes": manifest.query("SELECT COUNT(*) FROM store_intents")[0][0]}
    forgetting = {r[0] for r in manifest.query("SELECT location FROM forget_pending WHERE location IS NOT NULL")}
    rows = {r["location"]: r for r in manifest.query(
        "SELECT content_hash, id, label, location, notes, post_id, source FROM images"
        " WHERE decision='accepted' AND location IS NOT NULL")}
    listed = await asyncio.to_thread(lambda: list(storage.iterate()))
    result.rows, result.stored = len(rows), len(listed)
    for stored in listed:
        if stored.location in rows or stored.location in forgetting:
            continue
        if not ours(stored):
            result.findings.append(Finding("unknown", stored.location, "not a name selfiescope writes: left alone"))
            continue
        finding = Finding("orphan", stored.location, "stored, but no manifest row names it")
        if repair:
            finding.repaired = await quarantine(storage, root, stored)
        result.findings.append(finding)
    for location, row in sorted(rows.items()):
        if location in forgetting:
            continue
        stored = StoredImage(row["id"] or Path(location).stem, row["label"] or "", location, row["content_hash"])
        try:
            data = await storage.read(stored)
        except FileNotFoundError:
            finding = Finding("missing", location, "the manifest row's stored file is gone", row["content_hash"])
        except Exception as exc:  # noqa: BLE001 - any backend error: reported, never repaired
            result.findings.append(Finding("unreadable", location, f"{type(exc).__name__}: {exc}", row["content_hash"]))
            continue
        else:
            want = expected_hash(row)
            if want is None:
                result.unverifiable += 1
                continue
            if hashlib.sha256(data).hexdigest() == want:
                continue
            finding = Finding("mismatch", location, "the stored bytes are not the ones recorded", row["content_hash"])
        if repair:
            moved = await quarantine(storage, root, stored) + "; " if finding.kind == "mismatch" else ""
            drop_row(manifest, row)
            finding.repaired = moved + "row removed: a rerun fetches it again"
        result.findings.append(finding)
    return result


async def fsck(settings: Settings, *, repair: bool = False, registry: Registry | None = None) -> FsckResult:
    """``selfiescope fsck``: open the dataset of ``settings`` and check (or repair) it."""
    root = Path(settings.storage.root)
    if not (root / "manifest.sqlite").is_file():
        raise FsckError(f"no dataset at {root}: {root / 'manifest.sqlite'} does not exist")
    can_write = writable(root)
    if repair and not can_write:
        raise FsckError(f"{root} is read-only: fsck can check it, but --repair needs to write there; nothing was changed")
    registry = registry or registry_for(settings)
    wait_s = settings.storage.lock_timeout_s if settings.storage.wait_for_lock else 0.0
    # No run may write while files and rows are compared (its in-flight images would look like orphans).
    lock = await asyncio.to_thread(RootLock(root, wait_s=wait_s).acquire) if can_write else None
    try:
        manifest = Manifest.at_root(root) if repair else Manifest.for_reading(root)
        try:
            storage = RunContext(settings, registry, "fsck", None, manifest).component("storage", settings.storage.backend)
            await storage.open()
            try:
                return await check(manifest, storage, root, repair=repair)
            finally:
                await storage.close()
        finally:
            manifest.close()
    finally:
        if lock is not None:
            lock.release()
