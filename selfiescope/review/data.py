"""The data layer of `selfiescope review`: the dataset as the app's pages see and change it.

No import step: the manifest is read in place (a snapshot of its columns in memory, read
again whenever the manifest changed) and image bytes come through the configured
``Storage`` backend, S3 included. Actions are in :mod:`.actions`; thumbnails in
:mod:`.thumbs`, made ahead of the grid by :mod:`.thumb_jobs`; facets and paging in
:mod:`.snapshot`, the manifest's columns read by :mod:`.snapshot_read`.
"""

from __future__ import annotations

import functools
import logging
import sqlite3
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from ..core.components import StoredImage
from ..core.face_boxes import recorded_boxes
from ..core.manifest import Manifest
from ..core.manifest_io import writable
from ..core.manifest_readonly import ManifestUnreadable
from ..core.app import App
from ..core.review_facets import ReviewFacet
from ..core.settings import TrainPipeline
from ..core.text import printable
from ..core.web import sniff_image_type
from ..pipelines.dataset_care.stored import StoredReader
from . import actions, integrity, opening, thumbs
from .thumb_jobs import ThumbnailJobs
from .model import (
    ACTIONS, SORTS, ActionResult, Detail, Facet, FacetValue, Filters, ImageMismatch, Page, ReviewBusy, ReviewError,
    ReviewRow, Tile,
)
from .probabilities import ModelProbabilities, latest_probabilities
from .snapshot import Snapshot

__all__ = [
    "ACTIONS", "SORTS", "ActionResult", "Detail", "Facet", "FacetValue", "Filters", "ImageMismatch", "Page", "ReviewBusy",
    "ReviewData",
    "ReviewError", "ReviewRow", "Tile",
]
log = logging.getLogger("selfiescope.review")
MEDIA_TYPES = {"jpeg": "image/jpeg", "jpg": "image/jpeg", "png": "image/png", "webp": "image/webp",
               "gif": "image/gif", "bmp": "image/bmp", "tiff": "image/tiff", "heif": "image/heif", "avif": "image/avif"}
MAX_LIMIT = 500
RELOAD_EVERY_S = 2.0  # the shortest time between two reads of the manifest for other processes' changes


def _media_type(fmt: str | None, data: bytes) -> str:
    if fmt and fmt.lower() in MEDIA_TYPES:
        return MEDIA_TYPES[fmt.lower()]
    return sniff_image_type(data) or "application/octet-stream"


