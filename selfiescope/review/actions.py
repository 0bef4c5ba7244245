"""The review app's edits: every change and its ``reviews`` rows in one transaction.

Each action on one or many images is a *batch*: its rows share a batch number, and the
images' columns change in the same SQLite transaction as the rows are written, so a kill
at any moment leaves either the whole batch (rows and changes) or none of it. Undo writes
the inverse rows as a new batch that names the one it undid (``undoes``); undoing again
walks further back.

The root's one-writer lock is taken for each write only: while another run holds it, the
edit is refused with ``data/ is in use by pid N`` (:class:`ReviewBusy`), never lost silently.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

from ..core.lock import RootBusy, RootLock, root_in_use
from ..pipelines.dataset_care.forget import (ForgetError, ForgetRequest, ForgetResult, forget as forget_pipeline,
                                              pending_count)
from . import thumbs
from .model import ACTIONS, ActionResult, ReviewBusy, ReviewError

if TYPE_CHECKING:
    from .data import ReviewData

log = logging.getLogger("selfiescope.review")
MAX_NOTE = 2000
MAX_IDS = 100_000
# (column, value as the reviews row writes it) for each action; relabel's value is the label.
FIELD = {"relabel": "label", "exclude": "excluded", "include": "excluded", "reviewed": "reviewed",
         "unreviewed": "reviewed"}


def busy_message(data: "ReviewData", pid: int | None = None) -> str | None:
    """Which other run holds the root's lock now, read afresh each time (this app's own write,
    holding it for a moment, is not another run)."""
    lock = RootLock(data.root)
    if pid is None:
        if not root_in_use(data.root):
            return None
        pid = lock.holder()
        if pid == os.getpid():
            return None
    who = f"pid {pid}" if pid else "another process"
    return f"{data.display}/ is in use by {who}"


def database_problem(exc: sqlite3.Error) -> str:
    """What a failed SQLite write means for the user (its own text goes to the debug log)."""
    text = str(exc).lower()
    if "full" in text:
        return "the disk is full"
    if "readonly" in text or "read-only" in text:
        return "it is read-only"
    if "locked" in text or "busy" in text:
        return "another process kept it busy too long"
    return "a database error (see the debug log)"


@contextmanager
def write_lock(data: "ReviewData", wait_s: float = 0.0) -> Iterator[None]:
    """The root's lock for one write (waiting up to ``wait_s`` for another run to let go); any
    failure to write is one line saying nothing changed."""
    lock = RootLock(data.root, wait_s=max(0.0, min(float(wait_s), 600.0)))
    try:
        lock.acquire()
    except RootBusy as exc:
        raise ReviewBusy(busy_message(data, exc.pid) or f"{data.display}/ is in use") from None
    except OSError as exc:
        raise ReviewError(f"{data.display}/ cannot be written ({exc.strerror or exc}): nothing was changed") from None
    try:
        yield
    except sqlite3.Error as exc:
        log.debug("review write failed: %s", exc)
        raise ReviewError(f"{data.display}/manifest.sqlite cannot be written ({database_problem(exc)}): "
                          "nothing was changed") from None
    finally:
        lock.release()


def _check(data: "ReviewData", action: str, ids: Sequence[str], value: str | None, note: str | None) -> list[str]:
    if action not in ACTIONS:
        raise ValueError(f"action: {action!r} is not one of {', '.join(ACTIONS)}")
    wanted = list(dict.fromkeys(str(i) for i in ids))
    if not wanted:
        raise ValueError("no image chosen")
    if len(wanted) > MAX_IDS:
        raise ValueError(f"at most {MAX_IDS} images per action")
    if bad := [i for i in wanted if not thumbs._HASH.match(i)]:
        raise ValueError(f"not an image id: {bad[0][:80]!r}")
    if action == "relabel":
        if not value or value not in data.labels():
            raise ValueError(f"relabel: {value!r} is not a label of this dataset ({', '.join(data.labels())})")
    elif value is not None:
        raise ValueError(f"{action} takes no value")
    if note is not None and len(note) > MAX_NOTE:
        raise ValueError(f"note: at most {MAX_NOTE} characters")
    return wanted


def _state(db: sqlite3.Connection, content_hash: str) -> dict[str, str] | None:
    row = db.execute("SELECT COALESCE(review_label, label), IFNULL(excluded, 0), reviewed IS NOT NULL"
                     " FROM images WHERE content_hash=?", (content_hash,)).fetchone()
    if row is None:
        return None
    return {"label": row[0], "excluded": "1" if row[1] else "0", "reviewed": "1" if row[2] else "0"}


def _set(data: "ReviewData", db: sqlite3.Connection, content_hash: str, column: str, value: str, now: float) -> None:
    if column == "label":
        old = (_state(db, content_hash) or {}).get("label")
        db.execute("UPDATE images SET review_label=CASE WHEN label=? THEN NULL ELSE ? END WHERE content_hash=?",
                   (value, value, content_hash))
        # plugins keeping the label in their own state (dedup's index) follow, in this transaction
        data.app.hook.selfiescope_label_changed(manifest=data.manifest, content_hash=content_hash, old=old, new=value)
    elif column == "excluded":
        db.execute("UPDATE images SET excluded=? WHERE content_hash=?", (int(value == "1"), content_hash))
    else:
        db.execute("UPDATE images SET reviewed=? WHERE content_hash=?", (now if value == "1" else None, content_hash))


def _new_value(action: str, value: str | None) -> str:
    if action == "relabel":
        assert value is not None
        return value
    return "1" if action in ("exclude", "reviewed") else "0"


def apply(data: "ReviewData", action: str, ids: Sequence[str], value: str | None, note: str | None,
          wait_s: float = 0.0) -> ActionResult:
    wanted = _check(data, action, ids, value, note)
    column, new = FIELD[action], _new_value(action, value)
    now = time.time()
    with write_lock(data, wait_s), data.manifest.transaction() as db:
        batch = int(db.execute("SELECT IFNULL(MAX(batch), 0) + 1 FROM reviews").fetchone()[0])
        changed = missing = 0
        wrote = False
        for content_hash in wanted:
            state = _state(db, content_hash)
            if state is None:
                missing += 1
                continue
            rows = []
            if state[column] != new:
                rows.append((action, column, state[column], new))
            if action == "relabel" and state["reviewed"] == "0":  # choosing a label is looking at the image
                rows.append(("reviewed", "reviewed", "0", "1"))
            for name, col, old, to in rows:
                _set(data, db, content_hash, col, to, now)
                db.execute("INSERT INTO reviews(content_hash, action, old, new, at, note, batch) VALUES (?,?,?,?,?,?,?)",
                           (content_hash, name, old, to, now, note if name == action else None, batch))
            changed += state[column] != new
            wrote = wrote or bool(rows)
    what = {"relabel": f"relabeled {value}", "exclude": "excluded from training", "include": "included in training",
            "reviewed": "marked reviewed", "unreviewed": "marked not reviewed"}[action]
    message = f"{changed} image{'s' * (changed != 1)} {what}"
    if unchanged := len(wanted) - changed - missing:
        message += f"; {unchanged} already so"
    if missing:
        message += f"; {missing} no longer in the dataset"
    return ActionResult(batch if wrote else 0, changed, message)


def undo(data: "ReviewData", wait_s: float = 0.0) -> tuple[ActionResult, list[str]]:
    """Undo the latest batch not undone yet (itself written as a batch that names it); returns
    the result and the images it changed."""
    now = time.time()
    with write_lock(data, wait_s), data.manifest.transaction() as db:
        last = db.execute(
            "SELECT MAX(batch) FROM reviews WHERE undoes IS NULL AND batch NOT IN"
            " (SELECT undoes FROM reviews WHERE undoes IS NOT NULL)"
        ).fetchone()[0]
        if last is None:
            return ActionResult(0, 0, "nothing to undo"), []
        batch = int(db.execute("SELECT MAX(batch) + 1 FROM reviews").fetchone()[0])
        rows = db.execute("SELECT content_hash, action, old, new FROM reviews WHERE batch=? ORDER BY id DESC",
                          (last,)).fetchall()
        images, skipped = set(), 0
        for content_hash, action, old, new in rows:
            column = FIELD[action]
            state = _state(db, content_hash)
            if state is None or state[column] != new:  # forgotten, or changed since by a later edit
                skipped += 1
                continue
            _set(data, db, content_hash, column, old, now)
            db.execute("INSERT INTO reviews(content_hash, action, old, new, at, note, batch, undoes)"
                       " VALUES (?,?,?,?,?,?,?,?)", (content_hash, action, new, old, now, "undo", batch, last))
            images.add(content_hash)
        if not images:  # nothing left to revert: mark the batch undone all the same, so undo moves on
            db.execute("INSERT INTO reviews(content_hash, action, old, new, at, note, batch, undoes)"
                       " VALUES (?,?,?,?,?,?,?,?)", (rows[0][0], rows[0][1], rows[0][3], rows[0][3], now, "undo",
                                                     batch, last))
    message = f"undid the last change ({len(images)} image{'s' * (len(images) != 1)})"
    if skipped:
        message += f"; {skipped} change{'s' * (skipped != 1)} left as they are (changed or forgotten since)"
    return ActionResult(batch, len(images), message), sorted(images)


def forget_plan(data: "ReviewData", ids: Sequence[str]) -> str:
    wanted = [i for i in dict.fromkeys(ids) if thumbs._HASH.match(str(i))]
    rows = data.manifest.query(
        f"SELECT decision, location IS NOT NULL AS stored FROM images WHERE content_hash IN ({','.join('?' * len(wanted))})",
        tuple(wanted)) if wanted else []
    if not rows:
        return "nothing to forget: none of these images is in the dataset"
    stored = sum(1 for r in rows if r["decision"] == "accepted" and r["stored"])
    return (f"forget {len(rows)} image{'s' * (len(rows) != 1)}: {stored} stored file{'s' * (stored != 1)} deleted from "
            "storage, every manifest row, review and thumbnail of them removed, and a tombstone kept so that no later "
            "scrape or import collects them (or a near copy) again; this cannot be undone")


def finish_interrupted_forget(data: "ReviewData") -> int:
    """A forget killed midway (from this app or ``selfiescope forget``) is finished before the
    app shows anything: its files may already be gone while its rows still list the images.
    The number of entries it finished; 0 when there was none, or the root cannot be written
    (then the app shows what the manifest says, and ``fsck`` reports the unfinished work)."""
    try:
        pending = pending_count(data.manifest)
    except sqlite3.Error:  # an old manifest without the table, opened read-only
        return 0
    if not pending or data.manifest.readonly:
        return 0
    _run_forget(data, ForgetRequest(), unfinished="an interrupted forget")
    log.warning("finished an interrupted forget (%d entries) before showing the dataset", pending)
    return pending


def forget(data: "ReviewData", ids: Sequence[str]) -> ActionResult:
    """Through ``selfiescope forget`` (tombstones, storage, every table, thumbnails)."""
    wanted = [i for i in dict.fromkeys(str(i) for i in ids) if thumbs._HASH.match(i)]
    if not wanted:
        raise ValueError("no image chosen")
    n = len(_run_forget(data, ForgetRequest(images=wanted)).images)
    return ActionResult(0, n, f"forgot {n} image{'s' * (n != 1)}")


def _run_forget(data: "ReviewData", request: ForgetRequest, unfinished: str | None = None) -> ForgetResult:
    """``selfiescope forget``'s own pipeline, which takes the lock and opens the manifest and the
    backend itself: refused while another run holds the root, its errors as the app's.
    ``unfinished`` names work the app finishes on its own (the messages then say so)."""
    if message := busy_message(data):
        raise ReviewBusy(f"{unfinished} is unfinished and {message}: start the review again when it is free"
                         if unfinished else message)
    data.close()
    try:
        return asyncio.run(forget_pipeline(data.app, request))
    except ForgetError as exc:
        text = str(exc)
        if unfinished:
            raise ReviewError(f"{unfinished} could not be finished: {text}") from None
        if " is in use by " in text:
            raise ReviewBusy(busy_message(data) or text) from None
        raise ReviewError(text) from None
