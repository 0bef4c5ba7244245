"""The ``face_area`` step: keep an image only when its largest frontal face is big enough.

The seed compared the largest raw Haar detection (``minNeighbors=0``) with an absolute
pixel count that only fitted 150x150 thumbnails. Here the threshold is the face's share
of the image area, detections are grouped, and because a face that covers 15% of the
picture is large, detection runs on a downscaled grey copy with a matching ``minSize``
(see ``benchmarks/bench_face_filter.py`` for speed and agreement with full resolution):
at the size where the smallest face counted (``min_size_ratio`` of the threshold's side) is
``min_face_px`` pixels, its longer side at most ``detect_side``.
The step detects on the event's grey view, which a collect run decodes no larger than that
(``working_side_for``); boxes are always in the original's pixels.

``detector`` chooses the face detector: ``hog`` (dlib's frontal HOG + linear SVM, the
default), ``haar`` (OpenCV's frontal cascade at 15%: the original method) or ``cnn`` (dlib's
MMOD CNN from face-recognition-models; ~40x the CPU time of HOG). The rule is the same for
all three: the largest box's share of the image area. dlib's boxes are tighter than Haar's
(about 0.7x the area) and HOG's sizes are quantised (its portraits fall from 68 to 33 of 86
between 10% and 12%), so each detector has its own default threshold
(:data:`DEFAULT_MIN_FACE_AREA`), used when ``min_face_area`` is not set. They and the default
detector come from ``benchmarks/bench_detectors.py`` (real selfies and portraits of
../shared/faces and face-free pictures, a threshold sweep): HOG at 10% keeps 21 of 40 real
selfies where Haar at 15% keeps 16, as many portraits, no face-free picture, at Haar's
speed; CNN at 8% keeps 30 selfies but costs ~40x. ``selfiescope stats --face-area-plot``
shows how many each threshold keeps per label on a dataset.
The detector's name is recorded with every decision (``event.face_detector``, which the
manifest keeps in its ``face_detector`` column, and the reject reason).
"""

from __future__ import annotations

import math
import threading
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
from pydantic import Field, model_validator

from ..api import FaceBox, ImageEvent, Options, Reject, Step, hookimpl

DEFAULT_CASCADE = "haarcascade_frontalface_default.xml"


Detector = Literal["haar", "hog", "cnn"]
# Smallest face each dlib detector finds without upsampling (HOG's 80x80 window; MMOD's
# pyramid starts near 40 px, and finds them more reliably from ~50): the image is upsampled
# when a face at the threshold would be smaller.
DLIB_MIN_FACE = {"hog": 80, "cnn": 50}


# Each detector's own threshold (its boxes differ in size): benchmarks/bench_detectors.py.
DEFAULT_MIN_FACE_AREA: dict[str, float] = {"haar": 0.15, "hog": 0.10, "cnn": 0.08}


class FaceAreaOptions(Options):
    detector: Detector = Field("hog", description="hog (dlib, the default) | haar (OpenCV; with min_face_area 0.15 "
                                                  "the original method) | cnn (dlib MMOD, ~40x slower)")
    min_face_area: float = Field(None, gt=0, lt=1, validate_default=False,  # type: ignore[assignment]
                                 description="largest face area / image area to keep; unset: the detector's own "
                                             "default (haar 0.15, hog 0.10, cnn 0.08)")
    scale_factor: float = Field(1.1, gt=1.0, le=2.0)
    min_neighbors: int = Field(5, ge=0, description="grouping: 0 keeps raw, ungrouped detections")
    cascade: str = Field(DEFAULT_CASCADE, description="a file in OpenCV's data folder, or a path")
    detect_side: int | None = Field(
        480, ge=64, description="upper bound: detect at a longer side of at most this; None = no bound"
    )
    min_size_ratio: float = Field(
        0.5, gt=0, le=1, description="detect faces down to this fraction of the threshold's side (count them)"
    )
    min_face_px: int | None = Field(
        32, ge=24, description="haar: detect at the size where the smallest face to find (min_size_ratio of the "
                               "threshold's side) is this many pixels (the cascade's window is 24); None = do not "
                               "shrink for it (with detect_side None: full size)",
    )


    @model_validator(mode="after")
    def _detector_threshold(self) -> "FaceAreaOptions":
        if self.min_face_area is None:
            self.min_face_area = DEFAULT_MIN_FACE_AREA[self.detector]
        return self


