"""``selfiescope forget``: honour a removal request everywhere the dataset keeps an image.

A request names posts (shortcode or URL), owners (user names: matched through their
pseudonym), images (id, content hash, a stored file or the original file) or labels.
Everything matched goes: the stored files (through the storage backend), the manifest
rows (``images``, ``rejections``, ``features``, ``posts_seen``, and every row of a
plugin's own tables that names the image: dedup's hash index and label conflicts, a third
party's, see :func:`selfiescope.core.plugin_state.forget_content`), and a tombstone is recorded per image, post and owner: a keyed hash, so
the manifest no longer says what was there, yet later scrapes and imports skip it.

Crash safety: the tombstones and a to-do list (``forget_pending``) are committed in one
transaction before anything is deleted; then the files go; then, in one transaction, the
rows and the to-do list. A forget that is interrupted anywhere leaves a to-do list that
the next ``forget`` (or the next run) finishes, so files without rows or rows without
files never outlive a rerun, and a forgotten image can never be collected again meanwhile.

Each forgotten image also leaves its perceptual hashes, sealed under the dataset key
(:mod:`selfiescope.core.likeness`): a re-encoded, resized, mirrored, converted or slightly
cropped copy (whatever dedup would call the same photo) is refused too.

A dry run reads the manifest read-only and takes no lock: it creates, changes and removes
nothing under the storage root (not even the dataset key).
"""

from __future__ import annotations

import asyncio

import hashlib
import json
import logging
import re
import sqlite3
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ...core.errors import EXIT_FAILED, EXIT_USAGE, UsageError
from ...core.components import Storage, StoredImage
from ...core.intents import sweep
from ...core.app import App
from ...core.likeness import likeness_tombstones
from ...core.manifest import Manifest
from ...core.manifest_io import writable
from ...core.manifest_readonly import ManifestUnreadable
from ...core.plugin_state import forget_content
from ...core import quarantine as quarantined
from ...core.privacy import KeyMissing, normalise_owner, post_code
from ...core.text import printable
from ...exits import RUN_ERRNOS
from ...core.settings import Settings, TrainPipeline
from ...plugins.store import STORED_SHA256
from .card import refresh_card
from .reviewed import remove_thumbnails

log = logging.getLogger("selfiescope.forget")
TRAINED_ON = "trained_on.txt"  # beside model.txt: one content hash per line
ROW_TABLES = ("images", "rejections", "features", "posts_seen", "reviews")  # core's; plugins' tables are added by name
QUARANTINED = "quarantined copies"  # fsck's quarantine folder
_COLUMNS = "content_hash, id, label, location, decision, post_id, source"
_HEX = re.compile(r"^[0-9a-f]{12,64}$")
_COPY_CODES = "('duplicate', 'near_duplicate', 'label_conflict')"  # dedup's rejections of a copy


class ForgetError(UsageError):
    """A request that cannot be carried out (no dataset, no key): phrased for the user.
    ``run_failed``: the machine failed it (a full disk), not the request (exit 1, not 2)."""

    def __init__(self, message: str, *, run_failed: bool = False) -> None:
        super().__init__(message)
        self.run_failed = run_failed

    @property  # type: ignore[override]
    def exit_code(self) -> int:
        return EXIT_FAILED if self.run_failed else EXIT_USAGE


@dataclass
class ForgetRequest:
    posts: list[str] = field(default_factory=list)
    owners: list[str] = field(default_factory=list)
    images: list[str] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)

    def empty(self) -> bool:
        return not (self.posts or self.owners or self.images or self.labels)


@dataclass(frozen=True)
class Match:
    content_hash: str
    id: str | None
    label: str | None
    location: str | None
    decision: str
    post_id: str | None
    source: str | None


@dataclass
class ModelUse:
    path: str
    pipeline: str | None
    images: int  # how many of the forgotten images it was trained on

    @property
    def retrain(self) -> str:
        return f"selfiescope train {self.pipeline}" if self.pipeline else "selfiescope train PIPELINE"


@dataclass
class ForgetPlan:
    images: dict[str, Match] = field(default_factory=dict)  # by content hash
    posts: set[str] = field(default_factory=set)  # post ids whose posts_seen rows go
    tombstones: dict[str, str] = field(default_factory=dict)  # key -> kind
    loose: set[str] = field(default_factory=set)  # content hashes with no row, only a quarantined copy

    @property
    def empty(self) -> bool:
        return not self.images and not self.posts and not self.loose


