"""How a plugin author tests a step in-process (run with pytest from this folder)."""

import numpy as np
import pytest
import selfiescope_sizegate
from selfiescope.api import ImageEvent, Origin, Reject
from selfiescope.testing.synth import encode_jpeg, render_selfie
from selfiescope_sizegate import SizeGate, SizeGateOptions


def test_small_file_is_rejected():
    step = SizeGate(SizeGateOptions(min_bytes=10), run=None)
    with pytest.raises(Reject) as info:
        step.process(ImageEvent(origin=Origin(source="test"), label="x", data=b"tiny"))
    assert info.value.code == "too_few_bytes"


def test_large_file_passes():
    step = SizeGate(SizeGateOptions(min_bytes=10), run=None)
    event = ImageEvent(origin=Origin(source="test"), label="x", data=b"x" * 100)
    step.process(event)
    assert event.notes["sizegate"] == "passed"


def test_sizegate_in_the_chain(selfiescope_run):
    photo = encode_jpeg(render_selfie(np.random.default_rng(0)))
    result = selfiescope_run(["sizegate", "decode", "face_area"], [photo, b"tiny"],
                             options={"sizegate": {"min_bytes": 100}}, plugins=[selfiescope_sizegate])
    assert result.codes == [None, "too_few_bytes"]
    assert result[0].face_area > 0.15
