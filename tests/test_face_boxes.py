"""Every detected face box reaches the manifest (``images.face_boxes``), accepted or rejected,
through the public event field a third party's face step sets too; older rows read as their one box."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from face_pairs import two_faces_kept, two_faces_too_small
from hypothesis import given, settings, strategies as st

from selfiescope.api import FaceBox, ImageEvent, Origin, Step, hookimpl
from selfiescope.core.app import App
from selfiescope.core.face_boxes import MAX_BOXES, as_box, face_columns, recorded_boxes
from selfiescope.core.manifest import Manifest
from selfiescope.core.settings import ScrapePipeline, settings_from_dict
from selfiescope.pipelines.collecting.collect import collect

boxes_strategy = st.lists(st.builds(FaceBox, st.integers(0, 5000), st.integers(0, 5000), st.integers(1, 3000),
                                    st.integers(1, 3000)), max_size=MAX_BOXES + 40)
any_number = st.one_of(st.integers(-50, 5000), st.floats(allow_nan=True, allow_infinity=True),
                       st.integers(-50, 5000).map(np.int64), st.floats(-50, 5000).map(np.float32))
odd_boxes_strategy = st.lists(st.builds(FaceBox, any_number, any_number, any_number, any_number), max_size=30)


def _read_back(faces: list[FaceBox]):
    face_box, face_boxes = face_columns(faces)
    return face_box, face_boxes, recorded_boxes(face_boxes, face_box, len(faces))


@settings(deadline=None)
@given(faces=boxes_strategy)
def test_the_column_keeps_every_box_largest_first_and_reads_back(faces: list[FaceBox]) -> None:
    event = ImageEvent(origin=Origin("test"), label="selfie", data=b"x", faces=faces)
    face_box, face_boxes, got = _read_back(faces)
    kept = min(len(faces), MAX_BOXES)
    assert len(got.boxes) == kept and got.unrecorded == len(faces) - kept
    if not faces:
        assert got.largest is None and face_box is None and face_boxes is None
        return
    assert got.largest == 0 and list(got.boxes[0]) == event.largest_face.as_list() == json.loads(face_box)
    areas = [w * h for _, _, w, h in got.boxes]
    assert areas == sorted((f.area for f in faces), reverse=True)[:kept]  # none left out is larger than a kept one
    if len(faces) <= MAX_BOXES:
        assert sorted(got.boxes) == sorted(tuple(f.as_list()) for f in faces)


@settings(deadline=None)
@given(faces=odd_boxes_strategy)
def test_what_a_third_party_step_sets_is_stored_as_whole_boxes_or_left_out(faces: list[FaceBox]) -> None:
    face_box, face_boxes, got = _read_back(faces)  # never raises, whatever the numbers
    stored = [tuple(b) for b in json.loads(face_boxes)] if face_boxes else []
    assert got.boxes == stored and all(as_box(b) == b for b in stored)  # stored is what is drawn
    assert all(isinstance(v, int) and not isinstance(v, bool) for b in stored for v in b)
    assert len(stored) == sum(as_box((f.x, f.y, f.w, f.h)) is not None for f in faces)
    assert (face_box is None) == (not stored) and (not stored or json.loads(face_box) == list(stored[0]))
    assert got.unrecorded == len(faces) - len(stored)


@settings(deadline=None)
@given(box=st.lists(st.integers(0, 4000), min_size=4, max_size=4).filter(lambda b: b[2] > 0 and b[3] > 0),
       n_faces=st.integers(0, 9))
def test_a_row_without_the_list_reads_as_its_one_box_and_says_how_many_have_none(box: list[int], n_faces: int) -> None:
    got = recorded_boxes(None, json.dumps(box), n_faces)
    assert got.boxes == [tuple(box)] and got.largest == 0 and got.unrecorded == max(n_faces, 1) - 1
    assert recorded_boxes(None, None, n_faces).boxes == [] and recorded_boxes(None, None, None).largest is None


def test_a_list_that_disagrees_with_the_largest_box_is_not_believed() -> None:
    """A row an older version recorded again (its face_box new, the list left as it was)."""
    got = recorded_boxes("[[0,0,50,50],[60,0,10,10]]", "[5, 5, 20, 20]", 2)
    assert got.boxes == [(5, 5, 20, 20)] and got.largest == 0 and got.unrecorded == 1


@pytest.mark.parametrize("face_boxes", ["not json", "[]", "{}", '[[1,2,3]]', '[["a",1,2,3]]', '[[1,2,-3,4]]',
                                        '[[true,1,2,3]]', '[[1e999,1,2,3]]'])
def test_a_list_that_is_not_boxes_draws_nothing_false(face_boxes: str) -> None:
    got = recorded_boxes(face_boxes, json.dumps([5, 6, 7, 8]), 1)
    assert all(w > 0 and h > 0 and x >= 0 and y >= 0 for x, y, w, h in got.boxes)
    assert got.boxes in ([], [(5, 6, 7, 8)])
    assert (got.largest is None) == (not got.boxes)


def _import(root: Path, folder: Path, chain: list[str], plugins: list | None = None) -> None:
    settings = settings_from_dict({"storage": {"root": str(root)}, "engine": {"workers": 1, "threads": 1}})
    pipeline = ScrapePipeline(kind="import", source="folder", paths=[folder], label="selfie", chain=chain)
    asyncio.run(collect(App.create(settings, plugins=plugins), "import", pipeline=pipeline))


def _rows(root: Path) -> dict[str, sqlite3.Row]:
    db = sqlite3.connect(root / "manifest.sqlite")
    db.row_factory = sqlite3.Row
    try:
        return {Path(r["origin_path"]).name: r for r in db.execute("SELECT * FROM images")}
    finally:
        db.close()


@pytest.mark.faces
def test_the_face_step_records_every_face_of_kept_and_rejected_photos(faces_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    two_faces_kept(faces_dir, folder / "pair.jpg")
    two_faces_too_small(faces_dir, folder / "pair_small.jpg")
    single = sorted((faces_dir / "portrait").glob("caltech_*.jpg"))[0]
    (folder / "single.jpg").write_bytes(single.read_bytes())
    _import(tmp_path / "data", folder, ["decode", "face_area", "dedup", "store"])
    rows = _rows(tmp_path / "data")
    assert rows["pair.jpg"]["decision"] == "accepted" and rows["pair_small.jpg"]["reject_code"] == "face_too_small"
    for name, n in (("pair.jpg", 2), ("pair_small.jpg", 2), ("single.jpg", 1)):
        row = rows[name]
        boxes = json.loads(row["face_boxes"])
        assert len(boxes) == row["n_faces"] == n, name
        assert boxes[0] == json.loads(row["face_box"])  # the largest first
        for x, y, w, h in boxes:  # in the stored image's pixels
            assert 0 <= x and x + w <= row["width"] and 0 <= y and y + h <= row["height"]
        assert [w * h for *_, w, h in boxes] == sorted((w * h for *_, w, h in boxes), reverse=True)
    left, right = json.loads(rows["pair.jpg"]["face_boxes"])
    assert left[0] + left[2] <= right[0]  # two people side by side, not one face found twice


class ThreeFaces(Step):
    """A third party's face step: sets the public ``faces`` field, numpy numbers and all."""

    name = "three_faces"
    requires = frozenset({"image"})
    provides = frozenset({"faces"})

    def process(self, event: ImageEvent) -> None:
        event.faces = [FaceBox(np.int64(1), np.int64(2), np.int64(3), np.int64(4)), FaceBox(10, 10, 20, 20),
                       FaceBox(0, 0, 5, 5)]
        event.face_detector = "three"