@dataclass
class ForgetResult:
    dry_run: bool
    images: list[Match]
    posts: int
    removed: dict[str, int]
    tombstones: int
    models: list[ModelUse]
    resumed: int = 0  # to-do entries of an interrupted forget finished first
    unknown_owner: int | None = None  # with --owner: stored images whose owner was never recorded
    stale_runs: int = 0  # runs left "running" by a killed process, marked interrupted
    quarantined: list[str] = field(default_factory=list)  # copies in fsck's quarantine folder (that go, or went)

    @property
    def removed_anything(self) -> bool:
        return bool(self.images or self.posts or self.resumed or self.quarantined or self.removed.get(QUARANTINED))

    def as_dict(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "matched": {"images": len(self.images), "posts": self.posts,
                        "stored_files": sum(1 for m in self.images if m.location)},
            "images": [{"id": m.id, "label": m.label, "location": m.location, "decision": m.decision}
                       for m in self.images],
            "removed": self.removed,
            "tombstones": self.tombstones,
            "resumed": self.resumed,
            "stored_without_owner": self.unknown_owner,
            "stale_runs_marked_interrupted": self.stale_runs,
            "models": [{**asdict(u), "retrain": u.retrain} for u in self.models],
            "quarantined_copies": self.quarantined,
        }


# --- matching ----------------------------------------------------------------------------
def _rows(manifest: Manifest, where: str, params: tuple[Any, ...]) -> list[Match]:
    # Values as the manifest stores them: undecodable bytes of a name (a non-UTF-8 argument)
    # are kept as visible escapes there, and SQLite refuses the raw surrogates.
    params = tuple(printable(p) if isinstance(p, str) else p for p in params)
    return [Match(*tuple(r)) for r in manifest.query(f"SELECT {_COLUMNS} FROM images WHERE {where}", params)]


def _image_matches(manifest: Manifest, value: str) -> list[Match]:
    """An id, a content hash (or a 12+ digit prefix), a stored file, or an original file."""
    found = _rows(manifest, "id=? OR content_hash=?", (value, value.lower()))
    if not found and _HEX.match(value.lower()):
        found = _rows(manifest, "content_hash LIKE ?", (value.lower() + "%",))
    path = Path(value).expanduser() if "\0" not in value else None
    try:
        if path is None or not path.is_file():
            return found
        resolved = path.resolve()
        root = manifest.root.resolve()
        if resolved.is_relative_to(root):
            found += _rows(manifest, "location=?", (resolved.relative_to(root).as_posix(),))
        found += _rows(manifest, "origin_path IN (?, ?, ?)", (str(path), str(path.absolute()), str(resolved)))
        digest = hashlib.sha256(resolved.read_bytes()).hexdigest()
    except OSError as exc:
        raise ForgetError(f"--image {printable(value)}: cannot read it: {exc.strerror or exc}") from None
    found += _rows(manifest, "content_hash=?", (digest,))
    return found


def _named_hash(value: str) -> str | None:
    """The content hash an --image value names outright: a full sha256, or a file's bytes."""
    if re.fullmatch(r"[0-9a-fA-F]{64}", value):
        return value.lower()
    try:
        path = Path(value).expanduser()
        return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None
    except (OSError, ValueError):
        return None


def _owner_pseudonym(manifest: Manifest, name: str) -> str | None:
    """The owner's pseudonym; None when the dataset has no key yet (read-only: nobody was
    pseudonymised, so no row can name them)."""
    try:
        return manifest.keyring.owner(name)
    except KeyMissing:
        return None


def stored_without_owner(manifest: Manifest) -> int:
    return int(manifest.query(
        "SELECT COUNT(*) FROM images WHERE decision='accepted' AND location IS NOT NULL AND owner IS NULL")[0][0])