_local = threading.local()


def cascade_path(name: str) -> Path:
    path = Path(name).expanduser()
    if not path.is_file():
        path = Path(cv2.data.haarcascades) / name
    if not path.is_file():
        raise FileNotFoundError(f"Haar cascade not found: {name} (neither a file nor in {cv2.data.haarcascades})")
    return path


def _classifier(name: str) -> cv2.CascadeClassifier:
    """One classifier per thread and cascade: CascadeClassifier is not guaranteed thread-safe."""
    cache: dict[str, cv2.CascadeClassifier] = _local.__dict__.setdefault("cascades", {})
    if name not in cache:
        clf = cv2.CascadeClassifier(str(cascade_path(name)))
        if clf.empty():
            raise ValueError(f"cannot load Haar cascade {name}")
        cache[name] = clf
    return cache[name]


def threshold_side(width: int, height: int, options: FaceAreaOptions) -> float:
    """Side of the smallest square face that covers ``min_face_area`` of the image."""
    return math.sqrt(options.min_face_area * width * height)


def detection_size(width: int, height: int, options: FaceAreaOptions) -> tuple[int, int]:
    """The size Haar detection runs at for an original of ``width`` x ``height``.

    The smallest face to find (``min_size_ratio`` of the threshold's side) is brought down to
    ``min_face_px`` pixels, no further: a face at the threshold is then twice that, and larger
    faces larger still. This, not a fixed side, is what sets the cost: OpenCV scans every other
    window position where a window is under twice the cascade's 24 px (every position above),
    and a fixed side left the smallest face at 80+ px, where every position is scanned.
    ``detect_side`` bounds the longer side. The scale is a power of scaleFactor of the
    original: the window sizes scanned are then a subset of the full-size scan's, whatever size
    the decoded image handed to the detector had.
    """
    base = options.scale_factor
    steps = 0
    if options.min_face_px:
        smallest = threshold_side(width, height, options) * options.min_size_ratio
        if smallest > options.min_face_px:  # the most steps down that keep it at least min_face_px
            steps = math.floor(math.log(smallest / options.min_face_px, base) + 1e-9)
    side = options.detect_side
    if side and max(width, height) > side:
        steps = max(steps, math.ceil(math.log(max(width, height) / side, base) - 1e-9))
    if steps <= 0:
        return width, height
    scale = base ** -steps
    return max(1, round(width * scale)), max(1, round(height * scale))


