"""Cross-validation groups by what leaks between photos: the person, the post and owner, near copies.

Dedup already rejected every pair within its own pHash distance, so grouping by that
distance again would make every photo its own group. What lets a model score well on a
held-out photo without learning the task is something it saw in training: the same
face (the embedding recognises people), the same post or account (same light, same
camera, same day), or a looser near-copy (a burst, a recrop). Each is a partition of the
rows; the groups are the connected components of their union (union-find), so photos
linked by any one of them, directly or through others, share a group and never sit on
both sides of a split.

Person: dlib's 128-d face descriptor (the ``embedding`` feature group); two faces closer
than ``person_distance`` (dlib's usual 0.6 Euclidean, its documented same-person
threshold) are one person. Single linkage over the pairs is stricter than dlib's
chinese-whispers clustering: it can only merge more, which errs on the side of honest folds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .groups import near_duplicate_groups

PERSON_DISTANCE = 0.6
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


def leak_groups(
    *, descriptors: np.ndarray | None, posts: Sequence[str | None], owners: Sequence[str | None],
    phashes: Sequence[str | None], phash_distance: int, person_distance: float = PERSON_DISTANCE,
    labels: np.ndarray | None = None,
) -> Grouping:
    """Union of the person, post, owner and near-duplicate partitions (see the module doc).
    With ``labels`` (1/0 per row), links are left out (:data:`FALLBACK_ORDER`) while a label
    would be fewer than 2 groups; ``summary["not_grouped_by"]`` lists them."""
    n = len(phashes)
    parts: dict[str, np.ndarray] = {
        "near_duplicate": near_duplicate_groups(list(phashes), phash_distance),
        "post": _keyed(posts),
        "owner": _keyed(owners),
    }
    summary: dict[str, Any] = {"near_duplicate": {"phash_distance": phash_distance, **_stats(parts["near_duplicate"])},
                               "post": _stats(parts["post"]), "owner": _stats(parts["owner"])}
    if descriptors is not None and len(descriptors) == n:
        parts["person"] = person_clusters(descriptors, person_distance)
        with_face = int(np.isfinite(descriptors).all(axis=1).sum())
        summary["person"] = {"descriptor": "dlib 128-d face descriptor", "distance": person_distance,
                             "rows_with_descriptor": with_face, **_stats(parts["person"])}
    else:
        summary["person"] = {"descriptor": None,
                             "note": f"not grouped by person: the feature group {DESCRIPTOR_GROUP!r} is not computed"}
    by = [k for k in ("person", "post", "owner", "near_duplicate") if k in parts]
    ids = _components(n, [parts[k] for k in by]) if n else np.zeros(0, dtype=np.int64)
    dropped: list[str] = []
    if labels is not None:
        # A set of near copies of one photo (the demo's renderings of one face) can be a single
        # group per label: then CV cannot be grouped by everything. Leave out the loosest
        # links first, and say so: the figures are then optimistic.
        for weakest in FALLBACK_ORDER:
            if _splittable(ids, labels) or weakest not in by:
                continue
            by.remove(weakest)
            dropped.append(weakest)
            ids = _components(n, [parts[k] for k in by]) if by else np.arange(n)
    summary.update(_stats(ids))
    summary["by"] = by
    summary["not_grouped_by"] = dropped
    return Grouping(np.asarray(ids, dtype=np.int64), summary)


FALLBACK_ORDER = ("near_duplicate", "person", "owner", "post")


def _splittable(ids: np.ndarray, labels: np.ndarray) -> bool:
    """Whether grouped CV is possible: at least 2 groups hold each label."""
    return all(len(np.unique(ids[labels == c])) >= 2 for c in (0, 1))


def fallback_warning(summary: dict[str, Any]) -> str | None:
    """The warning train shows when some links had to be left out of the CV groups."""
    dropped = summary.get("not_grouped_by") or []
    if not dropped:
        return None
    return (f"cross-validation could not be grouped by {', '.join(d.replace('_', '-') for d in dropped)}: with it, a"
            " label would be fewer than 2 groups (its photos are near copies of one another or of one person)."
            " Photos that share those links sit on both sides of a split, so the figures are optimistic.")


def descriptor_columns(columns: Sequence[str]) -> list[int]:
    """Indexes of the face descriptor's columns in a feature table, [] when it has none."""
    return [i for i, c in enumerate(columns) if c.split(".", 1)[0] == DESCRIPTOR_GROUP]


def describe(summary: dict[str, Any]) -> str:
    """One line for the report, the card and the CLI: what was grouped and how big it got."""
    by = summary.get("by", [])
    person, nd = summary.get("person", {}), summary.get("near_duplicate", {})
    words = {
        "person": f"person (face descriptors within {person.get('distance', PERSON_DISTANCE):g}:"
                  f" {person.get('groups')} clusters, largest {person.get('largest')})",
        "post": "post", "owner": "owner",
        "near_duplicate": f"near-duplicate (pHash distance <= {nd.get('phash_distance')})",
    }
    text = ", ".join(words[k] for k in by) or "nothing (every photo its own group)"
    text += f": {summary.get('groups')} groups, largest {summary.get('largest')} photos"
    if not person.get("descriptor"):
        text += f"; {person.get('note', 'not grouped by person')}"
    if summary.get("not_grouped_by"):
        text += "; left out, to keep 2 groups per label: " + ", ".join(summary["not_grouped_by"])
    return text