def plan_forget(manifest: Manifest, request: ForgetRequest, *, tombstones: bool = True) -> ForgetPlan:
    """What a request removes. ``tombstones``: also compute the keys to record (needs the
    dataset key; a dry run leaves them out and so never creates it)."""
    keyring = manifest.keyring
    plan = ForgetPlan()
    whole_posts: set[str] = set()  # every image of these posts goes

    def add(matches: list[Match]) -> None:
        for m in matches:
            plan.images.setdefault(m.content_hash, m)

    for value in request.posts:
        code = post_code(value)
        # By id (indexed); a URL whose id is not the source's post id is matched by URL.
        add(_rows(manifest, "post_id=?", (code,)) or _rows(manifest, "post_url=?", (value,)))
        whole_posts.add(code)
        if manifest.query("SELECT 1 FROM posts_seen WHERE post_id=? LIMIT 1", (printable(code),)):
            plan.posts.add(printable(code))
    for name in request.owners:
        if not normalise_owner(name) or (pseudonym := _owner_pseudonym(manifest, name)) is None:
            continue
        matches = _rows(manifest, "owner=?", (pseudonym,))
        add(matches)
        whole_posts.update(m.post_id for m in matches if m.post_id)
        plan.tombstones[pseudonym] = "owner"
    for value in request.images:
        add(_image_matches(manifest, value))
        if (digest := _named_hash(value)) and digest not in plan.images and quarantined.copies(manifest.root, [digest], []):
            plan.loose.add(digest)
    for label in request.labels:
        add(_rows(manifest, "label=?", (label,)))
    # Copies dedup turned away as this photo (their rows name it by its hash's first 16 digits)
    # are the same photo: their rows, pHashes and rejections go too.
    for content_hash in list(plan.images):
        add(_rows(manifest, f"decision='rejected' AND reject_code IN {_COPY_CODES} AND instr(reason, ?) > 0",
                  (content_hash[:16],)))
    # A post whose every image goes is forgotten as a whole: its posts_seen row goes and a
    # tombstone keeps sources from downloading it again.
    for post_id in {m.post_id for m in plan.images.values() if m.post_id} - whole_posts:
        kept = manifest.query("SELECT content_hash FROM images WHERE post_id=?", (post_id,))
        if all(r[0] in plan.images for r in kept):
            whole_posts.add(post_id)
    for post_id in whole_posts:
        if manifest.query("SELECT 1 FROM posts_seen WHERE post_id=? LIMIT 1", (printable(post_id),)):
            plan.posts.add(printable(post_id))
    if not tombstones:
        plan.tombstones.clear()
        return plan
    for post_id in whole_posts:
        plan.tombstones[keyring.post(post_id)] = "post"
    for content_hash in (*plan.images, *plan.loose):
        plan.tombstones[keyring.content(content_hash)] = "content"
    for key in likeness_tombstones(manifest, sorted(plan.images)):
        plan.tombstones[key] = "phash"
    return plan


# --- models ------------------------------------------------------------------------------
def record_training_set(model_dir: Path, content_hashes: list[str]) -> None:
    """Write ``trained_on.txt`` (the content hashes a model was trained on) beside model.txt."""
    (model_dir / TRAINED_ON).write_text("".join(f"{h}\n" for h in sorted(set(content_hashes))))


def register_model(model_dir: Path, dataset_root: Path, pipeline: str, n_images: int) -> None:
    """Let the dataset know the model, so ``forget`` finds it wherever it was written."""
    if not (Path(dataset_root) / "manifest.sqlite").exists():
        return
    manifest = Manifest.at_root(dataset_root)
    try:
        manifest.execute(
            "INSERT OR REPLACE INTO models(path, pipeline, trained, images) VALUES (?,?,?,?)",
            (str(Path(model_dir).resolve()), pipeline, time.time(), n_images),
        )
    finally:
        manifest.close()


def models_using(manifest: Manifest, settings: Settings | None, content_hashes: set[str]) -> list[ModelUse]:
    """Every known model (registered, or a train pipeline's model_dir) trained on any of these."""
    candidates: dict[str, str | None] = {r["path"]: r["pipeline"] for r in manifest.query("SELECT path, pipeline FROM models")}
    for name, p in (settings.pipelines.items() if settings else []):
        if isinstance(p, TrainPipeline):
            candidates.setdefault(str(Path(p.model_dir).resolve()), name)
    uses = []
    for path, pipeline in sorted(candidates.items()):
        listing = Path(path) / TRAINED_ON
        try:
            hashes = set(listing.read_text(errors="replace").split())  # hex lines; damage only loses a match
        except OSError:
            continue
        if n := len(hashes & content_hashes):
            uses.append(ModelUse(path, pipeline, n))
    return uses


