"""Reading the manifest's ``images`` table into the review snapshot's columns.

What the first grid page waits on when the app starts, so it reads only what the grid, its
facets and its sorts use, in one pass over the table in its own order (a scan, not a walk of
an index), with SQLite computing what it can (flags, the rejection fields of rejected rows
only) and Python touching each value once. Strings that repeat (labels, jobs, decisions,
detectors) are held once each, so 100k images cost tens of megabytes. A plugin's review
facets need whole rows and their notes: they get a second pass, only when a plugin has one.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..core.review_facets import ReviewFacet

log = logging.getLogger("selfiescope.review")

CHUNK = 5000  # rows per fetch: memory stays flat whatever the manifest's size
_REJECTED = "CASE WHEN decision='rejected' THEN {} END"
_GRID_SQL = ("SELECT rowid, job, label, decision, face_area, face_detector, first_seen,"
             " decision='accepted' AND location IS NOT NULL, origin_path IS NOT NULL, phash, "
             + ", ".join(_REJECTED.format(c) for c in ("rejected_by", "reject_code", "reason")))
_REVIEW_SQL = ", review_label, reviewed IS NOT NULL, IFNULL(excluded, 0) != 0"
_NO_REVIEW_SQL = ", NULL, 0, 0"
PLUGIN_COLUMNS = ("content_hash, id, source, job, label, decision, rejected_by, reject_code, reason, format, width,"
                  " height, size, face_area, n_faces, face_detector, first_seen, location, origin_path")
COPY_CODES = ("duplicate", "near_duplicate", "label_conflict")  # dedup's rejections of a copy
PHASH_MASK = 0xFFFFFFFFFFFFFFFF


@dataclass
class ImageColumns:
    """One entry per image, at the image's place in content-hash order."""

    n: int
    label: np.ndarray = field(init=False)  # the effective label: reviewed, else collected
    original_label: np.ndarray = field(init=False)
    decision: np.ndarray = field(init=False)
    job: np.ndarray = field(init=False)
    detector: np.ndarray = field(init=False)
    reason_text: np.ndarray = field(init=False)
    area: np.ndarray = field(init=False)
    first_seen: np.ndarray = field(init=False)
    stored: np.ndarray = field(init=False)
    has_origin: np.ndarray = field(init=False)
    reviewed: np.ndarray = field(init=False)
    excluded: np.ndarray = field(init=False)
    phash: np.ndarray = field(init=False)
    has_phash: np.ndarray = field(init=False)
    reasons: list[tuple[int, str]] = field(default_factory=list)  # (image, "step:code") of its last rejection
    copies: list[tuple[int, str]] = field(default_factory=list)  # (image, reason) of a copy dedup turned away

    def __post_init__(self) -> None:
        n = self.n
        for name in ("label", "original_label", "decision", "job", "detector", "reason_text"):
            setattr(self, name, np.empty(n, dtype=object))
        self.area, self.first_seen = np.full(n, np.nan), np.zeros(n)
        for name in ("stored", "has_origin", "reviewed", "excluded", "has_phash"):
            setattr(self, name, np.zeros(n, dtype=bool))
        self.phash = np.zeros(n, dtype=np.uint64)


