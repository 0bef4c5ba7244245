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
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ...core.errors import UsageError
from ...core import quarantine as quarantined
from ...core.components import Storage, StoredImage
from ...core.app import App
from ...core.intents import sweep
from ...core.manifest import Manifest
from ...core.manifest_io import writable
from ...core.plugin_state import forget_content
from ...plugins.decode import EXTENSIONS
from ...plugins.store import STORED_SHA256
from .forget import complete_pending, pending_count

QUARANTINE = quarantined.QUARANTINE
LINK = "a link, not a stored file: left alone"
# The ids the store step writes: 16 hex digits of the content hash, or <source>-<post>-<8 hex digits>.
OUR_ID = re.compile(r"^(?:[0-9a-f]{16}|[A-Za-z0-9][A-Za-z0-9_-]*-[0-9a-f]{8})$")
OUR_EXTENSIONS = {*EXTENSIONS.values(), "bin"}


class FsckError(UsageError):
    """A check that cannot be made (no dataset, a read-only root to repair): phrased for the user."""


@dataclass
class Finding:
    kind: str  # orphan | missing | mismatch | unreadable | unknown | link | failed
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
    quarantined: int = 0  # files in the quarantine folder (fsck --repair moved them there)

    @property
    def problems(self) -> list[Finding]:
        """What is still wrong (unknown files and links no row names are not ours to judge)."""
        return [f for f in self.findings if not f.repaired and not (f.kind in ("unknown", "link") and not f.content_hash)]

    @property
    def ok(self) -> bool:
        """No disagreement left, and nothing left for --repair (a forget half done, a killed
        run's unrecorded writes)."""
        return not self.problems and not any(self.pending.values())

    def as_dict(self) -> dict[str, Any]:
        return {"root": self.root, "ok": self.ok, "rows": self.rows, "stored": self.stored,
                "quarantined": self.quarantined,
                "unverifiable": self.unverifiable, "repair": self.repair, "finished": self.finished,
                "pending": self.pending, "findings": [asdict(f) for f in self.findings]}


def ours(stored: StoredImage) -> bool:
    """Whether a listed file has a name the store step writes (so fsck may judge it)."""
    name = stored.location.rsplit("/", 1)[-1]
    stem, _, ext = name.rpartition(".")
    return stored.location.count("/") == 1 and ext in OUR_EXTENSIONS and bool(OUR_ID.match(stem))


def expected_hash(row: Any) -> str | None:
    """The sha256 the stored bytes must have, or None where it was never recorded (or the
    row's notes cannot be read)."""
    try:
        notes = json.loads(row["notes"]) if row["notes"] else {}
    except (ValueError, TypeError):
        return None
    if not isinstance(notes, dict):
        notes = {}
    if isinstance(notes.get(STORED_SHA256), str):
        return str(notes[STORED_SHA256])
    if notes.get("metadata_removed"):
        return None  # a stripped copy from before its hash was kept
    return str(row["content_hash"])


async def quarantine(storage: Storage, root: Path, stored: StoredImage, content_hash: str | None = None) -> str:
    """Move a stored image to the quarantine folder: copy, verify the copy, then delete."""
    data = await storage.read(stored)
    target = root / QUARANTINE / stored.location
    target.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    while target.exists() and target.read_bytes() != data:  # never over another file
        n += 1
        target = target.with_name(f"{Path(stored.location).stem}-{n}{Path(stored.location).suffix}")
    if not target.exists():
        quarantined.replace_synced(target, data)
    if target.read_bytes() != data:
        raise OSError(f"the quarantined copy {target} does not read back the same; the stored file was kept")
    quarantined.record(root, target, stored.location, hashlib.sha256(data).hexdigest(), content_hash)
    await storage.delete(stored)
    return f"moved to {target.relative_to(root)}"


def drop_row(manifest: Manifest, row: Any) -> None:
    """Remove an image's row so a rerun fetches it again (its post too, when nothing of it stays)."""
    with manifest.transaction() as db:
        db.execute("DELETE FROM images WHERE content_hash=?", (row["content_hash"],))
        # Plugins' rows of it go too (dedup's hash index would call the refetched copy a duplicate).
        forget_content(db, "?", (row["content_hash"],))
        if row["post_id"] and not db.execute(
            "SELECT 1 FROM images WHERE post_id=? AND source=? AND decision='accepted' LIMIT 1",
            (row["post_id"], row["source"]),
        ).fetchone():
            db.execute("DELETE FROM posts_seen WHERE source=? AND post_id=?", (row["source"], row["post_id"]))


def is_link(root: Path, location: str) -> bool:
    """Whether a stored location (or its label folder) under the root is a symbolic link."""
    path = root / location
    return path.is_symlink() or path.parent.is_symlink()