# --- carrying it out -----------------------------------------------------------------------
def _commit_intent(manifest: Manifest, plan: ForgetPlan) -> int:
    """Tombstones and the to-do list, in one transaction, before anything is deleted."""
    now = time.time()
    before = manifest.query("SELECT COUNT(*) FROM tombstones")[0][0]
    with manifest.transaction() as db:
        db.executemany("INSERT OR IGNORE INTO tombstones(key, kind, at) VALUES (?,?,?)",
                       [(k, kind, now) for k, kind in plan.tombstones.items()])
        db.executemany("INSERT OR IGNORE INTO forget_pending(kind, value, label, location, at) VALUES (?,?,?,?,?)",
                       [("content", m.content_hash, m.label, m.location, now) for m in plan.images.values()]
                       + [("content", h, None, None, now) for h in sorted(plan.loose)])
        db.executemany("INSERT OR IGNORE INTO forget_pending(kind, value, label, location, at) VALUES (?,?,?,?,?)",
                       [("post", p, None, None, now) for p in plan.posts])
    return manifest.query("SELECT COUNT(*) FROM tombstones")[0][0] - before


async def complete_pending(manifest: Manifest, storage: Storage) -> dict[str, int]:
    """Finish the to-do list: files first (idempotent), then every row in one transaction."""
    removed = dict.fromkeys(("files", *ROW_TABLES, QUARANTINED), 0)
    todo = manifest.query("SELECT value, label, location FROM forget_pending WHERE kind='content' AND location IS NOT NULL")
    for row in todo:
        stored = StoredImage(Path(row["location"]).stem, row["label"] or "", row["location"], row["value"])
        removed["files"] += bool(await storage.delete(stored))
    removed[QUARANTINED] = quarantined.remove(manifest.root, pending_copies(manifest))
    forgotten = [r[0] for r in manifest.query("SELECT value FROM forget_pending WHERE kind='content'")]
    remove_thumbnails(manifest.root, forgotten)
    pending_hashes = "SELECT value FROM forget_pending WHERE kind='content'"
    pending_posts = "SELECT value FROM forget_pending WHERE kind='post'"
    with manifest.transaction() as db:
        for table in ("images", "rejections", "features", "reviews"):
            removed[table] = db.execute(f"DELETE FROM {table} WHERE content_hash IN ({pending_hashes})").rowcount
        removed["rejections"] += db.execute(f"DELETE FROM rejections WHERE post_id IN ({pending_posts})").rowcount
        removed |= forget_content(db, pending_hashes)  # every plugin's rows naming these images
        removed["posts_seen"] = db.execute(f"DELETE FROM posts_seen WHERE post_id IN ({pending_posts})").rowcount
        db.execute("DELETE FROM forget_pending")
    # again once the rows are gone: a review app in another process may have made one meanwhile
    # (it checks that the row still exists after writing, so one of the two removals sees it)
    remove_thumbnails(manifest.root, forgotten)
    # SQLite keeps fragments of deleted rows in reorganised pages and older versions of pages in
    # its write-ahead log: the file is rewritten and the log emptied, so no byte of them stays
    if not (manifest.vacuum() & manifest.checkpoint()):
        log.warning("another process is using %s: fragments of the forgotten rows may stay in it until "
                    "the next forget runs with no other process reading it",
                    printable(manifest.path))
    return removed


def quarantined_copies(manifest: Manifest, content_hashes: set[str], locations: set[str]) -> list[Path]:
    """Copies of these images that ``fsck --repair`` moved to its quarantine folder."""
    digests = set()
    for chunk in (sorted(content_hashes)[i:i + 500] for i in range(0, len(content_hashes), 500)):
        marks = ",".join("?" * len(chunk))
        for row in manifest.query(f"SELECT notes FROM images WHERE content_hash IN ({marks})", tuple(chunk)):
            try:
                notes = json.loads(row[0]) if row[0] else {}
            except ValueError:
                continue
            if isinstance(notes, dict) and isinstance(notes.get(STORED_SHA256), str):
                digests.add(notes[STORED_SHA256])
    return quarantined.copies(manifest.root, content_hashes, locations, digests)


def pending_copies(manifest: Manifest) -> list[Path]:
    rows = manifest.query("SELECT value, location FROM forget_pending WHERE kind='content'")
    return quarantined_copies(manifest, {r[0] for r in rows}, {r[1] for r in rows if r[1]})