def _resize_to(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    if image.shape[1] <= size[0] and image.shape[0] <= size[1]:
        return image  # already as small (a working image is never smaller than asked for)
    if size[0] < image.shape[1] * 0.5:  # a cheap bilinear step to twice the size first: area-averaging 12 MP costs 10x more
        image = cv2.resize(image, (size[0] * 2, size[1] * 2), interpolation=cv2.INTER_LINEAR)
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def _detection_grey(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``image`` (grey or RGB, any size) as the grey image detection runs on."""
    if image.ndim == 3 and size[0] < image.shape[1] * 0.5:  # shrink the colour array cheaply before converting it
        image = cv2.resize(image, (size[0] * 2, size[1] * 2), interpolation=cv2.INTER_LINEAR)
    grey = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    return _resize_to(grey, size)


def _dlib_detector(kind: str) -> Any:
    """dlib's HOG or MMOD detector, one per thread (dlib objects are not shared across threads)."""
    cache: dict[str, Any] = _local.__dict__.setdefault("dlib", {})
    if kind not in cache:
        import dlib

        if kind == "hog":
            cache[kind] = dlib.get_frontal_face_detector()
        else:
            from .landmarks import model_file  # finds face-recognition-models' files without importing it

            cache[kind] = dlib.cnn_face_detection_model_v1(str(model_file("mmod_human_face_detector.dat")))
    return cache[kind]


def _downscaled_rgb(image: np.ndarray, side: int | None) -> np.ndarray:
    height, width = image.shape[:2]
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    if side and max(width, height) > side:
        scale = side / max(width, height)
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        return cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(image)


def _detect_dlib(image_rgb: np.ndarray, options: FaceAreaOptions) -> list[FaceBox]:
    height, width = image_rgb.shape[:2]
    small = _downscaled_rgb(image_rgb, options.detect_side)
    # dlib's cost grows with the pixels (MMOD's steeply): detect at the smallest size where a
    # face of min_size_ratio of the threshold is still as large as the detector can see.
    smallest = threshold_side(small.shape[1], small.shape[0], options) * options.min_size_ratio
    shrink = DLIB_MIN_FACE[options.detector] / smallest
    if shrink < 1:
        size = (max(1, round(small.shape[1] * shrink)), max(1, round(small.shape[0] * shrink)))
        small = cv2.resize(small, size, interpolation=cv2.INTER_AREA)
    small_h, small_w = small.shape[:2]
    wanted = threshold_side(small_w, small_h, options)
    upsample = 0
    while wanted * 2 ** upsample < DLIB_MIN_FACE[options.detector] and upsample < 2:
        upsample += 1
    found = _dlib_detector(options.detector)(small, upsample)
    rects = [getattr(d, "rect", d) for d in found]  # MMOD returns (rect, confidence) pairs
    sx, sy = width / small_w, height / small_h
    min_side = threshold_side(width, height, options) * options.min_size_ratio
    boxes = []
    for r in rects:  # dlib's boxes may reach past the border: clip them, as Haar's never do
        x0, y0 = max(0, r.left()), max(0, r.top())
        x1, y1 = min(small_w, r.right() + 1), min(small_h, r.bottom() + 1)
        if x1 <= x0 or y1 <= y0:
            continue
        box = FaceBox(round(x0 * sx), round(y0 * sy), round((x1 - x0) * sx), round((y1 - y0) * sy))
        if math.sqrt(box.area) >= min_side:
            boxes.append(box)
    return sorted(boxes, key=lambda b: b.area, reverse=True)


def detect_faces(image_rgb: np.ndarray, options: FaceAreaOptions | None = None) -> list[FaceBox]:
    """Frontal faces at least ``min_size_ratio`` of the threshold's side, largest first.

    Boxes are in the pixel coordinates of ``image_rgb`` whatever size detection ran at.
    """
    height, width = image_rgb.shape[:2]
    return detect_faces_scaled(image_rgb, width, height, options)


def detect_faces_scaled(
    image: np.ndarray, width: int, height: int, options: FaceAreaOptions | None = None
) -> list[FaceBox]:
    """:func:`detect_faces` for an original of ``width`` x ``height`` decoded at a reduced size.

    ``image`` (grey or RGB, e.g. an event's ``grey`` view) is the original at any size at
    least ``FaceAreaStep.working_side_for`` asks; detection runs at the same size as for the original, and boxes
    are in the original's pixels. No full-size array is touched.
    """
    options = options or FaceAreaOptions()
    img_h, img_w = image.shape[:2]
    if options.detector != "haar":
        rgb = image if image.ndim == 3 else cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
        sx, sy = width / img_w, height / img_h
        return [FaceBox(round(b.x * sx), round(b.y * sy), round(b.w * sx), round(b.h * sy))
                for b in _detect_dlib(rgb, options)]
    return _detect_haar(_detection_grey(image, detection_size(width, height, options)), width, height, options)


def _detect_haar(grey: np.ndarray, width: int, height: int, options: FaceAreaOptions) -> list[FaceBox]:
    """Haar detection on ``grey`` (the original of ``width`` x ``height``, downscaled)."""
    small_h, small_w = grey.shape[:2]
    min_side = max(24, int(threshold_side(small_w, small_h, options) * options.min_size_ratio))
    if min_side > min(small_w, small_h):
        return []
    found = _classifier(options.cascade).detectMultiScale(
        grey,
        scaleFactor=options.scale_factor,
        minNeighbors=options.min_neighbors,
        minSize=(min_side, min_side),
    )
    sx, sy = width / small_w, height / small_h
    boxes = [
        FaceBox(round(x * sx), round(y * sy), round(w * sx), round(h * sy)) for (x, y, w, h) in np.asarray(found).reshape(-1, 4)
    ]
    return sorted(boxes, key=lambda b: b.area, reverse=True)


def face_area_fraction(faces: list[FaceBox], width: int, height: int) -> float:
    """Area of the largest face over the image area (0.0 without faces)."""
    if not faces or width <= 0 or height <= 0:
        return 0.0
    return max(f.area for f in faces) / float(width * height)


def face_summary(faces: list[FaceBox], width: int, height: int) -> dict[str, object]:
    """The face annotations training and prediction use (box, area fraction, count)."""
    largest = max(faces, key=lambda f: f.area, default=None)
    return {
        "box": largest.as_list() if largest else None,
        "area": face_area_fraction(faces, width, height),
        "n_faces": len(faces),
        "width": width,
        "height": height,
    }


class FaceAreaStep(Step):
    """Sets ``event.faces`` and ``event.face_area``; rejects ``no_face`` / ``face_too_small``."""

    requires = frozenset({"image"})
    provides = frozenset({"faces"})

    name = "face_area"
    worker_safe = True  # pure: pixels in, face boxes out
    Options = FaceAreaOptions

    @classmethod
    def known_biases(cls, options: FaceAreaOptions) -> list[str]:
        detector = {"haar": "OpenCV's frontal Haar cascade", "hog": "dlib's frontal HOG detector",
                    "cnn": "dlib's MMOD CNN detector"}[options.detector]
        return [
            f"The face filter uses {detector}: faces turned, tilted or partly hidden are often "
            "not found, so those photos are dropped and under-represented.",
            f"The face-area rule keeps a photo only if its largest face covers more than {options.min_face_area:.0%} "
            "of it: full-body, group and wide shots are dropped, so portraits skew to head-and-shoulders framing.",
        ]

    @classmethod
    def working_side(cls, options: FaceAreaOptions) -> int | None:  # type: ignore[override]
        return options.detect_side  # detection runs at most this large (None: no bound)

    @classmethod
    def working_side_for(  # type: ignore[override]
        cls, options: FaceAreaOptions, width: int, height: int
    ) -> int | None:
        if options.detector != "haar":
            return options.detect_side
        size = detection_size(width, height, options)  # the same for swapped sides
        return None if size == (width, height) else max(size)

    def own_view(self, event: ImageEvent, width: int, height: int) -> np.ndarray:
        """The pixels detection runs on, the same whatever chain decoded the event: the event's
        image when decode was asked for this step's own working size, else the bytes decoded again
        at that size. A chain whose other steps need more pixels (or predict, which decodes in
        full) would otherwise detect on other pixels (JPEG's reduced decode differs from a
        resize), and one photo could be kept by one command and rejected by another."""
        own = type(self).working_side_for(self.options, width, height) or 0
        if event.decoded_side == own or event.decoded_side == -1 and own == 0:
            return event.grey if self.options.detector == "haar" else event.image
        from .decode import MAX_DECODABLE, DecodeOptions, decode_image

        try:  # bytes the chain already took: only the decoder's own ceiling applies
            options = DecodeOptions(min_side=1, max_pixels=MAX_DECODABLE)
            image = decode_image(event.data, options, working_side=own or None).image
        except Reject:  # bytes that do not decode alone (pixels set by other code): use what the event has
            return event.grey if self.options.detector == "haar" else event.image
        return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if self.options.detector == "haar" else image

    async def open(self) -> None:
        if self.options.detector == "haar":
            cascade_path(self.options.cascade)  # fail at start, not on every image
        else:
            _dlib_detector(self.options.detector)

    def process(self, event: ImageEvent) -> None:
        if event.image is None:
            raise Reject("not_decoded", "face_area needs the decode step before it in the chain")
        # The event's one decode: the grey (or, for dlib, colour) view at the working size;
        # boxes come back in the original's pixels, as if detected on the full image.
        height, width = event.image.shape[:2]
        if event.width and event.height:
            width, height = event.width, event.height
        detector = self.options.detector
        event.face_detector = event.notes["face_detector"] = detector
        view = self.own_view(event, width, height)
        faces = detect_faces_scaled(view, width, height, self.options)
        event.faces = faces
        event.face_area = face_area_fraction(faces, width, height)
        wanted = self.options.min_face_area
        if not faces:
            raise Reject("no_face", f"no frontal face of {wanted * self.options.min_size_ratio ** 2:.1%}+ of the image "
                                    f"found ({detector} detector; [plugins.face_area] detector and min_face_area "
                                    "decide it)")
        if event.face_area <= wanted:
            raise Reject(
                "face_too_small",
                f"largest face covers {event.face_area:.1%} of the image (needs more than {wanted:.0%}); "
                f"{len(faces)} face(s) ({detector} detector; lower [plugins.face_area] min_face_area to keep it)",
            )


@hookimpl
def selfiescope_steps():
    return [FaceAreaStep]
