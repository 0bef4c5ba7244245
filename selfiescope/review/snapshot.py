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
import re
import sqlite3
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from ..core.review_facets import ReviewFacet
from ..pipelines.dataset_care.reviewed import has_review_columns
from .snapshot_read import plugin_values, read_columns
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


HEX16 = re.compile(r"\b[0-9a-f]{16}\b")


class HashIndex:
    """Row of a content hash, found by bisection in the sorted hash column (no dict of 100k keys)."""

    def __init__(self, hashes: np.ndarray) -> None:
        self.hashes = hashes

    def get(self, content_hash: object, default: int | None = None) -> int | None:
        if not isinstance(content_hash, str) or not len(self.hashes):
            return default
        i = int(np.searchsorted(self.hashes, content_hash))
        return i if i < len(self.hashes) and self.hashes[i] == content_hash else default

    def __getitem__(self, content_hash: str) -> int:
        i = self.get(content_hash)
        if i is None:
            raise KeyError(content_hash)
        return i

    def __contains__(self, content_hash: object) -> bool:
        return self.get(content_hash) is not None


class Snapshot:
    """Columns of every image in the manifest, ordered by content hash."""

    def __init__(self, db: sqlite3.Connection, *, probabilities: Mapping[str, float], positive: str | None,
                 plugin_facets: Sequence[ReviewFacet] = (), linked: Sequence[tuple[str, str]] = ()) -> None:
        """``linked``: pairs of content hashes plugins know to be one photo (dedup's label conflicts)."""
        cur = db.cursor()
        cur.row_factory = None
        # Hash order from the primary key's index alone (a covering scan), then the rows in table
        # order, each put in its place: no list of 100k full rows is ever held.
        order = cur.execute("SELECT content_hash, rowid FROM images ORDER BY content_hash").fetchall()
        n = self.n = len(order)
        self.hashes = np.array([h for h, _ in order], dtype=object)
        self.index = HashIndex(self.hashes)
        rowids = np.array([r for _, r in order], dtype=np.int64)
        place = np.full(int(rowids.max()) + 1 if n else 1, -1, dtype=np.int64)
        place[rowids] = np.arange(n)
        del order, rowids
        with_review = has_review_columns(db)
        c = read_columns(db, place, n, with_review=with_review)
        self.label, self.original_label, self.decision = c.label, c.original_label, c.decision
        self.reason_text, self.area, self.first_seen = c.reason_text, c.area, c.first_seen
        self.stored, self.has_origin, self.reviewed, self.excluded = c.stored, c.has_origin, c.reviewed, c.excluded
        self.phash = c.phash
        extra = plugin_values(db, place, self.label, plugin_facets, with_review=with_review)
        self.probability = np.array([probabilities.get(h, np.nan) for h in self.hashes], dtype=float)
        self.positive = positive
        self._score()
        self.group = self._groups(c.copies, c.has_phash, linked)
        sizes = np.bincount(self.group) if n else np.array([], dtype=np.int64)
        self.in_group = sizes[self.group] > 1 if n else np.zeros(0, dtype=bool)
        self.facets: dict[str, Coded] = {
            "label": Coded.single(list(self.label)),
            "job": Coded.single(list(c.job)),
            "decision": Coded.single(list(self.decision)),
            "reason": Coded.multi(c.reasons + self._more_reasons(db)),
            "detector": Coded.single(list(c.detector)),
        }
        self.titles = dict(_TITLES)
        for facet in plugin_facets:
            key = EXTRA_PREFIX + facet.name
            self.facets[key] = Coded.multi(extra[facet.name])
            self.titles[key] = facet.title

    def _score(self) -> None:
        y = (self.label == self.positive).astype(float) if self.positive is not None else np.zeros(self.n)
        self.score = np.abs(y - self.probability)  # cleanlab's self-confidence, as a distance: NaN without a model
        with np.errstate(invalid="ignore"):
            self.disagrees = self.score > 0.5

    def refresh(self, db: sqlite3.Connection, content_hashes: Iterable[str]) -> None:
        """Read again the review columns of images this process just changed (far cheaper than
        reading the manifest again: an edit never adds, removes or moves an image)."""
        wanted = [h for h in dict.fromkeys(content_hashes) if h in self.index]
        for start in range(0, len(wanted), 500):
            chunk = wanted[start:start + 500]
            for h, label, reviewed, excluded in db.execute(
                "SELECT content_hash, COALESCE(review_label, label), reviewed, excluded FROM images"
                f" WHERE content_hash IN ({','.join('?' * len(chunk))})", chunk,
            ).fetchall():
                i = self.index[h]
                self.label[i], self.reviewed[i], self.excluded[i] = label, reviewed is not None, bool(excluded)
        self.facets["label"] = Coded.single(list(self.label))
        self._score()

    # --- building -----------------------------------------------------------------------
    def _groups(self, copies: list[tuple[int, str]], has_phash: np.ndarray,
                linked: Sequence[tuple[str, str]]) -> np.ndarray:
        """Near-duplicate groups as dedup decided them, mirrored copies included: each copy dedup
        turned away joins the image its reason names (``.../<first 16 hex digits>``, the link
        ``forget`` follows too), each recorded label conflict joins its pair, and images with
        equal pHashes join each other. A pairwise pHash search over every image would cost
        seconds at 100k images on each read of the manifest; dedup already made those decisions."""
        n = self.n
        if not n:
            return np.zeros(0, dtype=np.int64)
        named = [(i, prefix) for i, reason in copies for prefix in HEX16.findall(reason)]
        kept = self._stored_with_prefixes([prefix for _, prefix in named])
        edges = [(i, j) for (i, _), j in zip(named, kept) if j is not None]
        for a, b in linked:
            if (i := self.index.get(a)) is not None and (j := self.index.get(b)) is not None:
                edges.append((i, j))
        known = np.flatnonzero(has_phash)
        order = known[np.argsort(self.phash[known], kind="stable")]
        equal = self.phash[order[1:]] == self.phash[order[:-1]]
        first, second = order[:-1][equal], order[1:][equal]
        if edges:
            a, b = np.array(edges, dtype=np.int64).T
            first, second = np.concatenate([first, a]), np.concatenate([second, b])
        if not len(first):
            return np.arange(n, dtype=np.int64)
        graph = coo_matrix((np.ones(len(first), dtype=np.int8), (first, second)), shape=(n, n))
        return connected_components(graph, directed=False)[1].astype(np.int64)

    def _stored_with_prefixes(self, prefixes: list[str]) -> list[int | None]:
        """For each prefix, the stored image whose content hash begins with it (one bisection
        for them all; the first stored one where several hashes share a prefix)."""
        if not prefixes:
            return []
        starts = np.searchsorted(self.hashes, np.array(prefixes, dtype=object)).tolist()
        found: list[int | None] = []
        for prefix, i in zip(prefixes, starts):
            while i < self.n and self.hashes[i].startswith(prefix) and not self.stored[i]:
                i += 1
            found.append(i if i < self.n and self.hashes[i].startswith(prefix) else None)
        return found

    def _more_reasons(self, db: sqlite3.Connection) -> list[tuple[int, str]]:
        """``step:code`` of the earlier rejections of each rejected image (any step's, third-party included)."""
        found = db.execute(
            "SELECT r.content_hash, r.rejected_by, r.reject_code FROM rejections r JOIN images i"
            " ON i.content_hash = r.content_hash WHERE i.decision = 'rejected' AND r.rejected_by != ''"
        ).fetchall()
        if not found or not self.n:
            return []
        wanted = np.array([h for h, _, _ in found], dtype=object)
        rows = np.minimum(np.searchsorted(self.hashes, wanted), self.n - 1)
        hit = self.hashes[rows] == wanted  # a row added since the snapshot's order was read is left out
        return [(int(i), f"{step}:{code}") for i, ok, (_, step, code) in zip(rows.tolist(), hit.tolist(), found) if ok]


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
            position = int(np.searchsorted(self.hashes, after_hash, side="right")) if self.n else 0
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

