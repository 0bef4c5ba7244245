"""What the CV groups are computed from (:func:`table_grouping`); near copies from the stored images themselves.

The manifest's ``phash`` is set only by a chain step that provides it (dedup); an import
with ``--chain decode,face_area,store`` stores none, and grouping by an empty column would
silently make every photo its own near-copy group. So training hashes every stored image
as dedup does (:func:`selfiescope.core.likeness.decode_grey`: the reduced decode dedup's
pixels come from; ``compute_phashes`` / ``compute_mirror_phashes``: whole picture, centre,
and the horizontal mirror's two, since front cameras and re-posts flip photos) from the bytes
it reads for the features anyway, and keeps the four hashes in the feature cache under
:data:`LIKENESS`, so a later training reads them without decoding again.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ...core.likeness import HASH_WORKING_SIDE, compute_mirror_phashes, compute_phashes, decode_grey
from ...core.settings import TrainPipeline
from .leak_groups import Grouping, descriptor_columns, leak_groups

if TYPE_CHECKING:  # pragma: no cover
    from .dataset import DatasetRow

LIKENESS = "~likeness"  # the feature cache's name for the four hashes (no feature group can be named so)
LIKENESS_VERSION = f"1+{HASH_WORKING_SIDE}"
KINDS = ("whole", "centre", "mirror", "mirror_centre")


def image_hashes(data: bytes) -> dict[str, int]:
    """The four perceptual hashes of stored bytes as ints ({} for bytes that cannot be decoded)."""
    grey = decode_grey(data)
    if grey is None:
        return {}
    hexes = (*compute_phashes(grey), *compute_mirror_phashes(grey))
    return {kind: int(h, 16) for kind, h in zip(KINDS, hexes)}


def row_hashes(computed: Mapping[str, Any] | None, recorded: str | None) -> list[int]:
    """One row's hashes for the near-copy link: those computed from its image, else the one the
    chain recorded (a row whose bytes could not be read or decoded)."""
    values = [int(computed[k]) for k in KINDS if isinstance((computed or {}).get(k), int)]  # whole first
    if values:
        return values
    try:
        return [int(recorded, 16) & 0xFFFFFFFFFFFFFFFF] if recorded else []
    except ValueError:
        return []


def table_grouping(X: np.ndarray, columns: Sequence[str], rows: Sequence["DatasetRow"], pipeline: TrainPipeline,
                   y: np.ndarray | None = None, hashes: Sequence[Sequence[int]] | None = None) -> Grouping:
    """The CV groups of a feature table: person (its face descriptors, when computed), post, owner,
    near copy (``hashes`` per row, computed from the images; else the pHash the chain recorded)."""
    picked = descriptor_columns(columns)
    return leak_groups(descriptors=X[:, picked] if picked else None, posts=[r.post for r in rows],
                       owners=[r.owner for r in rows],
                       phashes=list(hashes) if hashes is not None else [r.phash for r in rows],
                       phash_distance=pipeline.group_distance, person_distance=pipeline.person_distance, labels=y)
