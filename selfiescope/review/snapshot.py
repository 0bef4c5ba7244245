"""The manifest's images as columns in memory: facets, filters and pages in numpy.

Facet counts under the other facets' filters need one pass per facet; over 100k images
that is a few milliseconds on arrays, against a full table scan per facet in SQLite. The
snapshot is read again only when the manifest changed (``ReviewData.version``), so a scrape
running beside the app shows its new images on the next request.

Every facet is a list of ``(row, code)`` entries: a single-valued facet has at most one
entry per image, a multi-valued one (rejection reasons, plugin facets) several.
"""

from __future__ import annotations

import base64
import json
import logging
import sqlite3
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..core.review_facets import ReviewFacet
from ..pipelines.groups import near_duplicate_groups
from ..pipelines.reviewed import dedup_hashes, has_review_columns
from .model import EXTRA_PREFIX, SORTS, Facet, FacetValue, Filters

log = logging.getLogger("selfiescope.review")

AREA_EDGES = (0.0, 0.02, 0.05, 0.1, 0.2, 0.35, 0.5, 1.0)
_FLAG_LABELS = {"yes": "yes", "no": "no"}
_TITLES = {
    "label": "Label", "job": "Job / hashtag", "decision": "Decision", "reason": "Rejection reason",
    "detector": "Face detector", "face_area": "Face area", "in_group": "In a near-duplicate group",
    "reviewed": "Reviewed", "excluded": "Excluded from training", "disagrees": "Model disagrees with the label",
}


@dataclass
class Coded:
    """One facet: ``values[codes[i]]`` is a value of image ``rows[i]``."""

    rows: np.ndarray
    codes: np.ndarray
    values: list[str]

    @classmethod
    def single(cls, column: Sequence[str | None]) -> "Coded":
        values = sorted({v for v in column if v is not None})
        index = {v: i for i, v in enumerate(values)}
        rows = np.array([i for i, v in enumerate(column) if v is not None], dtype=np.int64)
        codes = np.array([index[v] for v in column if v is not None], dtype=np.int64)
        return cls(rows, codes, values)

    @classmethod
    def multi(cls, pairs: Iterable[tuple[int, str]]) -> "Coded":
        unique = sorted(set(pairs))
        values = sorted({v for _, v in unique})
        index = {v: i for i, v in enumerate(values)}
        return cls(np.array([r for r, _ in unique], dtype=np.int64),
                   np.array([index[v] for _, v in unique], dtype=np.int64), values)

    def mask(self, n: int, wanted: Iterable[str]) -> np.ndarray:
        index = {v: i for i, v in enumerate(self.values)}
        codes = [index[v] for v in wanted if v in index]
        out = np.zeros(n, dtype=bool)
        out[self.rows[np.isin(self.codes, codes)]] = True
        return out

    def counts(self, mask: np.ndarray) -> np.ndarray:
        return np.bincount(self.codes[mask[self.rows]], minlength=len(self.values))