class ThreeFacesPlugin:
    @staticmethod
    @hookimpl
    def selfiescope_steps():
        return [ThreeFaces]


def test_a_third_party_face_step_reaches_the_column_through_the_event(tmp_path: Path) -> None:
    from PIL import Image

    folder = tmp_path / "in"
    folder.mkdir()
    Image.new("RGB", (64, 64), (200, 10, 10)).save(folder / "a.png")
    _import(tmp_path / "data", folder, ["decode", "three_faces", "store"], plugins=[ThreeFacesPlugin])
    row = _rows(tmp_path / "data")["a.png"]
    assert row["decision"] == "accepted", row["reason"]
    assert json.loads(row["face_boxes"]) == [[10, 10, 20, 20], [0, 0, 5, 5], [1, 2, 3, 4]]
    assert json.loads(row["face_box"]) == [10, 10, 20, 20] and row["n_faces"] == 3


def test_an_old_manifest_gains_the_column_and_keeps_its_rows(tmp_path: Path) -> None:
    root = tmp_path / "data"
    manifest = Manifest.at_root(root)
    event = ImageEvent(origin=Origin("folder", path="/x/a.jpg"), label="selfie", data=b"bytes",
                       faces=[FaceBox(1, 1, 9, 9), FaceBox(20, 20, 4, 4)])
    manifest.record(event)
    manifest.close()
    db = sqlite3.connect(root / "manifest.sqlite")
    db.execute("ALTER TABLE images DROP COLUMN face_boxes")  # as a version before the column wrote it
    db.commit()
    db.close()
    for reopened in (Manifest.read_only(root), Manifest.at_root(root)):
        try:
            row = reopened.get_image(event.content_hash)
            assert row["face_boxes"] is None and row["n_faces"] == 2
            got = recorded_boxes(row["face_boxes"], row["face_box"], row["n_faces"])
            assert got.boxes == [(1, 1, 9, 9)] and got.largest == 0 and got.unrecorded == 1
        finally:
            reopened.close()
