"""How a plugin author tests a step in-process (run with pytest from this folder)."""

from selfiescope.core.events import ImageEvent, Origin
from selfiescope_sizegate import SizeGate, SizeGateOptions

import pytest
from selfiescope.core.events import Reject


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