def encode_cursor(key: float, content_hash: str) -> str:
    return base64.urlsafe_b64encode(json.dumps([repr(float(key)), content_hash]).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[float, str]:
    try:
        key, content_hash = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        return float(key), str(content_hash)
    except (ValueError, TypeError, json.JSONDecodeError):
        raise ValueError("cursor: not one this app made (reload the page)") from None


_COLUMNS = ("content_hash, id, source, job, label, decision, rejected_by, reject_code, reason, format, width, height,"
            " size, face_area, n_faces, face_detector, first_seen, location, origin_path")


class Snapshot:
    """Columns of every image in the manifest, ordered by content hash."""

    def __init__(self, db: sqlite3.Connection, *, probabilities: Mapping[str, float], positive: str | None,
                 max_distance: int, plugin_facets: Sequence[ReviewFacet] = ()) -> None:
        reviewed_cols = has_review_columns(db)
        review_sql = ", review_label, reviewed, excluded" if reviewed_cols else ", NULL, NULL, NULL"
        with_notes = bool(plugin_facets)
        sql = f"SELECT {_COLUMNS}{review_sql}{', notes' if with_notes else ''} FROM images ORDER BY content_hash"
        cur = db.cursor()
        cur.row_factory = None
        rows = cur.execute(sql).fetchall()
        n = self.n = len(rows)
        self.hashes = np.array([r[0] for r in rows], dtype=object)
        self.sorted_hashes = np.array([r[0] for r in rows], dtype=str) if n else np.array([], dtype="<U1")
        self.index = {h: i for i, h in enumerate(self.hashes)}
        original = [r[4] for r in rows]
        label = [r[19] or r[4] for r in rows]
        self.label = np.array(label, dtype=object)
        self.original_label = np.array(original, dtype=object)
        self.decision = np.array([r[5] for r in rows], dtype=object)
        self.reason_text = np.array([r[8] for r in rows], dtype=object)
        self.area = np.array([np.nan if r[13] is None else float(r[13]) for r in rows], dtype=float)
        self.first_seen = np.array([r[16] or 0.0 for r in rows], dtype=float)
        self.stored = np.array([r[5] == "accepted" and r[17] is not None for r in rows], dtype=bool)
        self.has_origin = np.array([r[18] is not None for r in rows], dtype=bool)
        self.reviewed = np.array([r[20] is not None for r in rows], dtype=bool)
        self.excluded = np.array([bool(r[21]) for r in rows], dtype=bool)
        self.probability = np.array([probabilities.get(h, np.nan) for h in self.hashes], dtype=float)
        y = np.array([1.0 if v == positive else 0.0 for v in label], dtype=float)
        self.score = np.abs(y - self.probability)  # cleanlab's self-confidence, as a distance: NaN without a model
        with np.errstate(invalid="ignore"):
            self.disagrees = self.score > 0.5
        self.group = self._groups(db, rows, max_distance)
        sizes = np.bincount(self.group) if n else np.array([], dtype=np.int64)
        self.in_group = sizes[self.group] > 1 if n else np.zeros(0, dtype=bool)

        self.facets: dict[str, Coded] = {
            "label": Coded.single(label),
            "job": Coded.single([r[3] for r in rows]),
            "decision": Coded.single([r[5] for r in rows]),
            "reason": Coded.multi(self._reasons(db, rows)),
            "detector": Coded.single([r[15] for r in rows]),
        }
        self.titles = dict(_TITLES)
        for facet in plugin_facets:
            key = EXTRA_PREFIX + facet.name
            self.facets[key] = Coded.multi(self._plugin_values(facet, rows, label, reviewed_cols))
            self.titles[key] = facet.title

    # --- building -----------------------------------------------------------------------
    def _groups(self, db: sqlite3.Connection, rows: list[tuple[Any, ...]], max_distance: int) -> np.ndarray:
        """Near-duplicate groups: pHashes within dedup's distance, joined by dedup's recorded conflicts."""
        indexed = dedup_hashes(db)
        recorded = dict(db.execute("SELECT content_hash, phash FROM images WHERE phash IS NOT NULL").fetchall())
        hashes = [f"{indexed[r[0]]:016x}" if r[0] in indexed else recorded.get(r[0]) for r in rows]
        if not rows:
            return np.zeros(0, dtype=np.int64)
        groups = near_duplicate_groups(hashes, max_distance)
        try:
            pairs = db.execute("SELECT content_hash, other_hash FROM conflicts").fetchall()
        except sqlite3.OperationalError:
            pairs = []
        for a, b in pairs:  # a copy dedup judged the same photo under another label
            ia, ib = self.index.get(a), self.index.get(b)
            if ia is not None and ib is not None and groups[ia] != groups[ib]:
                groups[groups == groups[ib]] = groups[ia]
        _, dense = np.unique(groups, return_inverse=True)
        return dense.astype(np.int64)

    def _reasons(self, db: sqlite3.Connection, rows: list[tuple[Any, ...]]) -> list[tuple[int, str]]:
        """``step:code`` of every rejection of each rejected image (any step's, third-party included)."""
        pairs = [(i, f"{r[6]}:{r[7]}") for i, r in enumerate(rows) if r[5] == "rejected" and r[6]]
        for content_hash, step, code in db.execute(
            "SELECT content_hash, rejected_by, reject_code FROM rejections WHERE content_hash IS NOT NULL"
        ):
            i = self.index.get(content_hash)
            if i is not None and step and self.decision[i] == "rejected":
                pairs.append((i, f"{step}:{code}"))
        return pairs

    def _plugin_values(self, facet: ReviewFacet, rows: list[tuple[Any, ...]], label: list[str],
                       reviewed_cols: bool) -> list[tuple[int, str]]:
        names = [c.strip() for c in _COLUMNS.split(",")]
        pairs: list[tuple[int, str]] = []
        failed = False
        for i, r in enumerate(rows):
            row = dict(zip(names, r))
            row.pop("location", None)
            row.pop("origin_path", None)
            row["original_label"], row["label"] = row["label"], label[i]
            try:
                row["notes"] = json.loads(r[-1]) if r[-1] else {}
                got = facet.values(row)
            except Exception as exc:  # noqa: BLE001 - a plugin's bug costs its facet's value for this image
                if not failed:
                    log.warning("review facet %s failed on an image: %s: %s", facet.name, type(exc).__name__, exc)
                    failed = True
                continue
            if got is None:
                continue
            for value in [got] if isinstance(got, str) else got:
                if value is not None:
                    pairs.append((i, str(value)))
        return pairs

    # --- filtering ----------------------------------------------------------------------
    def masks(self, filters: Filters) -> dict[str, np.ndarray]:
        """One mask per active filter, by facet name."""
        n, out = self.n, {}
        for name in ("label", "job", "decision", "reason", "detector"):
            wanted = getattr(filters, name)
            if wanted:
                out[name] = self.facets[name].mask(n, wanted)
        if filters.area_min is not None or filters.area_max is not None:
            low = -np.inf if filters.area_min is None else filters.area_min
            high = np.inf if filters.area_max is None else filters.area_max
            with np.errstate(invalid="ignore"):
                out["face_area"] = (self.area >= low) & (self.area <= high)
        for name, column in (("in_group", self.in_group), ("reviewed", self.reviewed),
                             ("excluded", self.excluded), ("disagrees", self.disagrees)):
            flag = getattr(filters, name)
            if flag is not None:
                out[name] = column if flag else ~column
        for name, values in filters.extra:
            key = EXTRA_PREFIX + name
            if key not in self.facets:
                raise ValueError(f"unknown facet {key!r} (no loaded plugin adds it)")
            if values:
                out[key] = self.facets[key].mask(n, values)
        return out

    def mask(self, filters: Filters) -> np.ndarray:
        return _all(self.n, self.masks(filters).values())

    def facet_list(self, filters: Filters) -> list[Facet]:
        masks = self.masks(filters)

        def under_others(name: str) -> np.ndarray:
            return _all(self.n, (m for k, m in masks.items() if k != name))

        facets: list[Facet] = []
        for name in ("label", "job", "decision", "reason", "detector"):
            facets.append(self._values_facet(name, under_others(name)))
        facets.append(self._area_facet(under_others("face_area")))
        for name, column in (("in_group", self.in_group), ("reviewed", self.reviewed),
                             ("excluded", self.excluded), ("disagrees", self.disagrees)):
            base = under_others(name)
            yes = int(np.count_nonzero(column & base))
            known = base if name != "disagrees" else base & ~np.isnan(self.score)
            no = int(np.count_nonzero(known)) - yes
            facets.append(Facet(name, self.titles[name], [FacetValue("yes", "yes", yes), FacetValue("no", "no", no)],
                                kind="flag"))
        for key in self.facets:
            if key.startswith(EXTRA_PREFIX):
                facets.append(self._values_facet(key, under_others(key)))
        return facets

    def _values_facet(self, name: str, base: np.ndarray) -> Facet:
        coded = self.facets[name]
        counts = coded.counts(base)
        values = [FacetValue(v, v, int(c)) for v, c in zip(coded.values, counts)]
        values.sort(key=lambda fv: (-fv.count, fv.value))
        return Facet(name, self.titles[name], values)

    def _area_facet(self, base: np.ndarray) -> Facet:
        counts = np.histogram(self.area[base & ~np.isnan(self.area)], bins=AREA_EDGES)[0]
        values = [FacetValue(f"{lo:g}:{hi:g}", f"{lo:.0%}–{hi:.0%}", int(c))
                  for lo, hi, c in zip(AREA_EDGES[:-1], AREA_EDGES[1:], counts)]
        return Facet("face_area", self.titles["face_area"], values, kind="range")

    # --- paging -------------------------------------------------------------------------
    def sort_key(self, sort: str) -> np.ndarray:
        """Ascending keys (NaN last) for ``sort``."""
        if sort == "mislabeled":
            key = -self.score
        elif sort == "face_area":
            key = -self.area
        elif sort == "newest":
            key = -self.first_seen
        else:
            raise ValueError(f"sort: {sort!r} is not one of {', '.join(SORTS)}")
        return np.where(np.isnan(key), np.inf, key)

    def page(self, filters: Filters, sort: str, cursor: str | None, limit: int) -> tuple[np.ndarray, int, str | None]:
        """Row indices of one page, the total under ``filters``, and the next page's cursor."""
        key = self.sort_key(sort)
        mask = self.mask(filters)
        total = int(np.count_nonzero(mask))
        if cursor:
            after_key, after_hash = decode_cursor(cursor)
            rank = np.arange(self.n)  # rows are in content-hash order
            position = int(np.searchsorted(self.sorted_hashes, after_hash, side="right"))
            mask = mask & ((key > after_key) | ((key == after_key) & (rank >= position)))
        candidates = np.flatnonzero(mask)
        if len(candidates) > limit:  # only the first `limit` keys need ordering
            part = np.argpartition(key[candidates], limit - 1)[:limit]
            threshold = key[candidates][part].max()
            candidates = candidates[key[candidates] <= threshold]
        order = candidates[np.lexsort((candidates, key[candidates]))][:limit]
        more = int(np.count_nonzero(mask)) > len(order)
        next_cursor = encode_cursor(key[order[-1]], str(self.hashes[order[-1]])) if more and len(order) else None
        return order, total, next_cursor


def _all(n: int, masks: Iterable[np.ndarray]) -> np.ndarray:
    out = np.ones(n, dtype=bool)
    for m in masks:
        out &= m
    return out


SnapshotFactory = Callable[[], Snapshot]