async def check(manifest: Manifest, storage: Storage, root: Path, *, repair: bool) -> FsckResult:
    """Compare storage with the manifest (and mend with ``repair``) on an open manifest and storage.
    One entry that cannot be checked or mended is reported and the others still are."""
    result = FsckResult(str(root), repair=repair)
    if repair:
        try:
            result.finished["killed_writes_removed"] = await sweep(manifest, storage)
        except Exception as exc:  # noqa: BLE001 - reported; the rest is still checked
            result.findings.append(Finding("failed", "(unrecorded writes)", f"not removed: {type(exc).__name__}: {exc}"))
        if n := pending_count(manifest):
            try:
                await complete_pending(manifest, storage)
                result.finished["forget_entries"] = n
            except Exception as exc:  # noqa: BLE001
                result.findings.append(Finding("failed", "(interrupted forget)", f"not finished: {type(exc).__name__}: {exc}"))
    result.pending = {"forget_entries": pending_count(manifest),
                      "unrecorded_writes": manifest.query("SELECT COUNT(*) FROM store_intents")[0][0]}
    if repair and not any(result.pending.values()):
        result.pending = {}
    forgetting = {r[0] for r in manifest.query("SELECT location FROM forget_pending WHERE location IS NOT NULL")}
    rows = {r["location"]: r for r in manifest.query(
        "SELECT content_hash, id, label, location, notes, post_id, source FROM images"
        " WHERE decision='accepted' AND location IS NOT NULL")}
    listed = await asyncio.to_thread(lambda: list(storage.iterate()))
    result.rows = len(rows)
    for stored in listed:
        if is_link(root, stored.location):
            if stored.location not in rows:
                result.findings.append(Finding("link", stored.location, LINK))
            continue
        result.stored += 1
        if stored.location in rows or stored.location in forgetting:
            continue
        if not ours(stored):
            result.findings.append(Finding("unknown", stored.location, "not a name selfiescope writes: left alone"))
            continue
        finding = Finding("orphan", stored.location, "stored, but no manifest row names it")
        if repair:
            try:
                finding.repaired = await quarantine(storage, root, stored)
            except Exception as exc:  # noqa: BLE001 - reported; the rest is still mended
                finding.detail += f"; not quarantined: {type(exc).__name__}: {exc}"
        result.findings.append(finding)
    for location, row in sorted(rows.items()):
        if location in forgetting:
            continue
        if is_link(root, location):
            result.findings.append(Finding("link", location, f"the manifest row's stored file is {LINK}",
                                           row["content_hash"]))
            continue
        try:
            await _check_row(manifest, storage, root, row, result, repair=repair)
        except Exception as exc:  # noqa: BLE001
            result.findings.append(Finding("failed", location, f"{type(exc).__name__}: {exc}", row["content_hash"]))
    result.quarantined = len(quarantined.files(root))
    if repair:  # the counts say what is there now
        result.rows -= sum(1 for f in result.findings if f.repaired and f.kind in ("missing", "mismatch"))
        result.stored -= sum(1 for f in result.findings if f.repaired and f.kind in ("orphan", "mismatch"))
    return result


async def _check_row(manifest: Manifest, storage: Storage, root: Path, row: Any, result: FsckResult, *,
                     repair: bool) -> None:
    location = row["location"]
    stored = StoredImage(row["id"] or Path(location).stem, row["label"] or "", location, row["content_hash"])
    try:
        data = await storage.read(stored)
    except FileNotFoundError:
        finding = Finding("missing", location, "the manifest row's stored file is gone", row["content_hash"])
    except Exception as exc:  # noqa: BLE001 - any backend error: reported, never repaired
        result.findings.append(Finding("unreadable", location, f"{type(exc).__name__}: {exc}", row["content_hash"]))
        return
    else:
        want = expected_hash(row)
        if want is None:
            result.unverifiable += 1
            return
        if hashlib.sha256(data).hexdigest() == want:
            return
        finding = Finding("mismatch", location, "the stored bytes are not the ones recorded", row["content_hash"])
    if repair:
        try:
            moved = await quarantine(storage, root, stored, row["content_hash"]) + "; " \
                if finding.kind == "mismatch" else ""
            drop_row(manifest, row)
            finding.repaired = moved + "row removed: a rerun fetches it again"
        except Exception as exc:  # noqa: BLE001
            finding.detail += f"; not mended: {type(exc).__name__}: {exc}"
    result.findings.append(finding)


async def fsck(app: App, *, repair: bool = False) -> FsckResult:
    """``selfiescope fsck``: open the dataset of ``app.settings`` and check (or repair) it."""
    settings = app.settings
    root = Path(settings.storage.root)
    if not (root / "manifest.sqlite").is_file():
        raise FsckError(f"no dataset at {root}: {root / 'manifest.sqlite'} does not exist")
    can_write = writable(root)
    if repair and not can_write:
        raise FsckError(f"{root} is read-only: fsck can check it, but --repair needs to write there; nothing was changed")
    # No run may write while files and rows are compared (its in-flight images would look like orphans).
    lock = await asyncio.to_thread(app.root_lock().acquire) if can_write else None
    try:
        manifest = Manifest.at_root(root) if repair else Manifest.for_reading(root)
        try:
            storage = app.storage_backend(manifest, "fsck")
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
