"""Every face box of an image as the manifest keeps it: the ``images.face_boxes`` column.

Whatever step provides ``faces`` (the built-in ``face_area`` or a third party's) sets the
public field ``ImageEvent.faces``; :meth:`Manifest.record` keeps them all, accepted or
rejected, as one JSON array of ``[x, y, w, h]`` in the stored image's (EXIF-oriented) pixels,
largest first: ``face_boxes[0]`` is the box ``images.face_box`` holds. Only the boxes: no
landmarks, crops or scores. At most :data:`MAX_BOXES` are kept (the largest; ``n_faces``
still counts them all), so a detector that returns thousands of raw hits cannot swell a row.

A row written before the column existed has ``face_boxes`` NULL: readers then fall back to
the one box ``face_box`` recorded, and ``n_faces`` tells how many went unrecorded.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass

from .events import FaceBox

MAX_BOXES = 256

Box = tuple[int, int, int, int]


def boxes_json(faces: Sequence[FaceBox]) -> str | None:
    """``faces`` as the ``face_boxes`` column holds them (None without a face).

    Sorted by area, largest first; among equal areas the step's order is kept (a stable sort),
    so the first is :attr:`ImageEvent.largest_face`, the one ``face_box`` records.
    """
    if not faces:
        return None
    ranked = sorted(faces, key=lambda f: f.area, reverse=True)[:MAX_BOXES]
    return json.dumps([[int(f.x), int(f.y), int(f.w), int(f.h)] for f in ranked], separators=(",", ":"))


@dataclass(frozen=True)
class RecordedBoxes:
    """The boxes a manifest row holds, for a reader: ``boxes[largest]`` is the largest face."""

    boxes: list[Box]
    largest: int | None
    # faces the detector counted (``n_faces``) that have no box in the row: an older row kept
    # only the largest, and a row keeps at most MAX_BOXES
    unrecorded: int


def _box(value: object) -> Box | None:
    """One ``[x, y, w, h]`` of non-negative whole numbers with a positive size, else None."""
    if not isinstance(value, list) or len(value) != 4:
        return None
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value):
        return None
    x, y, w, h = (int(v) for v in value)
    return (x, y, w, h) if x >= 0 and y >= 0 and w > 0 and h > 0 else None


def _parsed(text: str | None) -> object:
    if not text:
        return None
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return None


def recorded_boxes(face_boxes: str | None, face_box: str | None, n_faces: int | None) -> RecordedBoxes:
    """The boxes of one ``images`` row: every one from ``face_boxes``, or without it (an older
    row, or one whose column cannot be read) the single ``face_box``; a value that is not a
    box is left out rather than drawn somewhere false."""
    listed = _parsed(face_boxes)
    if isinstance(listed, list) and listed:
        boxes = [b for b in (_box(v) for v in listed) if b is not None]
    else:
        single = _box(_parsed(face_box))
        boxes = [single] if single else []
    counted = max(int(n_faces or 0), len(boxes))
    largest = max(range(len(boxes)), key=lambda i: boxes[i][2] * boxes[i][3]) if boxes else None
    return RecordedBoxes(boxes, largest, counted - len(boxes))
