"""What the CV groups are computed from (:func:`table_grouping`); near copies from the stored images themselves.

The manifest's ``phash`` is set only by a chain step that provides it (dedup); an import
with ``--chain decode,face_area,store`` stores none, and grouping by an empty column would
silently make every photo its own near-copy group. So training hashes every stored image
as dedup does (:func:`selfiescope.core.likeness.decode_grey`: the reduced decode dedup's
pixels come from; ``compute_phashes`` / ``compute_mirror_phashes``: whole picture, centre,
and the horizontal mirror's two, since front cameras and re-posts flip photos) from the bytes
it reads for the features anyway, and keeps the four hashes in the feature cache under
:data:`LIKENESS`, so a later training reads them without decoding again.

Person groups come from the face descriptor (the ``embedding`` feature group). A pipeline
whose features leave it out still gets them (``group_by_person``, on by default): the
descriptor is computed for grouping alone, on the picture as decoded with the collection's
box, and cached under :data:`PERSON`; it never becomes a model column.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ...core.likeness import HASH_WORKING_SIDE, compute_mirror_phashes, compute_phashes, decode_grey
from ...core.settings import TrainPipeline
from .leak_groups import DESCRIPTOR_GROUP, Grouping, descriptor_columns, leak_groups

if TYPE_CHECKING:  # pragma: no cover
    from ...core.components import FeatureExtractor
    from ...core.plugins import Registry
    from .dataset import DatasetRow

LIKENESS = "~likeness"  # the feature cache's name for the four hashes (no feature group can be named so)
LIKENESS_VERSION = f"1+{HASH_WORKING_SIDE}"
KINDS = ("whole", "centre", "mirror", "mirror_centre")
PERSON = "~person"  # the feature cache's name for a descriptor kept for the person groups alone


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


def person_extractor(registry: "Registry", pipeline: TrainPipeline) -> "FeatureExtractor | None":
    """The descriptor group, set up with its defaults, when the person groups need it computed
    for them alone: not among the model's features, ``group_by_person`` on, installed."""
    cls = registry.features.get(DESCRIPTOR_GROUP)
    if DESCRIPTOR_GROUP in pipeline.features or not pipeline.group_by_person or cls is None:
        return None
    return cls(cls.Options())


def person_note(pipeline: TrainPipeline) -> str | None:
    """Why no row has a descriptor, where the settings are the reason."""
    if DESCRIPTOR_GROUP not in pipeline.features and not pipeline.group_by_person:
        return (f"not grouped by person: group_by_person = false and the feature group {DESCRIPTOR_GROUP!r} "
                "is not computed")
    return None


def table_grouping(X: np.ndarray, columns: Sequence[str], rows: Sequence["DatasetRow"], pipeline: TrainPipeline,
                   y: np.ndarray | None = None, hashes: Sequence[Sequence[int]] | None = None,
                   persons: Sequence[Mapping[str, float] | None] | None = None) -> Grouping:
    """The CV groups of a feature table: person (its face descriptors: the model's columns, else
    ``persons``, one descriptor per row computed for grouping alone), post, owner, near copy
    (``hashes`` per row, computed from the images; else the pHash the chain recorded)."""
    picked = descriptor_columns(columns)
    descriptors = X[:, picked] if picked else None
    if descriptors is None and persons is not None:
        width = max((len(p) for p in persons if p), default=0)
        if width:
            descriptors = np.array([[p[k] for k in sorted(p)] if p and len(p) == width else [np.nan] * width
                                    for p in persons], dtype=np.float64)
    return leak_groups(descriptors=descriptors, posts=[r.post for r in rows],
                       owners=[r.owner for r in rows],
                       phashes=list(hashes) if hashes is not None else [r.phash for r in rows],
                       phash_distance=pipeline.group_distance, person_distance=pipeline.person_distance, labels=y,
                       descriptor_note=person_note(pipeline))
