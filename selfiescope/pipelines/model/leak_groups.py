"""Cross-validation groups by what leaks between photos: the person, the post and owner, near copies.

Dedup already rejected every pair within its own pHash distance, so grouping by that
distance again would make every photo its own group. What lets a model score well on a
held-out photo without learning the task is something it saw in training: the same
face (the embedding recognises people), the same post or account (same light, same
camera, same day), or a looser near-copy (a burst, a recrop). Each is a partition of the
rows; the groups are the connected components of their union (union-find), so photos
linked by any one of them, directly or through others, share a group and never sit on
both sides of a split.

Near copies: the whole-picture pHashes within ``phash_distance``, or any of an image's hashes
(whole, centre, mirror: :mod:`.leak_inputs` computes them from the stored image) within dedup's
own distance of any of the other's, the copies dedup would have caught had it been in the chain.

Each link's summary says how many rows had its input (``rows_covered``); a link no row had the
input for is not named as applied, and every text about the links comes from ``summary["by"]``.

Person: dlib's 128-d face descriptor (the ``embedding`` feature group); two faces closer
than ``person_distance`` (dlib's usual 0.6 Euclidean, its documented same-person
threshold) are one person. Single linkage over the pairs is stricter than dlib's
chinese-whispers clustering: it can only merge more, which errs on the side of honest folds.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ...core.likeness import DEFAULT_MAX_DISTANCE
from .groups import likeness_groups

PERSON_DISTANCE = 0.6
# Any hash against any (centre, mirror) at dedup's own default distance: the copies dedup
# would have rejected had it been in the chain. At the looser grouping distance, 16 hash
# pairs per photo pair would chain unrelated look-alike portraits into one group.
COPY_DISTANCE = DEFAULT_MAX_DISTANCE
DESCRIPTOR_GROUP = "embedding"


@dataclass
class Grouping:
    """``ids`` one group id per row; ``summary`` what was grouped, for metrics, the report and MODEL.md."""

    ids: np.ndarray
    summary: dict[str, Any] = field(default_factory=dict)


def _components(n: int, partitions: Sequence[np.ndarray]) -> np.ndarray:
    """Group ids of the union of ``partitions`` (each an id per row): the connected components
    of the graph that links every row to the first row of its id, in every partition."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    firsts, seconds = [np.arange(n)], [np.arange(n)]
    for ids in partitions:
        _, first_index, inverse = np.unique(ids, return_index=True, return_inverse=True)
        firsts.append(np.arange(n))
        seconds.append(first_index[inverse])
    a, b = np.concatenate(firsts), np.concatenate(seconds)
    graph = coo_matrix((np.ones(len(a), dtype=np.int8), (a, b)), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    return labels


def person_clusters(descriptors: np.ndarray, max_distance: float = PERSON_DISTANCE) -> np.ndarray:
    """A cluster id per row: rows whose descriptors lie within ``max_distance`` (Euclidean),
    directly or through others, share one; a row without a descriptor (NaN) is its own."""
    from scipy.sparse.csgraph import connected_components
    from sklearn.neighbors import NearestNeighbors

    n = len(descriptors)
    ids = np.arange(n)
    if n == 0:
        return ids
    known = np.flatnonzero(np.isfinite(descriptors).all(axis=1))
    if len(known) > 1:
        # brute force in blocks (BLAS): a k-d tree is slower than that in 128 dimensions
        index = NearestNeighbors(radius=max_distance, algorithm="brute").fit(descriptors[known])
        graph = index.radius_neighbors_graph(mode="connectivity")
        _, sub = connected_components(graph, directed=False)
        linked = np.full(n, -1)
        linked[known] = sub + n  # offset: never equal to an unknown row's own index
        ids = np.where(linked >= 0, linked, ids)
    return np.unique(ids, return_inverse=True)[1]


def _keyed(values: Sequence[str | None]) -> np.ndarray:
    """An id per row: equal non-empty values share one, a missing value is a group of its own."""
    index: dict[str, int] = {}
    n = len(values)
    return np.array([index.setdefault(v, n + len(index)) if v else i for i, v in enumerate(values)], dtype=np.int64)


def _stats(ids: np.ndarray) -> dict[str, int]:
    if len(ids) == 0:
        return {"groups": 0, "largest": 0, "rows_sharing": 0}
    _, counts = np.unique(ids, return_counts=True)
    return {"groups": int(len(counts)), "largest": int(counts.max()), "rows_sharing": int(counts[counts > 1].sum())}


Hashes = Sequence[str | int]  # one image's perceptual hashes: whole, centre and the mirror's (or dedup's one)


def leak_groups(
    *, descriptors: np.ndarray | None, posts: Sequence[str | None], owners: Sequence[str | None],
    phashes: Sequence[str | Hashes | None], phash_distance: int, person_distance: float = PERSON_DISTANCE,
    labels: np.ndarray | None = None, descriptor_note: str | None = None,
) -> Grouping:
    """Union of the person, post, owner and near-duplicate partitions (see the module doc).

    ``phashes``: per row one hash or several (:func:`.groups.likeness_groups`). With ``labels``
    (1/0 per row), when grouping by every link would leave a label fewer than 2 groups, the
    fewest links are left out that make it 2 or more, the loosest first
    (:data:`FALLBACK_ORDER`); ``summary["not_grouped_by"]`` lists them and ``summary["by"]``
    the links applied. ``summary[link]["rows_covered"]`` says how many rows had what the link
    is computed from (a descriptor, a post id, an owner, a hash)."""
    n = len(phashes)
    hash_sets = [[h] if isinstance(h, str | int) else list(h) if h else [] for h in phashes]
    copy_distance = min(phash_distance, COPY_DISTANCE)
    parts: dict[str, np.ndarray] = {
        "near_duplicate": _components(n, [likeness_groups([h[:1] for h in hash_sets], phash_distance),
                                          likeness_groups(hash_sets, copy_distance)]) if n else np.zeros(0, np.int64),
        "post": _keyed(posts),
        "owner": _keyed(owners),
    }
    summary: dict[str, Any] = {
        "images": n,
        "near_duplicate": {"phash_distance": phash_distance, "copy_distance": copy_distance,
                           "rows_covered": sum(bool(h) for h in hash_sets),
                           "hashes_per_image": max((len(h) for h in hash_sets), default=0),
                           **_stats(parts["near_duplicate"])},
        "post": {"rows_covered": sum(bool(p) for p in posts), **_stats(parts["post"])},
        "owner": {"rows_covered": sum(bool(o) for o in owners), **_stats(parts["owner"])},
    }
    if descriptors is not None and len(descriptors) == n:
        parts["person"] = person_clusters(descriptors, person_distance)
        with_face = int(np.isfinite(descriptors).all(axis=1).sum())
        summary["person"] = {"descriptor": "dlib 128-d face descriptor", "distance": person_distance,
                             "rows_with_descriptor": with_face, "rows_covered": with_face, **_stats(parts["person"])}
    else:
        summary["person"] = {"descriptor": None, "rows_covered": 0, "note": descriptor_note or (
            f"not grouped by person: no face descriptors (the feature group {DESCRIPTOR_GROUP!r} is not computed)")}
    # a link no row had the input for links nothing: it is not claimed as applied
    by = [k for k in LINKS if k in parts and summary[k]["rows_covered"]]
    summary["no_input"] = [k for k in LINKS if k not in by]
    by, dropped, ids = _most_links(n, parts, by, labels)
    summary.update(_stats(ids))
    summary["by"] = by
    summary["not_grouped_by"] = dropped
    return Grouping(np.asarray(ids, dtype=np.int64), summary)


LINKS = ("person", "post", "owner", "near_duplicate")  # the order the texts name them in
FALLBACK_ORDER = ("near_duplicate", "person", "owner", "post")  # loosest first: the first to leave out


def _most_links(n: int, parts: dict[str, np.ndarray], by: list[str],
                labels: np.ndarray | None) -> tuple[list[str], list[str], np.ndarray]:
    """(links kept, links left out, group ids). A set of near copies of one photo (the demo's
    renderings of one face), or one label that is all one person, can be a single group: then
    CV cannot be grouped by everything. Every subset of the links is tried, fewest left out
    first and, among as many, the loosest: each link that still leaves 2 groups per label is
    kept (the figures are optimistic only by what had to go)."""
    def ids_of(links: Sequence[str]) -> np.ndarray:
        if not n:
            return np.zeros(0, dtype=np.int64)
        return _components(n, [parts[k] for k in links]) if links else np.arange(n)

    ids = ids_of(by)
    if labels is None or _splittable(ids, labels):
        return by, [], ids
    order = [k for k in FALLBACK_ORDER if k in by]
    for size in range(1, len(order) + 1):
        for left_out in itertools.combinations(order, size):  # in FALLBACK_ORDER: loosest first
            kept = [k for k in by if k not in left_out]
            ids = ids_of(kept)
            if _splittable(ids, labels):
                return kept, list(left_out), ids
    return [], order, ids_of([])


def _splittable(ids: np.ndarray, labels: np.ndarray) -> bool:
    """Whether grouped CV is possible: at least 2 groups hold each label."""
    return all(len(np.unique(ids[labels == c])) >= 2 for c in (0, 1))


LINK_WORDS = {"person": "person", "post": "post", "owner": "owner", "near_duplicate": "near copy"}


def links_text(summary: dict[str, Any]) -> str:
    """The links the groups were made of, in a few words ("person, post, owner, near copy"):
    every text that names them (the bootstrap's, the fallback's) comes from ``summary["by"]``."""
    if "by" not in summary:  # a table whose groups were given, not made here
        return "as given"
    return ", ".join(LINK_WORDS[k] for k in summary["by"]) or "none: every photo its own group"


def fallback_warning(summary: dict[str, Any]) -> str | None:
    """The warning train shows when some links had to be left out of the CV groups."""
    dropped = summary.get("not_grouped_by") or []
    if not dropped:
        return None
    kept = summary.get("by") or []
    why = " or ".join(REASONS[d] for d in dropped)
    return (f"cross-validation could not be grouped by {', '.join(LINK_WORDS[d] for d in dropped)}: with it, a"
            f" label would be fewer than 2 groups (its photos {why})."
            f" Grouped by {', '.join(LINK_WORDS[k] for k in kept) if kept else 'nothing'} only; photos that share"
            " the links left out sit on both sides of a split, so the figures are optimistic.")


REASONS = {"person": "are of one person", "post": "come from one post", "owner": "come from one account",
           "near_duplicate": "are near copies of one another"}


def descriptor_columns(columns: Sequence[str]) -> list[int]:
    """Indexes of the face descriptor's columns in a feature table, [] when it has none."""
    return [i for i, c in enumerate(columns) if c.split(".", 1)[0] == DESCRIPTOR_GROUP]


def describe(summary: dict[str, Any]) -> str:
    """One line for the report, the card and the CLI: what was grouped, how many images each
    link could be computed for, and how big the groups got. Only applied links are claimed."""
    by = summary.get("by", [])
    n = summary.get("images")
    person, nd = summary.get("person", {}), summary.get("near_duplicate", {})

    def covered(link: str, what: str) -> str:
        got = summary.get(link, {}).get("rows_covered")
        return "" if got is None or n is None else f"; {got} of {n} images had {what}"

    many = nd.get("hashes_per_image", 1) > 1
    hashes = "pHash" + (f"; centre and mirror pHashes within {nd.get('copy_distance')}" if many else "")
    words = {
        "person": f"person (face descriptors within {person.get('distance', PERSON_DISTANCE):g}"
                  f"{covered('person', 'one')}: {person.get('groups')} clusters, largest {person.get('largest')})",
        "post": f"post{_paren(covered('post', 'a post id'))}",
        "owner": f"owner{_paren(covered('owner', 'an owner'))}",
        "near_duplicate": f"near copy (pHash within distance {nd.get('phash_distance')}{hashes.removeprefix('pHash')}"
                          f"{covered('near_duplicate', 'a hash')})",
    }
    text = ", ".join(words[k] for k in by) or "nothing (every photo its own group)"
    text += f": {summary.get('groups')} groups, largest {summary.get('largest')} photos"
    if not person.get("descriptor"):
        text += f"; {person.get('note', 'not grouped by person')}"
    if missing := [k for k in summary.get("no_input", []) if k != "person" or person.get("descriptor")]:
        text += f"; not grouped by {', '.join(LINK_WORDS[k] for k in missing)}: no image had one"
    if summary.get("not_grouped_by"):
        text += "; left out, to keep 2 groups per label: " + ", ".join(LINK_WORDS[k] for k in summary["not_grouped_by"])
    return text


def _paren(text: str) -> str:
    return f" ({text.removeprefix('; ')})" if text else ""