def pending_count(manifest: Manifest) -> int:
    return int(manifest.query("SELECT COUNT(*) FROM forget_pending")[0][0])


async def forget_with(
    manifest: Manifest, storage: Storage | None, request: ForgetRequest, *, dry_run: bool = False,
    settings: Settings | None = None,
) -> ForgetResult:
    """Plan and (unless ``dry_run``) carry out a request on an open manifest and storage
    (``storage`` may be None for a dry run, which touches no file)."""
    resumed = 0
    removed = dict.fromkeys(("files", *ROW_TABLES, QUARANTINED), 0)
    if dry_run:
        resumed = pending_count(manifest)
    elif resumed := pending_count(manifest):
        log.warning("finishing an interrupted forget (%d entries) first", resumed)
        assert storage is not None
        removed = await complete_pending(manifest, storage)
    plan = plan_forget(manifest, request, tombstones=not dry_run)
    models = models_using(manifest, settings, set(plan.images))
    new_tombstones = 0
    if not dry_run and not plan.empty:
        assert storage is not None
        new_tombstones = _commit_intent(manifest, plan)
        for key, n in (await complete_pending(manifest, storage)).items():
            removed[key] = removed.get(key, 0) + n
    elif not dry_run and plan.tombstones:  # an owner with nothing stored yet: still never collect them
        new_tombstones = _commit_intent(manifest, plan)
    matches = sorted(plan.images.values(), key=lambda m: (m.label or "", m.id or m.content_hash))
    unknown = stored_without_owner(manifest) if request.owners else None
    result = ForgetResult(dry_run, matches, len(plan.posts), removed, new_tombstones, models, resumed, unknown)
    if dry_run:
        copies = quarantined_copies(manifest, set(plan.images) | plan.loose,
                                    {m.location for m in plan.images.values() if m.location})
        if resumed:
            copies += pending_copies(manifest)
        result.quarantined = sorted({p.relative_to(manifest.root).as_posix() for p in copies})
    return result


def _open_for_dry_run(root: Path) -> Manifest:
    try:
        return Manifest.read_only(root)
    except ManifestUnreadable as exc:
        raise ForgetError(str(exc)) from None


async def forget(app: App, request: ForgetRequest, *, dry_run: bool = False) -> ForgetResult:
    """``selfiescope forget``: open the dataset of ``app.settings``, forget, refresh the card.

    A dry run opens the manifest read-only, takes no lock and opens no storage backend
    (whose opening tidies temp files): it writes nothing anywhere."""
    settings = app.settings
    root = Path(settings.storage.root)
    if not (root / "manifest.sqlite").is_file():
        raise ForgetError(f"no dataset at {printable(root)}: {printable(root / 'manifest.sqlite')} does not exist")
    if dry_run:
        manifest = _open_for_dry_run(root)
        try:
            return await forget_with(manifest, None, request, dry_run=True, settings=settings)
        finally:
            manifest.close()
    if not writable(root):
        raise ForgetError(f"{printable(root)} is read-only (or not writable by this user): nothing was forgotten (nothing was removed); "
                          "forget needs to write there (--dry-run lists what would go)")
    try:
        lock = await asyncio.to_thread(app.root_lock().acquire)  # one writer
    except OSError as exc:
        raise ForgetError(f"cannot write to the dataset at {printable(root)}: {exc.strerror or exc}; nothing was removed",
                          run_failed=exc.errno in RUN_ERRNOS) from None
    try:
        manifest = Manifest.at_root(root)
    except BaseException as exc:
        lock.release()
        if isinstance(exc, (OSError, sqlite3.Error)):
            full = getattr(exc, "errno", None) in RUN_ERRNOS or "disk is full" in str(exc)
            raise ForgetError(f"cannot write to {printable(root / 'manifest.sqlite')}: {exc}; nothing was removed",
                              run_failed=full) from None
        raise
    try:
        stale = manifest.mark_interrupted()  # the lock is ours: a run still "running" was killed
        storage = app.storage_backend(manifest, "forget")
        await storage.open()
        try:
            await sweep(manifest, storage)  # a killed run's unrecorded writes: forget may be asked for them
            result = await forget_with(manifest, storage, request, settings=settings)
        finally:
            await storage.close()
        result.stale_runs = stale
        if result.removed_anything or result.tombstones:
            refresh_card(app, manifest)
        return result
    finally:
        manifest.close()
        lock.release()
