"""Synthetic photos: the Haar cascade sees what each rendering promises."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from selfiescope.testing import synth

N = 24  # renderings per kind; each takes ~0.1 s at this size
SIZES = [320, (320, 400)]  # square and Instagram's 4:5 portrait format


def renderings(kind: str, seed: int = 11) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [synth.render(kind, rng, SIZES[i % 2]) for i in range(N)]


@pytest.fixture(scope="module")
def fractions() -> dict[str, list[float | None]]:
    return {kind: [synth.largest_face_fraction(img) for img in renderings(kind)] for kind in synth.KINDS}


def test_renderings_are_rgb_uint8_of_the_requested_size():
    rng = np.random.default_rng(0)
    for kind in synth.KINDS:
        assert synth.render(kind, rng, 200).shape == (200, 200, 3)
        img = synth.render(kind, rng, (240, 300))
        assert img.shape == (300, 240, 3) and img.dtype == np.uint8


@pytest.mark.parametrize("kind, low, high", [("selfie", 0.25, 0.56), ("portrait", 0.15, 0.36)])
def test_faces_are_found_with_the_promised_area(fractions, kind, low, high):
    found = [f for f in fractions[kind] if f is not None]
    assert len(found) >= 0.9 * N, f"{kind}: the cascade found a face in only {len(found)}/{N}"
    assert all(f > 0.15 for f in found), sorted(found)[:3]
    assert low <= np.median(found) <= high and min(found) >= low - 0.02 and max(found) <= high + 0.02, sorted(found)


def test_selfies_have_larger_faces_than_portraits_but_the_ranges_overlap(fractions):
    """Face area alone must not separate the classes: the other geometry has to matter."""
    selfie = [f for f in fractions["selfie"] if f is not None]
    portrait = [f for f in fractions["portrait"] if f is not None]
    assert np.median(selfie) > np.median(portrait) + 0.05
    assert min(selfie) < max(portrait)


def test_small_faces_stay_under_ten_percent(fractions):
    assert all(f is None or f < 0.10 for f in fractions["small_face"]), fractions["small_face"]


def test_no_face_renderings_have_no_detection(fractions):
    assert fractions["noface"] == [None] * N


def test_selfies_are_tilted_and_off_centre_portraits_centred():
    """Geometry is what differs: where the face box sits in the frame."""

    def centre_offsets(kind: str) -> list[float]:
        out = []
        for img in renderings(kind, seed=5)[:12]:
            gray = np.asarray(Image.fromarray(img).convert("L"))
            faces = synth._cascade().detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5)
            if len(faces):
                x, y, w, h = max(faces, key=lambda f: f[2] * f[3])
                out.append(abs((x + w / 2) / img.shape[1] - 0.5))
        return out

    assert np.mean(centre_offsets("selfie")) > 2 * np.mean(centre_offsets("portrait"))


def test_appearance_varies_alike_across_classes():
    """Brightness and colour spread over the same range for selfies and portraits."""
    stats = {}
    for kind in ("selfie", "portrait"):
        imgs = renderings(kind, seed=3)[:16]
        stats[kind] = np.array([img.reshape(-1, 3).mean(axis=0) for img in imgs])
    for kind, s in stats.items():
        assert s.mean(axis=1).std() > 10, f"{kind}: brightness hardly varies"
    gap = abs(stats["selfie"].mean() - stats["portrait"].mean())
    assert gap < 25, f"mean brightness differs by {gap:.1f} between classes"


def test_same_seed_same_pixels_and_jpeg_bytes():
    a = synth.render_selfie(np.random.default_rng(42), 160)
    b = synth.render_selfie(np.random.default_rng(42), 160)
    c = synth.render_selfie(np.random.default_rng(43), 160)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert synth.encode_jpeg(a) == synth.encode_jpeg(b)
    assert Image.open(io.BytesIO(synth.encode_jpeg(a))).format == "JPEG"


def test_unknown_kind_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown rendering kind 'group'"):
        synth.render("group", np.random.default_rng(0), 64)
