"""The image event: one object per image, flowing source -> chain -> storage."""

from __future__ import annotations

import hashlib
import time
import weakref
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from .text import redact_text


class Decision(str, Enum):
    PENDING = "pending"
    ACCEPTED = "accepted"
    REJECTED = "rejected"  # a step decided against the image (a Reject): final, recorded
    FAILED = "failed"  # something broke (a write, a read, a plugin bug): not a decision; a rerun retries it


class Reject(Exception):
    """Raised by a chain step to drop the current image with a reason.

    ``code`` is a short stable key for statistics (``"corrupt"``, ``"no_face"``,
    ``"duplicate"``); ``reason`` is the human-readable detail.
    """

    def __init__(self, code: str, reason: str | None = None) -> None:
        super().__init__(reason or code)
        self.code = code
        self.reason = reason or code


@dataclass
class Origin:
    """Where an image came from. Everything here is metadata, never trusted for paths."""

    source: str  # name of the source plugin ("instagram", "folder", ...)
    job: str = ""  # hashtag, gallery tag, or folder
    post_id: str | None = None
    post_url: str | None = None
    image_url: str | None = None
    path: str | None = None  # local file the bytes came from (folder source)
    extra: dict[str, Any] = field(default_factory=dict)  # caption, owner, timestamp, ...


@dataclass
class FaceBox:
    x: int
    y: int
    w: int
    h: int

    @property
    def area(self) -> int:
        return self.w * self.h

    def as_list(self) -> list[int]:
        return [self.x, self.y, self.w, self.h]


@dataclass
class ImageEvent:
    """One image on its way through the chain.

    ``data`` holds the original bytes (kept untouched for storage); ``image`` is the
    decoded RGB ``numpy`` array once the ``decode`` step ran (never serialised).
    Steps annotate the event; the engine records the decision.
    """

    origin: Origin
    label: str
    data: bytes
    image: Any = None  # numpy.ndarray (H, W, 3) uint8 RGB after decode
    format: str | None = None  # "jpeg", "png", "webp", ...
    width: int | None = None
    height: int | None = None
    content_hash: str = ""
    phash: str | None = None  # hex perceptual hash
    # The centre crop's hash (stored, and sealed in a forgotten photo's tombstone) and the mirror
    # image's whole and centre hashes: set by the step that provides "phash" (dedup).
    phash_centre: str | None = None
    phash_mirror: str | None = None
    phash_mirror_centre: str | None = None
    faces: list[FaceBox] = field(default_factory=list)
    face_area: float | None = None  # largest face area / image area
    face_detector: str | None = None  # which detector found ``faces`` (the manifest's face_detector column)
    exif: bytes | None = None  # the raw EXIF block of the original bytes, set by the step that provides "exif"
    id: str | None = None  # stable storage id, set by the chain (content or post id)
    location: str | None = None  # where storage put it
    decision: Decision = Decision.PENDING
    rejected_by: str | None = None
    reject_code: str | None = None
    reject_reason: str | None = None
    notes: dict[str, Any] = field(default_factory=dict)  # free annotations by steps
    created: float = field(default_factory=time.time)
    # --- one decode per image, shared: the grey view, computed once from ``image`` ---
    # the longest side decode was asked for: 0 full resolution, -1 unknown (pixels set by other code);
    # with the bytes it fixes the pixels, so a step can tell whether ``image`` is what it would decode itself
    decoded_side: int = field(default=-1, init=False, repr=False, compare=False)
    _grey_view: Any = field(default=None, init=False, repr=False, compare=False)
    _grey_of: Any = field(default=None, init=False, repr=False, compare=False)  # weakref to its image

    def __post_init__(self) -> None:
        if not self.content_hash:
            self.content_hash = hashlib.sha256(self.data).hexdigest()

    @property
    def size(self) -> int:
        return len(self.data)

    # --- one decode per image, shared ---
    # ``image`` is the colour view: decoded once, possibly reduced to the size the chain's steps
    # need (``Step.working_side``); ``width``/``height`` stay the original's (EXIF-oriented), and
    # face boxes are in original pixels. ``grey`` is the grey view of the same pixels.

    @property
    def grey(self) -> Any:
        """``image`` in grey ((H, W) uint8), computed on first use and cached until ``image`` changes."""
        image = self.image
        if image is None:
            return None
        if self._grey_of is None or self._grey_of() is not image:
            if image.ndim == 2:
                grey = image
            else:
                import cv2

                grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
            self._grey_view, self._grey_of = grey, weakref.ref(image)
        return self._grey_view

    @property
    def image_scale(self) -> float:
        """Pixels of ``image`` per original pixel (1.0 when decoded at full resolution)."""
        if self.image is None or not self.width:
            return 1.0
        return self.image.shape[1] / self.width

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.pop("_grey_view", None)  # a cache, and a weakref cannot be pickled
        state.pop("_grey_of", None)
        return state

    @property
    def largest_face(self) -> FaceBox | None:
        return max(self.faces, key=lambda f: f.area, default=None)

    def reject(self, step: str, code: str, reason: str) -> None:
        self.decision = Decision.REJECTED
        self.rejected_by = step
        self.reject_code = code
        self.reject_reason = redact_text(reason)  # stored, logged and shown: never a credential

    def fail(self, step: str, code: str, reason: str) -> None:
        """Mark the image as not processed because something broke (never a rejection)."""
        self.decision = Decision.FAILED
        self.rejected_by = step
        self.reject_code = code
        self.reject_reason = redact_text(reason)

    @property
    def stored(self) -> bool:
        """Whether a storage backend holds these bytes now (the chain had a storing step)."""
        return self.decision is Decision.ACCEPTED and self.location is not None

    def describe(self) -> str:
        from .text import printable, redact_url

        o = self.origin
        return printable(redact_url(o.post_url or o.image_url) or o.path or self.content_hash[:12])
