"""The face-area filter on real faces (../shared/faces) and its options."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pytest
from pydantic import ValidationError

from selfiescope.core.events import ImageEvent, Origin, Reject
from selfiescope.plugins.decode import DecodeOptions, decode_image
from selfiescope.plugins.face_area import (
    FaceAreaOptions,
    FaceAreaStep,
    _classifier,
    detect_faces,
    face_area_fraction,
    face_summary,
)

pytestmark = pytest.mark.faces


def load(path: Path) -> np.ndarray:
    return decode_image(path.read_bytes(), DecodeOptions(min_side=1)).image


def step(**options) -> FaceAreaStep:
    return FaceAreaStep(FaceAreaOptions(detector="haar", **options), run=None)  # type: ignore[arg-type]


def event_for(image: np.ndarray) -> ImageEvent:
    ev = ImageEvent(origin=Origin("test"), label="selfie", data=b"x")
    ev.image = image
    return ev


def test_close_portrait_is_kept_with_its_face_recorded(faces_dir: Path) -> None:
    image = load(faces_dir / "portrait" / "lin-manuel-miranda.png")
    ev = event_for(image)
    step().process(ev)
    face = ev.largest_face
    assert face is not None and ev.face_area is not None and ev.face_area > 0.15
    h, w = image.shape[:2]
    assert 0 <= face.x < w and 0 <= face.y < h and face.x + face.w <= w + 1 and face.y + face.h <= h + 1
    assert ev.face_area == pytest.approx(face.area / (w * h))


def test_wide_shot_is_rejected_as_face_too_small(faces_dir: Path) -> None:
    ev = event_for(load(faces_dir / "portrait" / "obama-480p.jpg"))
    with pytest.raises(Reject) as info:
        step().process(ev)
    assert info.value.code == "face_too_small"
    assert ev.faces and 0.02 < ev.face_area < 0.15


def test_group_photo_with_small_faces_is_rejected(faces_dir: Path) -> None:
    ev = event_for(load(faces_dir / "group" / "t1.jpg"))
    with pytest.raises(Reject) as info:
        step().process(ev)
    assert info.value.code in {"no_face", "face_too_small"}


def test_reason_says_the_measured_fraction(faces_dir: Path) -> None:
    image = load(faces_dir / "portrait" / "lin-manuel-miranda.png")
    ev = event_for(image)
    with pytest.raises(Reject) as info:
        step(min_face_area=0.9).process(ev)
    assert info.value.code == "face_too_small"
    assert f"{ev.face_area:.1%}" in info.value.reason and ev.faces  # faces still recorded for training


def test_threshold_is_relative_not_absolute_pixels(faces_dir: Path) -> None:
    """The seed's absolute 0.15*150*150 px would keep any big image; relative area must not change with size."""
    image = load(faces_dir / "portrait" / "lin-manuel-miranda.png")
    big = cv2.resize(image, (image.shape[1] * 3, image.shape[0] * 3), interpolation=cv2.INTER_CUBIC)
    a = face_area_fraction(detect_faces(image), image.shape[1], image.shape[0])
    b = face_area_fraction(detect_faces(big), big.shape[1], big.shape[0])
    assert a == pytest.approx(b, abs=0.03)


def test_boxes_are_in_original_pixels_when_detection_is_downscaled(faces_dir: Path) -> None:
    image = load(faces_dir / "portrait" / "lin-manuel-miranda.png")
    big = cv2.resize(image, (image.shape[1] * 4, image.shape[0] * 4), interpolation=cv2.INTER_CUBIC)
    fast = detect_faces(big, FaceAreaOptions(detector="haar", detect_side=400))
    full = detect_faces(big, FaceAreaOptions(detector="haar", detect_side=None, min_face_px=None))
    assert fast and full
    f, g = fast[0], full[0]
    cx, cy = f.x + f.w / 2, f.y + f.h / 2
    assert abs(cx - (g.x + g.w / 2)) < 0.1 * g.w and abs(cy - (g.y + g.h / 2)) < 0.1 * g.h
    assert f.w == pytest.approx(g.w, rel=0.2)


def test_most_close_portraits_pass_and_group_fails(faces_dir: Path) -> None:
    files = sorted((faces_dir / "portrait").glob("caltech_*.jpg"))[:20]
    kept = sum(
        face_area_fraction(detect_faces(img := load(p)), img.shape[1], img.shape[0]) > FaceAreaOptions().min_face_area
        for p in files  # the default detector at its own default threshold
    )
    assert kept >= 0.6 * len(files)


def test_no_face_on_a_blank_image_and_not_decoded_is_explicit() -> None:
    with pytest.raises(Reject) as info:
        step().process(event_for(np.full((300, 300, 3), 128, np.uint8)))
    assert info.value.code == "no_face"
    with pytest.raises(Reject) as info:
        step().process(ImageEvent(origin=Origin("t"), label="x", data=b"x"))
    assert info.value.code == "not_decoded"


def test_options_are_validated_and_the_cascade_is_checked() -> None:
    with pytest.raises(ValidationError):
        FaceAreaOptions(detector="haar", min_face_area=1.5)
    with pytest.raises(ValidationError):
        FaceAreaOptions(detector="haar", scale_factor=1.0)
    with pytest.raises(FileNotFoundError):
        detect_faces(np.zeros((100, 100, 3), np.uint8), FaceAreaOptions(detector="haar", cascade="no_such_cascade.xml"))


def test_one_classifier_per_thread() -> None:
    seen: dict[int, int] = {}

    def grab() -> None:
        seen[threading.get_ident()] = id(_classifier("haarcascade_frontalface_default.xml"))

    threads = [threading.Thread(target=grab) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(seen.values())) == 3


def test_parallel_detection_gives_the_same_answers(faces_dir: Path) -> None:
    images = [load(p) for p in sorted((faces_dir / "selfie").glob("*.jpg"))[:12]]
    serial = [[b.as_list() for b in detect_faces(im)] for im in images]
    with ThreadPoolExecutor(4) as pool:
        parallel = list(pool.map(lambda im: [b.as_list() for b in detect_faces(im)], images))
    assert parallel == serial


def test_face_summary_for_training() -> None:
    from selfiescope.core.events import FaceBox

    summary = face_summary([FaceBox(0, 0, 10, 10), FaceBox(5, 5, 40, 50)], 100, 100)
    assert summary == {"box": [5, 5, 40, 50], "area": 0.2, "n_faces": 2, "width": 100, "height": 100}