class ReviewData:
    """One dataset (``settings.storage.root``) for the review app; safe to call from several threads."""

    def __init__(self, app: App, *, warm_thumbnails: bool = False) -> None:
        """``warm_thumbnails``: make the thumbnails of each page served, and of the page after
        it, in the background (:mod:`.thumb_jobs`), so the grid rarely waits on a decode."""
        self.app = app
        self.settings, self.registry = app.settings, app.registry
        self.root = Path(app.settings.storage.root).expanduser()
        self.display = printable(app.settings.storage.root)
        if not (self.root / "manifest.sqlite").is_file():
            raise ReviewError(f"no dataset at {self.display}: {self.display}/manifest.sqlite does not exist "
                              "(collect images first: selfiescope run)")
        # The undo of a batch must see the state it left: edits from this object go one at a time.
        self._write = threading.Lock()
        self._lock = threading.RLock()
        self._manifest: Manifest | None = None
        self._reader: StoredReader | None = None
        self._snapshot: Snapshot | None = None
        self._model: ModelProbabilities | None = None
        self._data_version: int | None = None
        self._dirty = False
        self._next_load = 0.0
        self.reload_every_s = RELOAD_EVERY_S
        self._version = 0
        self._facets: list[ReviewFacet] | None = None
        self.warm_thumbnails = warm_thumbnails
        self.thumbnail_jobs = ThumbnailJobs(self._made_thumbnail, self._keep_thumbnail,
                                            self._kept_thumbnail, lambda h: thumbs.thumb_path(self.root, h).is_file())

    def _keep_thumbnail(self, content_hash: str, data: bytes) -> bool:
        """Keep a thumbnail only of an image the manifest still holds, asked at that moment:
        a ``forget`` from another process may have removed it since the snapshot was read.
        Asked again after writing, so a forget that ran meanwhile still leaves no thumbnail
        (forget removes thumbnails after its rows are gone, too)."""
        if not self._still_held(content_hash):
            return True  # nothing to keep: not a failure of the root
        kept = thumbs.keep(self.root, content_hash, data)
        if kept and not self._still_held(content_hash):
            thumbs.thumb_path(self.root, content_hash).unlink(missing_ok=True)
        return kept

    def _still_held(self, content_hash: str) -> bool:
        try:
            return bool(self.manifest.query(
                "SELECT 1 FROM images WHERE content_hash=? AND NOT EXISTS "
                "(SELECT 1 FROM forget_pending WHERE kind='content' AND value=?)", (content_hash, content_hash)))
        except sqlite3.Error:  # an old manifest without forget_pending, opened read-only: no forget can run
            return bool(self.manifest.query("SELECT 1 FROM images WHERE content_hash=?", (content_hash,)))

    # --- opening and closing -------------------------------------------------------------
    @property
    def manifest(self) -> Manifest:
        with self._lock:
            if self._manifest is None:
                self._manifest = self._open_manifest()
            return self._manifest

    def _open_manifest(self) -> Manifest:
        try:
            with opening.tidy_failed_open(self.root / "manifest.sqlite"):
                if writable(self.root):
                    manifest = Manifest.at_root(self.root)  # additive schema only: CREATE IF NOT EXISTS, new columns
                else:
                    manifest = Manifest.read_only(self.root)
                try:
                    manifest.query("SELECT count(*) FROM images WHERE rowid < 0")  # reads the schema: a damaged file fails here
                except BaseException:
                    manifest.close()
                    raise
                return manifest
        except ManifestUnreadable as exc:
            raise ReviewError(str(exc)) from None
        except (sqlite3.Error, OSError) as exc:
            log.debug("cannot open the manifest: %s", exc)
            raise ReviewError(f"cannot read {self.display}/manifest.sqlite: "
                              f"{opening.why_unreadable(exc, self.root)}") from None

    def check(self) -> None:
        """Open the manifest now (the command's start-up check): a damaged one or a full disk
        raises :class:`ReviewError` before anything is served."""
        with self._lock:
            self.manifest

    def _storage(self) -> StoredReader:
        with self._lock:
            if self._reader is None:
                reader = StoredReader(self.app, manifest=self.manifest)
                reader.__enter__()
                self._reader = reader
            return self._reader

    def close(self) -> None:
        self.thumbnail_jobs.close()  # before the lock: a job under way may need it to end
        with self._lock:
            if self._reader is not None:
                self._reader.__exit__(None, None, None)
                self._reader = None
            if self._manifest is not None:
                self._manifest.close()
                self._manifest = None
            self._snapshot = None

    def __enter__(self) -> "ReviewData":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- what changes ----------------------------------------------------------------------
    def version(self) -> int:
        """Grows whenever what the pages show changed: this app's edits at once, another process's
        commits (a scrape adding images) when the manifest is next read (see :meth:`snapshot`)."""
        with self._lock:
            self._load_if_due()
            return self._version

    def _stale(self) -> bool:
        """Whether another process committed to the manifest since it was last read."""
        current = int(self.manifest.query("PRAGMA data_version")[0][0])
        if current != self._data_version:
            self._data_version = current
            self._dirty = True
        return self._dirty

    def _load_if_due(self) -> None:
        """Read the manifest into memory when there is no snapshot, or when another process
        changed it and the last read is old enough: at least ``reload_every_s`` and three times
        as long as that read took, so a scrape committing every image costs this app a bounded
        share of a core (its pages then lag by a few seconds)."""
        stale = self._stale()
        if self._snapshot is not None and not (stale and time.monotonic() >= self._next_load):
            return
        started = time.monotonic()
        manifest = self.manifest
        # The manifest's own lock: its connection is shared with edits, whose open transaction a
        # read on the same connection would otherwise see half done.
        with manifest._lock:
            self._model = latest_probabilities(manifest._db, self.settings)
            linked = [pair for pairs in self.app.hook.selfiescope_linked_images(manifest=manifest) for pair in pairs or ()]
            # one read transaction: its queries see one state of the file, even if another
            # process's forget rewrites it (VACUUM renumbers the rowids the read pairs up)
            in_transaction = manifest._db.in_transaction
            if not in_transaction:
                manifest._db.execute("BEGIN")
            try:
                self._snapshot = Snapshot(manifest._db, probabilities=self._model.by_hash, positive=self._model.positive,
                                          plugin_facets=self.plugin_facets(), linked=linked)
            finally:
                if not in_transaction:
                    manifest._db.execute("COMMIT")
        self._dirty = False
        took = time.monotonic() - started
        self._next_load = time.monotonic() + max(self.reload_every_s, 3 * took)
        self._version += 1

    def _changed(self, content_hashes: Sequence[str] = ()) -> None:
        """After this process's own edit: the page's version grows, and the snapshot reads those
        images' review columns again in place (an edit adds, removes or moves no image)."""
        with self._lock:
            self._version += 1
            if content_hashes and self._snapshot is not None:
                with self.manifest._lock:
                    self._snapshot.refresh(self.manifest._db, content_hashes)

    def plugin_facets(self) -> list[ReviewFacet]:
        if self._facets is None:
            found: list[ReviewFacet] = []
            for result in self.registry.pm.hook.selfiescope_review_facets():
                found += [f for f in (result or []) if isinstance(f, ReviewFacet)]
            self._facets = list({f.name: f for f in found}.values())
        return self._facets

    def snapshot(self) -> Snapshot:
        """The manifest's columns in memory (read on first use; call it once at start-up)."""
        with self._lock:
            self._load_if_due()
            assert self._snapshot is not None
            return self._snapshot

    # --- reading ---------------------------------------------------------------------------
    def labels(self) -> list[str]:
        """The labels a relabel may choose: every train pipeline's, then those present, then those collected."""
        out: list[str] = []
        for p in self.settings.pipelines.values():
            if isinstance(p, TrainPipeline):
                out += p.labels
            elif getattr(p, "label", None):
                out.append(p.label)
            out += [j.label for j in getattr(p, "jobs", []) or [] if getattr(j, "label", None)]
        snapshot = self.snapshot()
        out += [v for v in snapshot.facets["label"].values]
        # a label every image was relabelled away from stays a label: the relabel can be undone by hand
        out += sorted({str(v) for v in snapshot.original_label if v})
        return list(dict.fromkeys(str(v) for v in out if v))

    def facets(self, filters: Filters) -> list[Facet]:
        return self.snapshot().facet_list(filters)

    def page(self, filters: Filters, sort: str = "newest", cursor: str | None = None, limit: int = 60) -> Page:
        if sort not in SORTS:
            raise ValueError(f"sort: {sort!r} is not one of {', '.join(SORTS)}")
        try:
            limit = max(1, min(int(limit), MAX_LIMIT))
        except (TypeError, ValueError):
            raise ValueError(f"limit: {limit!r} is not a number of images") from None
        snap = self.snapshot()
        rows, total, next_cursor = snap.page(filters, sort, cursor, limit)
        page = Page([self._tile(snap, int(i)) for i in rows], total, next_cursor)
        if self.warm_thumbnails:
            # The browser asks for this page's thumbnails first to last, so the background takes
            # them last to first (the two meet halfway, each decoding its own), then the next page.
            shown = [t.id for t in page.tiles if t.has_thumbnail]
            self.thumbnail_jobs.want([*reversed(shown), functools.partial(_shown, snap, filters, sort, next_cursor, limit)])
        return page

    def warm_up(self, sort: str = "newest", limit: int = 120) -> None:
        """In the background: read the manifest's columns and make the thumbnails of the grid's
        first page (``sort``, no filter) and the next, before the browser asks for them."""
        self.warm_thumbnails = True
        self.thumbnail_jobs.want([lambda: (self.page(Filters(), sort, None, limit), ())[1]])

    def _tile(self, snap: Snapshot, i: int) -> Tile:
        label, original = str(snap.label[i]), snap.original_label[i]
        probability = snap.probability[i]
        return Tile(
            id=str(snap.hashes[i]), label=label, decision=str(snap.decision[i]),
            reason=snap.reason_text[i] if snap.decision[i] == "rejected" else None,
            face_area=None if snap.area[i] != snap.area[i] else float(snap.area[i]),
            reviewed=bool(snap.reviewed[i]), excluded=bool(snap.excluded[i]),
            probability=None if probability != probability else float(probability),
            has_thumbnail=bool(snap.stored[i] or snap.has_origin[i]),
            original_label=original if original != label else None,
        )

    def detail(self, image_id: str) -> Detail | None:
        snap = self.snapshot()
        i = snap.index.get(image_id)
        row = self.manifest.get_image(image_id) if i is not None else None
        if row is None or i is None:
            return None
        faces = recorded_boxes(row["face_boxes"], row["face_box"], row["n_faces"])
        decisions = [(r["rejected_by"] or "", r["reject_code"] or "", r["reason"] or "") for r in self.manifest.query(
            "SELECT rejected_by, reject_code, reason FROM rejections WHERE content_hash=? ORDER BY at", (image_id,))]
        if row["decision"] == "rejected" and (row["rejected_by"], row["reject_code"]) not in {d[:2] for d in decisions}:
            decisions.append((row["rejected_by"] or "", row["reject_code"] or "", row["reason"] or ""))
        if row["decision"] == "accepted":
            decisions.append(("chain", "accepted", "stored" if row["location"] else "accepted, not stored"))
        members = [int(j) for j in (snap.group == snap.group[i]).nonzero()[0]] if snap.in_group[i] else []
        group = [self._tile(snap, j) for j in members if j != i]
        kept = [j for j in members if snap.stored[j]]
        extra = {key[2:]: [c.values[code] for r, code in zip(c.rows, c.codes) if r == i]
                 for key, c in snap.facets.items() if key.startswith("x.")}
        return Detail(
            tile=self._tile(snap, i), faces=faces.boxes, largest=faces.largest, faces_unboxed=faces.unrecorded,
            decisions=decisions, job=row["job"], owner=row["owner"], post_url=row["post_url"],
            width=row["width"], height=row["height"], size_bytes=row["size"], detector=row["face_detector"],
            group=group, kept_id=str(snap.hashes[kept[0]]) if kept else None,
            history=self.history(image_id), source=row["source"], n_faces=row["n_faces"] or 0,
            first_seen=row["first_seen"], extra=extra,
        )

    def history(self, image_id: str) -> list[ReviewRow]:
        return [ReviewRow(r["id"], r["content_hash"], r["action"], r["old"], r["new"], r["at"], r["note"], r["batch"],
                          r["undoes"])
                for r in self.manifest.query("SELECT * FROM reviews WHERE content_hash=? ORDER BY id", (image_id,))]

    def image(self, image_id: str) -> tuple[bytes, str] | None:
        """The image's bytes and media type: through the storage backend, or, for a rejected
        import, from its original file while that is still a regular file there. Stored bytes
        that are not the ones recorded (:mod:`.integrity`) raise :class:`ImageMismatch`."""
        row = self.manifest.get_image(image_id) if thumbs._HASH.match(image_id or "") else None
        if row is None:
            return None
        data: bytes | None = None
        if row["decision"] == "accepted" and row["location"]:
            stored = StoredImage(row["id"] or image_id[:16], row["label"] or "", row["location"], image_id)
            try:
                reader = self._storage()
                if integrity.local_link(reader.storage, row["location"]):
                    raise ImageMismatch()
                data = reader.read(stored)
            except ImageMismatch:
                raise
            except Exception as exc:  # noqa: BLE001 - a missing object is no image, logged
                log.warning("review: cannot read %s from storage: %s", image_id[:16], type(exc).__name__)
                return None
            if not integrity.matches(data, integrity.stored_digest(row)):
                log.warning("review: the stored bytes of %s are not the ones recorded", image_id[:16])
                raise ImageMismatch()
        elif row["origin_path"]:
            data = _read_original(Path(row["origin_path"]), image_id)
        if data is None:
            return None
        return data, _media_type(row["format"], data)

    def thumbnail(self, image_id: str) -> bytes | None:
        if not thumbs._HASH.match(image_id or ""):
            return None
        return self.thumbnail_jobs.get(image_id)  # as kept, else made here or by the job already making it

    def _kept_thumbnail(self, image_id: str) -> bytes | None:
        hit = thumbs.cached(self.root, image_id)
        return None if hit is None else thumbs.without_text(hit)  # one kept by an older version may carry text

    def _made_thumbnail(self, image_id: str) -> bytes | None:
        """A new thumbnail of the image's checked bytes (:meth:`image`), not yet kept."""
        got = self.image(image_id)
        if got is None:
            return None
        try:
            return thumbs.make_thumbnail(got[0])
        except Exception as exc:  # noqa: BLE001 - bytes Pillow cannot read: no thumbnail
            log.warning("review: no thumbnail for %s: %s", image_id[:16], type(exc).__name__)
            return None

    def model_note(self) -> str | None:
        self.snapshot()
        model = self._model
        if model is not None and model.by_hash:
            return None
        return ("no trained model with out-of-fold probabilities for this dataset: run `selfiescope train` "
                "to sort by likely mislabels and see where the model disagrees")

    # --- changing --------------------------------------------------------------------------
    def apply(self, action: str, ids: Sequence[str], value: str | None = None, note: str | None = None, *,
              wait_s: float = 0.0) -> ActionResult:
        """One batch: ``action`` on ``ids``, its ``reviews`` rows in the same transaction. While
        another run holds the root's lock it waits up to ``wait_s`` (at most 600), then raises
        :class:`ReviewBusy`."""
        with self._write:
            result = actions.apply(self, action, ids, value, note, wait_s)
            self._changed(ids)
        return result

    def undo(self, *, wait_s: float = 0.0) -> ActionResult:
        with self._write:
            result, ids = actions.undo(self, wait_s)
            self._changed(ids)
        return result

    def forget_plan(self, ids: Sequence[str]) -> str:
        return actions.forget_plan(self, ids)

    def finish_interrupted_forget(self) -> int:
        with self._write, self._lock:
            finished = actions.finish_interrupted_forget(self)
            if finished:
                self._changed()
        return finished

    def forget(self, ids: Sequence[str]) -> ActionResult:
        with self._write:
            self.thumbnail_jobs.close()  # none made ahead, and none begun before kept: no thumbnail outlives its image
            try:
                with self._lock:  # forget closes and reopens the manifest and the backend
                    result = actions.forget(self, ids)
                    self._changed()
            finally:
                self.thumbnail_jobs.reopen()
        return result

    def busy(self) -> str | None:
        """``data/ is in use by pid N`` while another process holds the root's lock, else None."""
        return actions.busy_message(self)


def _shown(snap: Snapshot, filters: Filters, sort: str, cursor: str | None, limit: int) -> list[str]:
    """The images of the page after ``cursor`` that have a thumbnail to make."""
    if cursor is None:
        return []
    rows = snap.page(filters, sort, cursor, limit)[0]
    return [str(snap.hashes[i]) for i in rows if snap.stored[i] or snap.has_origin[i]]


def _read_original(path: Path, content_hash: str) -> bytes | None:
    """A rejected import's original file, only while it is a regular file with the same bytes."""
    import hashlib
    import stat

    try:
        if not stat.S_ISREG(path.lstat().st_mode):
            return None
        data = path.read_bytes()
    except OSError:
        return None
    return data if hashlib.sha256(data).hexdigest() == content_hash else None
