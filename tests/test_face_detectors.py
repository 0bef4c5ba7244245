"""The face filter's detector choice: haar (default), dlib HOG, dlib MMOD CNN."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from selfiescope.core.app import App
from selfiescope.core.events import ImageEvent, Origin, Reject
from selfiescope.core.settings import ScrapePipeline, settings_from_dict
from selfiescope.pipelines.collecting.collect import collect
from selfiescope.plugins.decode import DecodeOptions, decode_image
from selfiescope.plugins.face_area import FaceAreaOptions, FaceAreaStep, detect_faces
from selfiescope.testing.synth import astronaut

HEAD = (130, 10, 320, 200)  # x0, y0, x1, y1 around the astronaut's face
FACE_CENTRE = (93, 103)  # in the crop: the nose, found by hand
DETECTORS = ["haar", "hog", "cnn"]


def head() -> np.ndarray:
    x0, y0, x1, y1 = HEAD
    return np.ascontiguousarray(astronaut()[y0:y1, x0:x1])


@pytest.mark.parametrize("detector", DETECTORS)
def test_each_detector_finds_the_known_face(detector: str) -> None:
    image = head()
    faces = detect_faces(image, FaceAreaOptions(detector=detector, min_face_area=0.1))
    assert len(faces) == 1, faces
    face = faces[0]
    cx, cy = face.x + face.w / 2, face.y + face.h / 2
    assert abs(cx - FACE_CENTRE[0]) < 20 and abs(cy - FACE_CENTRE[1]) < 25, face
    assert 0.1 < face.area / image[..., 0].size < 0.5
    h, w = image.shape[:2]
    assert face.x >= 0 and face.y >= 0 and face.x + face.w <= w and face.y + face.h <= h


@pytest.mark.parametrize("detector", ["hog", "cnn"])
def test_boxes_are_in_the_input_pixels_whatever_size_detection_ran_at(detector: str) -> None:
    small = head()
    big = np.asarray(Image.fromarray(small).resize((760, 760), Image.BICUBIC))  # detect_side 480 downscales it
    (a,), (b,) = detect_faces(small, FaceAreaOptions(detector=detector)), detect_faces(big, FaceAreaOptions(detector=detector))
    # detection ran at other scales (upsampled / downscaled): box sizes vary with dlib's pyramid, positions do not
    assert b.area / big[..., 0].size == pytest.approx(a.area / small[..., 0].size, rel=0.4)
    f = 760 / small.shape[0]
    tolerance = 0.2 * a.w * f  # a fifth of the face: a wrong scale mapping would be off by the whole face
    assert abs((b.x + b.w / 2) - (a.x + a.w / 2) * f) < tolerance and abs((b.y + b.h / 2) - (a.y + a.h / 2) * f) < tolerance


def test_no_face_and_the_detector_is_in_the_reason() -> None:
    event = ImageEvent(origin=Origin("test"), label="selfie", data=b"x")
    event.image = np.full((300, 300, 3), 128, np.uint8)
    with pytest.raises(Reject) as info:
        FaceAreaStep(FaceAreaOptions(detector="hog"), run=None).process(event)  # type: ignore[arg-type]
    assert info.value.code == "no_face" and "hog detector" in info.value.reason
    assert event.notes["face_detector"] == "hog"


async def test_the_detector_is_recorded_in_the_manifest(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(head()).save(folder / "face.jpg", quality=95)
    Image.new("RGB", (200, 200), (90, 90, 90)).save(folder / "blank.jpg")
    settings = settings_from_dict({"storage": {"root": str(tmp_path / "data")},
                                   "plugins": {"face_area": {"detector": "hog", "min_face_area": 0.1}}})
    pipeline = ScrapePipeline(kind="import", source="folder", paths=[folder], label="selfie",
                              chain=["decode", "face_area", "store"])
    stats = await collect(App.create(settings), "import", pipeline=pipeline)
    assert stats.accepted == 1 and stats.rejected_by_reason == {"no_face": 1}
    db = sqlite3.connect(tmp_path / "data" / "manifest.sqlite")
    assert db.execute("SELECT decision, face_detector FROM images ORDER BY decision").fetchall() == [
        ("accepted", "hog"), ("rejected", "hog")]


def test_an_older_manifest_gains_the_column(tmp_path: Path) -> None:
    from selfiescope.core.manifest import Manifest

    from selfiescope.core.manifest import SCHEMA

    assert " face_detector TEXT," in SCHEMA
    db = sqlite3.connect(tmp_path / "manifest.sqlite")
    db.executescript(SCHEMA.replace(" face_detector TEXT,", ""))  # the manifest as written before the column
    db.execute("INSERT INTO images(content_hash, label, decision) VALUES ('abc', 'selfie', 'accepted')")
    db.commit()
    db.close()
    Manifest(tmp_path / "manifest.sqlite").close()
    db = sqlite3.connect(tmp_path / "manifest.sqlite")
    assert db.execute("SELECT content_hash, face_detector FROM images").fetchall() == [("abc", None)]


@pytest.mark.faces
@pytest.mark.parametrize("detector", DETECTORS)
def test_each_detector_keeps_a_close_real_portrait(faces_dir: Path, detector: str) -> None:
    image = decode_image((faces_dir / "portrait" / "lin-manuel-miranda.png").read_bytes(), DecodeOptions(min_side=1)).image
    event = ImageEvent(origin=Origin("test"), label="portrait", data=b"x")
    event.image = image
    FaceAreaStep(FaceAreaOptions(detector=detector, min_face_area=0.1), run=None).process(event)  # type: ignore[arg-type]
    assert event.face_area and event.face_area > 0.1


async def test_stats_counts_what_each_threshold_keeps_and_plots_it(tmp_path: Path, monkeypatch) -> None:
    import json

    from typer.testing import CliRunner

    from selfiescope.cli import app

    root = tmp_path / "data"
    big, wide = head(), np.ascontiguousarray(astronaut()[:400, 60:460])  # face ~25% / ~6% of the picture
    for label, images in {"selfie": [big, big[:, ::-1]], "portrait": [wide, np.full((200, 200, 3), 90, np.uint8)]}.items():
        folder = tmp_path / label
        folder.mkdir()
        for i, im in enumerate(images):
            Image.fromarray(np.ascontiguousarray(im)).save(folder / f"{i}.jpg", quality=95)
        settings = settings_from_dict({"storage": {"root": str(root)}, "plugins": {"face_area": {"detector": "haar", "min_face_area": 0.15}}})
        pipeline = ScrapePipeline(kind="import", source="folder", paths=[folder], label=label,
                                  chain=["decode", "face_area", "store"])
        await collect(App.create(settings), "import", pipeline=pipeline)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["stats", "--root", str(root), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["judged"] == {"portrait": 2, "selfie": 2}
    # the wide shot (rejected at 15%) would be kept at 5%; the blank never
    assert data["kept"]["portrait"]["5%"] == 1 and data["kept"]["portrait"]["15%"] == 0
    assert data["kept"]["selfie"]["15%"] == 2 and data["kept"]["selfie"]["30%"] == 0
    assert Path(data["plot"]).read_bytes()[:4] == b"\x89PNG"
    missing = CliRunner().invoke(app, ["stats", "--root", str(tmp_path / "nothing")])
    assert missing.exit_code == 2 and "no dataset" in missing.output
