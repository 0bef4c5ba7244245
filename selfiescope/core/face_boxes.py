"""Every face box of an image as the manifest keeps it: the ``images.face_boxes`` column.

Whatever step provides ``faces`` (the built-in ``face_area`` or a third party's) sets the
public field ``ImageEvent.faces``; :meth:`Manifest.record` keeps them all, accepted or
rejected, as one JSON array of ``[x, y, w, h]`` in the stored image's (EXIF-oriented) pixels,
largest first; ``images.face_box`` holds the first. Only the boxes: no landmarks, crops or
scores. At most :data:`MAX_BOXES` are kept (the largest; ``n_faces`` still counts them all),
so a detector that returns thousands of raw hits cannot swell a row.

A row written before the column existed has ``face_boxes`` NULL: readers then fall back to
the one box ``face_box`` recorded, and ``n_faces`` tells how many have no box.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass

from .events import FaceBox

MAX_BOXES = 256
MAX_PIXEL = 2**31  # no image has a side this long: a larger value is no pixel position

Box = tuple[int, int, int, int]


def as_box(values: object) -> Box | None:
    """``[x, y, w, h]`` as whole pixels inside the image's top-left bound (a box reaching past
    it is clipped there), or None when it is no box: not four finite numbers below
    :data:`MAX_PIXEL`, or no area left.
    The writer and every reader apply this one rule, so what is stored is what is drawn."""
    if not isinstance(values, (list, tuple)) or len(values) != 4:
        return None
    numbers = []
    for v in values:
        try:
            number = float(v)  # numpy numbers from a third party's detector included
        except (TypeError, ValueError):
            return None
        if isinstance(v, (bool, str, bytes)) or not math.isfinite(number) or abs(number) >= MAX_PIXEL:
            return None
        numbers.append(round(number))
    x, y, w, h = numbers
    x0, y0 = max(0, x), max(0, y)
    w, h = w - (x0 - x), h - (y0 - y)
    return (x0, y0, w, h) if w > 0 and h > 0 else None


def ranked_boxes(faces: Sequence[FaceBox]) -> list[Box]:
    """The boxes of ``faces`` the manifest keeps: largest first (among equal areas the step's
    order, so the first is :attr:`ImageEvent.largest_face` whenever that is a box), at most
    :data:`MAX_BOXES`."""
    boxes = [b for b in (as_box((f.x, f.y, f.w, f.h)) for f in faces) if b is not None]
    return sorted(boxes, key=lambda b: b[2] * b[3], reverse=True)[:MAX_BOXES]


def face_columns(faces: Sequence[FaceBox]) -> tuple[str | None, str | None]:
    """The ``face_box`` (largest) and ``face_boxes`` (all) column values of ``faces``."""
    boxes = ranked_boxes(faces)
    if not boxes:
        return None, None
    return json.dumps(list(boxes[0])), json.dumps([list(b) for b in boxes], separators=(",", ":"))


@dataclass(frozen=True)
class RecordedBoxes:
    """The boxes a manifest row holds, for a reader: ``boxes[largest]`` is the largest face."""

    boxes: list[Box]
    largest: int | None
    # faces the detector counted (``n_faces``) that have no box in the row: an older row kept
    # only the largest, and a row keeps at most MAX_BOXES
    unrecorded: int


def _parsed(text: str | None) -> object:
    if not text:
        return None
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return None


def recorded_boxes(face_boxes: str | None, face_box: str | None, n_faces: int | None) -> RecordedBoxes:
    """The boxes of one ``images`` row: every one from ``face_boxes``; or only ``face_box``
    where the list is absent (an older row), unreadable, or disagrees with it about the largest
    (a row an older version wrote again). A value that is not a box is left out rather than
    drawn somewhere false."""
    single = as_box(_parsed(face_box))
    listed = _parsed(face_boxes)
    boxes = [b for b in (as_box(v) for v in listed) if b is not None] if isinstance(listed, list) else []
    largest = max(range(len(boxes)), key=lambda i: boxes[i][2] * boxes[i][3]) if boxes else None
    if largest is None or single is not None and boxes[largest] != single:
        boxes, largest = ([single], 0) if single else ([], None)
    counted = max(int(n_faces or 0), len(boxes))
    return RecordedBoxes(boxes, largest, counted - len(boxes))
