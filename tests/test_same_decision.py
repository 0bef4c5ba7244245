"""One photo, one face decision: whatever else the chain holds, and in predict's full decode."""

from __future__ import annotations

from pathlib import Path

import pytest

from selfiescope.api import Reject
from selfiescope.plugins.decode import DecodeOptions, DecodeStep, decode_image
from selfiescope.plugins.face_area import FaceAreaOptions, FaceAreaStep

from test_working_size import PixelPlugin, collect_run, event_through, jpeg, opened_decode, upsampled


def face_decision(event, face: FaceAreaStep) -> tuple[bool, float]:
    try:
        face.process(event)
        return True, event.face_area
    except Reject:
        return False, event.face_area


@pytest.mark.parametrize("detector", ["haar", "hog"])
def test_the_face_step_decides_alike_in_every_chain(faces_dir: Path, detector: str) -> None:

    options = FaceAreaOptions(detector=detector)
    face = FaceAreaStep(options, None)
    files = sorted(p for p in faces_dir.rglob("*") if p.suffix.lower() in {".jpg", ".png"})[::12]
    plugins = {"face_area": {"detector": detector}}
    alone = opened_decode(collect_run(["decode", "face_area"], **plugins))
    with_dedup = opened_decode(collect_run(["decode", "face_area", "dedup"], **plugins))
    for path in files:
        data = jpeg(upsampled(path, 2000))
        decisions = {
            "alone": face_decision(event_through(data, alone), face),
            "with dedup": face_decision(event_through(data, with_dedup), face),
            "full decode (predict)": face_decision(event_through(data, DecodeStep(DecodeOptions(), None)), face),
        }
        assert len(set(decisions.values())) == 1, (path.name, decisions)


def test_a_decode_records_the_side_it_was_asked_for() -> None:
    import numpy as np

    data = jpeg(np.full((1200, 1600, 3), 90, np.uint8))
    assert decode_image(data, working_side=200).working_side == 200
    assert decode_image(data).working_side is None