def read_columns(db: sqlite3.Connection, place: np.ndarray, n: int, *, with_review: bool) -> ImageColumns:
    """``place[rowid]``: the image's position in hash order (-1: a row added since that order
    was read, left for the next read of the manifest)."""
    out = ImageColumns(n)
    shared: dict[Any, Any] = {}
    same = shared.setdefault  # one str object per distinct value
    cur = db.cursor()
    cur.row_factory = None
    cur.execute(f"{_GRID_SQL}{_REVIEW_SQL if with_review else _NO_REVIEW_SQL} FROM images")
    while chunk := cur.fetchmany(CHUNK):
        cols = list(zip(*chunk))
        pos = place[np.fromiter(cols[0], dtype=np.int64, count=len(chunk))]
        if not (keep := pos >= 0).all():
            cols = [tuple(v for v, k in zip(col, keep) if k) for col in cols]
            pos = pos[keep]
            if not len(pos):
                continue
        (_, jobs, labels, decisions, areas, detectors, seen, stored, origin, phashes, steps, codes, reasons,
         review_labels, reviewed, excluded) = cols
        collected = [same(v, v) for v in labels]
        out.original_label[pos] = collected
        out.label[pos] = [same(r, r) if r else c for r, c in zip(review_labels, collected)]
        out.decision[pos] = [same(v, v) for v in decisions]
        out.job[pos] = [same(v, v) for v in jobs]
        out.detector[pos] = [same(v, v) for v in detectors]
        out.area[pos] = np.array(areas, dtype=float)  # None: NaN
        out.first_seen[pos] = np.nan_to_num(np.array(seen, dtype=float), nan=0.0)
        out.stored[pos] = np.array(stored, dtype=bool)
        out.has_origin[pos] = np.array(origin, dtype=bool)
        out.reviewed[pos] = np.array(reviewed, dtype=bool)
        out.excluded[pos] = np.array(excluded, dtype=bool)
        _fill_phashes(out, pos, phashes)
        for k in [k for k, d in enumerate(decisions) if d == "rejected"]:
            i, step, code, reason = int(pos[k]), steps[k], codes[k], reasons[k]
            out.reason_text[i] = reason
            if step:
                out.reasons.append((i, f"{step}:{code}"))
            if code in COPY_CODES and reason:
                out.copies.append((i, reason))
    return out


def _fill_phashes(out: ImageColumns, pos: np.ndarray, phashes: Sequence[str | None]) -> None:
    """pHashes as 64-bit numbers: 16 hex digits each, decoded in one call where all are; any
    other is read alone (a longer hash keeps its last 64 bits; one that is no hex is none)."""
    known = [k for k, v in enumerate(phashes) if v]
    if not known:
        return
    values = [phashes[k] for k in known]
    where = pos[np.array(known, dtype=np.int64)]
    try:
        if set(map(len, values)) == {16}:
            out.phash[where] = np.frombuffer(bytes.fromhex("".join(values)), dtype=">u8").astype(np.uint64)
            out.has_phash[where] = True
            return
    except (TypeError, ValueError):
        pass  # some are no hex (or no text): each is read alone
    for i, value in zip(where.tolist(), values):
        try:
            out.phash[i], out.has_phash[i] = int(value, 16) & PHASH_MASK, True
        except (TypeError, ValueError):
            pass


def plugin_values(db: sqlite3.Connection, place: np.ndarray, label: np.ndarray, facets: Sequence[ReviewFacet],
                  *, with_review: bool) -> dict[str, list[tuple[int, str]]]:
    """``(image, value)`` pairs of each plugin facet, from whole rows and their notes."""
    out: dict[str, list[tuple[int, str]]] = {f.name: [] for f in facets}
    if not facets:
        return out
    names = [c.strip() for c in PLUGIN_COLUMNS.split(",")]
    failed: set[str] = set()
    cur = db.cursor()
    cur.row_factory = None
    review = ", review_label" if with_review else ", NULL"
    cur.execute(f"SELECT rowid, {PLUGIN_COLUMNS}{review}, notes FROM images")
    while chunk := cur.fetchmany(CHUNK):
        for row in chunk:
            i = int(place[row[0]]) if row[0] < len(place) else -1
            if i < 0:
                continue
            values = dict(zip(names, row[1:]))
            values.pop("location", None)
            values.pop("origin_path", None)
            values["original_label"], values["label"] = values["label"], label[i]
            for facet in facets:
                _plugin_value(facet, i, dict(values), row[-1], out[facet.name], failed)
    return out


def _plugin_value(facet: ReviewFacet, i: int, row: dict[str, Any], notes: Any, out: list[tuple[int, str]],
                  failed: set[str]) -> None:
    try:
        row["notes"] = json.loads(notes) if notes else {}
        got = facet.values(row)
    except Exception as exc:  # noqa: BLE001 - a plugin's bug costs its facet's value for this image
        if facet.name not in failed:
            log.warning("review facet %s failed on an image: %s: %s", facet.name, type(exc).__name__, exc)
            failed.add(facet.name)
        return
    if got is None:
        return
    for value in [got] if isinstance(got, str) else got:
        if value is not None:
            out.append((i, str(value)))
