"""Near-duplicate clusters for grouped cross-validation: pHashes within a Hamming distance, union-find.

Two copies of one photo (resized, re-encoded, lightly cropped) must never sit on both
sides of a split, or cross-validation flatters the model.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _close_pairs_brute(values: np.ndarray, max_distance: int) -> tuple[np.ndarray, np.ndarray]:
    block = max(1, min(2048, 20_000_000 // len(values)))  # at most ~20M distances (160 MB) at once
    firsts, seconds = [], []
    for start in range(0, len(values), block):
        dist = np.bitwise_count(values[start:start + block, None] ^ values[None, start:])
        a, b = np.nonzero(dist <= max_distance)
        keep = a + start < b + start
        firsts.append(a[keep] + start)
        seconds.append(b[keep] + start)
    return np.concatenate(firsts), np.concatenate(seconds)


def _close_pairs_banded(values: np.ndarray, max_distance: int) -> tuple[np.ndarray, np.ndarray]:
    """Multi-index hashing: split the 64 bits into ``max_distance + 1`` bands; two hashes within
    ``max_distance`` bits agree exactly on at least one band (pigeonhole), so only pairs that
    share a band value are compared."""
    bands = max_distance + 1
    edges = np.linspace(0, 64, bands + 1).astype(int)
    firsts, seconds = [], []
    for lo, hi in zip(edges[:-1], edges[1:]):
        keys = (values >> np.uint64(lo)) & np.uint64((1 << (hi - lo)) - 1)
        order = np.argsort(keys, kind="stable")
        sorted_keys = keys[order]
        cuts = np.flatnonzero(np.diff(sorted_keys)) + 1
        for bucket in np.split(order, cuts):
            if len(bucket) < 2:
                continue
            if len(bucket) > 4096:  # a skewed band: fall back to blocks for this bucket
                a, b = _close_pairs_brute(values[bucket], max_distance)
            else:
                dist = np.bitwise_count(values[bucket, None] ^ values[None, bucket])
                a, b = np.nonzero(np.triu(dist <= max_distance, k=1))
            firsts.append(bucket[a])
            seconds.append(bucket[b])
    if not firsts:
        return np.array([], int), np.array([], int)
    return np.concatenate(firsts), np.concatenate(seconds)


def near_duplicate_groups(phashes: Sequence[str | None], max_distance: int) -> np.ndarray:
    """Cluster ids: images whose pHashes are within ``max_distance`` bits share one (union-find,
    so clusters are transitive). An image without a hash is a cluster of its own."""
    return likeness_groups([[h] if h else [] for h in phashes], max_distance)


STORED_KINDS = 2  # dedup's whole and centre hashes; any after them (the mirror's) are lookup keys only


def likeness_groups(hash_sets: Sequence[Sequence[str | int]], max_distance: int) -> np.ndarray:
    """Cluster ids from several hashes per image (hex strings or ints, in dedup's order: whole,
    centre, then the mirror's two), by dedup's own rule: two images share a cluster when a
    hash of one is within ``max_distance`` bits of the whole or centre hash of the other,
    directly or through others (two mirror hashes are not compared: mirroring both changes
    nothing). An image without a hash is a cluster of its own."""
    n = len(hash_sets)
    parent = np.arange(n)

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    owner = np.array([i for i, hashes in enumerate(hash_sets) for _ in hashes], dtype=np.int64)
    lookup_only = np.array([k >= STORED_KINDS for hashes in hash_sets for k in range(len(hashes))], dtype=bool)
    if len(owner) > 1:
        values = np.array([(int(h, 16) if isinstance(h, str) else int(h)) & 0xFFFFFFFFFFFFFFFF
                           for hashes in hash_sets for h in hashes], dtype=np.uint64)
        first, second = (_close_pairs_banded if max_distance < 16 else _close_pairs_brute)(values, max_distance)
        compared = ~(lookup_only[first] & lookup_only[second])
        for i, j in zip(owner[first[compared]], owner[second[compared]]):
            ri, rj = find(int(i)), find(int(j))
            if ri != rj:
                parent[max(ri, rj)] = min(ri, rj)
    roots = np.array([find(i) for i in range(n)], dtype=np.int64)
    _, ids = np.unique(roots, return_inverse=True)
    return ids
