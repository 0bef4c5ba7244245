"""One decode per image: the working-size decode, its views, and what it may change.

A collect run decodes each image once, at the smallest size its chain's steps ask for
(``Step.working_side``): JPEGs reduced by libjpeg's DCT scaling, other formats downscaled
once. These tests hold it to the full decode on real faces (within stated tolerances), to
the original's size and orientation, and to the header checks.
"""

from __future__ import annotations

import asyncio
import io
import math
import pickle
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
from PIL import Image

from selfiescope.core.app import App
from selfiescope import hookimpl
from selfiescope.core.components import Step
from selfiescope.core.events import ImageEvent, Origin, Reject
from selfiescope.core.manifest import phash_to_int
from selfiescope.core.plugins import build_registry
from selfiescope.core.settings import ScrapePipeline, settings_from_dict
from selfiescope.pipelines.collecting.collect import collect
from selfiescope.plugins.decode import (
    DecodeOptions,
    DecodeStep,
    chain_working_side,
    chain_working_side_for,
    decode_image,
)
from selfiescope.plugins.dedup import HASH_WORKING_SIDE, annotate_phashes
from selfiescope.plugins.face_area import (
    FaceAreaOptions,
    FaceAreaStep,
    detect_faces,
    detection_size,
    face_area_fraction,
    threshold_side,
)

# Tolerances of the reduced path against the full decode (measured: benchmarks/bench_import_cpu.py).
HASH_BITS = 4  # every pHash within 4 bits (of 64)
BORDERLINE = 0.02  # a keep/reject decision may change only where the full path's face area is this near the threshold
MIN_IOU = 0.7  # the largest face's box, in original pixels


def jpeg(image_rgb: np.ndarray, quality: int = 90, exif: bytes | None = None) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image_rgb).save(buf, "JPEG", quality=quality, **({"exif": exif} if exif else {}))
    return buf.getvalue()


def upsampled(path: Path, side: int) -> np.ndarray:
    image = decode_image(path.read_bytes(), DecodeOptions(min_side=1)).image
    h, w = image.shape[:2]
    f = side / max(h, w)
    return cv2.resize(image, (round(w * f), round(h * f)), interpolation=cv2.INTER_CUBIC)


def collect_run(chain: list[str], registry=None, **plugins) -> SimpleNamespace:
    """What a collect run hands its steps (the parts the decode step reads)."""
    pipeline = ScrapePipeline(kind="import", source="folder", paths=[Path(".")], label="x", chain=chain)
    return SimpleNamespace(pipeline=pipeline, registry=registry or build_registry(),
                           settings=settings_from_dict({"plugins": {"face_area": {"detector": "haar"}, **plugins}}))


def opened_decode(run) -> DecodeStep:
    step = DecodeStep(DecodeOptions(), run)
    asyncio.run(step.open())
    return step


def event_through(data: bytes, *steps: Step) -> ImageEvent:
    event = ImageEvent(origin=Origin("test"), label="x", data=data)
    for step in steps:
        try:
            step.process(event)
        except Reject:
            break
    return event


def iou(a, b) -> float:
    x0, y0 = max(a.x, b.x), max(a.y, b.y)
    x1, y1 = min(a.x + a.w, b.x + b.w), min(a.y + a.h, b.y + b.h)
    inter = max(0, x1 - x0) * max(0, y1 - y0)
    return inter / float(a.area + b.area - inter)


def test_the_working_side_comes_from_the_chain_and_only_from_a_collect_run() -> None:
    registry = build_registry()
    assert chain_working_side(collect_run(["decode", "face_area", "dedup", "store"], registry), "decode") == 480
    assert chain_working_side(collect_run(["decode", "face_area", "store"], registry, face_area={"detect_side": 640}),
                              "decode") == 640
    assert chain_working_side(collect_run(["decode", "dedup", "store"], registry), "decode") == 256
    assert chain_working_side(collect_run(["decode", "store"], registry), "decode") == 64  # validated, few pixels
    # a step that needs full resolution, or detection at full size, gets the full decode
    full_size = {"detect_side": None, "min_face_px": None}
    assert chain_working_side(collect_run(["decode", "face_area"], registry, face_area=full_size), "decode") is None
    assert chain_working_side_for(collect_run(["decode", "face_area"], registry, face_area=full_size),
                                  "decode")(2000, 1500) is None
    # training's dataset (no run) and predict (no pipeline chain) decode in full, as before
    assert chain_working_side(None, "decode") is None
    assert chain_working_side(SimpleNamespace(pipeline=None, registry=registry, settings=None), "decode") is None
    assert DecodeStep(DecodeOptions(), None).working is None


SIZES = [(2000, 1500), (1500, 2000), (2000, 1125), (4000, 1000), (800, 600), (6000, 4000)]


@pytest.mark.parametrize("width, height", SIZES)
def test_haar_detects_where_the_smallest_face_counted_is_min_face_px(width: int, height: int) -> None:
    opts = FaceAreaOptions(detector="haar")
    w, h = detection_size(width, height, opts)
    steps = round(math.log(width / w, opts.scale_factor))
    assert (w, h) == (round(width * opts.scale_factor ** -steps), round(height * opts.scale_factor ** -steps))
    smallest = threshold_side(w, h, opts) * opts.min_size_ratio  # in the detection image's pixels
    assert opts.min_face_px * 0.99 <= smallest < opts.min_face_px * opts.scale_factor * 1.01  # one step above, no more
    assert max(w, h) <= opts.detect_side
    assert FaceAreaStep.working_side_for(opts, width, height) == max(w, h) == FaceAreaStep.working_side_for(
        opts, height, width)  # EXIF orientation applies after the header is read: either way round
    # detect_side stays an upper bound; without min_face_px it is the size, as before
    assert max(detection_size(width, height, FaceAreaOptions(detector="haar", detect_side=100))) <= 100
    fixed = detection_size(width, height, FaceAreaOptions(detector="haar", min_face_px=None))
    assert 480 / opts.scale_factor < max(fixed) <= 480
    assert detection_size(width, height, FaceAreaOptions(detector="haar", min_face_px=None, detect_side=None)) == (width, height)


def test_an_image_whose_smallest_face_is_already_small_is_detected_at_full_size() -> None:
    opts = FaceAreaOptions(detector="haar")
    assert detection_size(150, 150, opts) == (150, 150)  # 0.5 * sqrt(0.15) * 150 = 29 px < 32
    assert FaceAreaStep.working_side_for(opts, 150, 150) is None
    assert FaceAreaStep.working_side_for(FaceAreaOptions(detector="hog"), 2000, 1500) == 480  # dlib: detect_side


@pytest.mark.parametrize("width, height", [(2000, 1500), (4000, 1000), (1200, 1600)])
def test_each_image_is_decoded_as_small_as_its_detection_and_the_hashes_allow(width: int, height: int) -> None:
    rng = np.random.default_rng(2)
    noise = rng.integers(0, 255, (12, 16, 3), dtype=np.uint8)
    data = jpeg(cv2.resize(noise, (width, height), interpolation=cv2.INTER_CUBIC))
    need = detection_size(width, height, FaceAreaOptions(detector="haar"))
    faces_only = event_through(data, opened_decode(collect_run(["decode", "face_area", "store"])))
    shape = faces_only.image.shape
    assert shape[1] >= need[0] and shape[0] >= need[1]  # never smaller than detection runs at
    assert max(shape[:2]) < 2 * max(need)  # and no more than one DCT reduction above it
    with_hashes = event_through(data, opened_decode(collect_run(["decode", "face_area", "dedup", "store"])))
    assert max(with_hashes.image.shape[:2]) >= HASH_WORKING_SIDE  # the hash step keeps its own pixels
    assert (faces_only.width, faces_only.height) == (with_hashes.width, with_hashes.height) == (width, height)


def test_header_checks_use_the_original_size_whatever_the_working_size() -> None:
    big = jpeg(np.full((1500, 3000, 3), 128, np.uint8))
    with pytest.raises(Reject) as exc:
        decode_image(big, DecodeOptions(max_pixels=4_000_000), working_side=64)
    assert exc.value.code == "too_many_pixels" and "3000x1500" in exc.value.reason
    with pytest.raises(Reject) as exc:
        decode_image(jpeg(np.full((60, 2000, 3), 128, np.uint8)), DecodeOptions(min_side=64), working_side=480)
    assert exc.value.code == "too_small"
    # a 1000 px photo decoded down to 125 px is not "too small" for min_side 200: the original counts
    decoded = decode_image(jpeg(np.full((1000, 1000, 3), 128, np.uint8)), DecodeOptions(min_side=200), working_side=64)
    assert decoded.image.shape[:2] == (125, 125) and (decoded.width, decoded.height) == (1000, 1000)
    with pytest.raises(Reject) as exc:  # truncated data is still refused when decoded reduced
        decode_image(big[: len(big) // 2], working_side=64)
    assert exc.value.code in ("truncated", "corrupt")


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_the_working_image_is_the_smallest_at_least_the_side_asked(fmt: str) -> None:
    rng = np.random.default_rng(0)
    image = cv2.resize(rng.integers(0, 255, (30, 40, 3), dtype=np.uint8), (2000, 1500), interpolation=cv2.INTER_CUBIC)
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, fmt)
    full = decode_image(buf.getvalue())
    reduced = decode_image(buf.getvalue(), working_side=480)
    assert full.image.shape == (1500, 2000, 3)
    assert (reduced.width, reduced.height) == (2000, 1500)
    long_side = max(reduced.image.shape[:2])
    assert 480 <= long_side < 2 * 480  # JPEG: 1/4 scale (500 px); PNG: downscaled once to 480
    small = cv2.resize(full.image, reduced.image.shape[1::-1], interpolation=cv2.INTER_AREA)
    assert np.abs(small.astype(int) - reduced.image.astype(int)).mean() < 4  # the same picture


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_exif_rotated_jpegs_give_the_right_size_and_boxes_with_a_reduced_decode(faces_dir: Path, orientation: int) -> None:
    upright = upsampled(faces_dir / "portrait" / "biden.jpg", 1800)
    stored = {3: np.rot90(upright, 2), 6: np.rot90(upright, 1), 8: np.rot90(upright, 3)}[orientation]  # as the camera wrote it
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = jpeg(np.ascontiguousarray(stored), exif=exif.tobytes())
    reduced = event_through(data, opened_decode(collect_run(["decode", "face_area"])), FaceAreaStep(FaceAreaOptions(detector="haar"), None))
    assert reduced.image_scale < 0.51  # it was decoded reduced (1/2, rounded up)
    assert (reduced.width, reduced.height) == (upright.shape[1], upright.shape[0])
    assert reduced.image.shape[1] / reduced.image.shape[0] == pytest.approx(upright.shape[1] / upright.shape[0], rel=0.01)
    reference = detect_faces(upright, FaceAreaOptions(detector="haar"))  # the upright picture at full size
    assert reduced.faces and reference
    assert iou(reduced.largest_face, reference[0]) >= MIN_IOU


def test_a_quarter_turn_of_a_nearly_square_jpeg_swaps_the_original_sides() -> None:
    # 2000x1999 decodes to 500x500 at 1/4: the swap must come from the EXIF tag, not the shape
    exif = Image.Exif()
    exif[0x0112] = 6
    data = jpeg(np.full((1999, 2000, 3), 90, np.uint8), exif=exif.tobytes())
    decoded = decode_image(data, working_side=480)
    assert decoded.image.shape[:2] == (500, 500)
    assert (decoded.width, decoded.height) == (1999, 2000) == (decode_image(data).width, decode_image(data).height)


def test_the_grey_view_is_computed_once_and_follows_the_image() -> None:
    event = ImageEvent(origin=Origin("test"), label="x", data=b"x")
    assert event.grey is None
    event.image = np.zeros((40, 60, 3), np.uint8)
    event.image[:, :30] = (255, 255, 255)
    first = event.grey
    assert first.shape == (40, 60) and first[0, 0] == 255 and first[0, 59] == 0
    assert event.grey is first  # cached
    event.image = np.zeros((20, 30, 3), np.uint8)
    assert event.grey.shape == (20, 30)  # a new image, a new view
    copy = pickle.loads(pickle.dumps(event))  # the cache never travels
    assert "_grey_of" not in copy.__dict__ and "_grey_view" not in copy.__dict__
    assert copy.grey.shape == (20, 30)


@pytest.mark.parametrize("chain, scale", [(["decode", "face_area", "dedup"], 1 / 4), (["decode", "face_area"], 1 / 8)])
def test_reduced_and_full_decodes_agree_on_real_faces(faces_dir: Path, chain: list[str], scale: float) -> None:
    """Decisions, boxes and hashes of a collect run's working-size decode vs the full decode,
    on the real photos upsampled to 2000 px JPEGs (an evenly spaced sample of 32). With dedup
    the hashes keep 1/4 (500 px); detection alone needs about 200 px: 1/8."""
    files = sorted(p for p in faces_dir.rglob("*") if p.suffix.lower() in {".jpg", ".png"})
    files = files[:: max(1, len(files) // 32)]
    decode = opened_decode(collect_run(chain))
    face = FaceAreaStep(FaceAreaOptions(detector="haar"), None)
    assert decode.working == 480  # at most
    changed, worst_bits, threshold = [], 0, FaceAreaOptions(detector="haar").min_face_area
    for path in files:
        data = jpeg(upsampled(path, 2000))
        reduced = event_through(data, decode)
        assert reduced.image_scale == pytest.approx(scale, rel=0.01)  # decoded at 1/4 or 1/8
        event_through_face(reduced, face)
        full = decode_image(data)
        full_faces = detect_faces(full.image, FaceAreaOptions(detector="haar"))
        full_area = face_area_fraction(full_faces, full.width, full.height)
        if (reduced.face_area > threshold) != (full_area > threshold):
            assert abs(full_area - threshold) <= BORDERLINE, f"{path.name}: {reduced.face_area:.3f} vs {full_area:.3f}"
            changed.append(path.name)
        if reduced.faces and full_faces and abs(full_area - reduced.face_area) < 0.5 * full_area:
            assert iou(reduced.largest_face, full_faces[0]) >= MIN_IOU, path.name
        if "dedup" not in chain:
            continue
        annotate_phashes(reduced)
        full_event = ImageEvent(origin=Origin("test"), label="x", data=data)
        full_event.image = full.image
        annotate_phashes(full_event)
        for key in ("phash_centre", "phash_mirror", "phash_mirror_centre"):
            bits = bin(phash_to_int(getattr(reduced, key)) ^ phash_to_int(getattr(full_event, key))).count("1")
            worst_bits = max(worst_bits, bits)
        worst_bits = max(worst_bits, bin(phash_to_int(reduced.phash) ^ phash_to_int(full_event.phash)).count("1"))
    assert worst_bits <= HASH_BITS
    assert len(changed) <= max(1, len(files) // 20), changed  # at most 5%, and each a borderline photo


def event_through_face(event: ImageEvent, face: FaceAreaStep) -> None:
    try:
        face.process(event)
    except Reject:
        pass
    assert event.face_area is not None


class SeesPixels(Step):
    """A third-party step that does not say what size it needs: it gets full resolution."""

    name = "sees_pixels"
    seen: list[tuple[tuple[int, ...], int, int]] = []

    def process(self, event: ImageEvent) -> None:
        SeesPixels.seen.append((event.image.shape, event.width, event.height))


class SmallPixels(SeesPixels):
    name = "small_pixels"

    @classmethod
    def working_side(cls, options) -> int:
        return 300


class PixelPlugin:
    @hookimpl
    def selfiescope_steps(self):
        return [SeesPixels, SmallPixels]


@pytest.mark.parametrize("step, expect_long_side", [("sees_pixels", 2400), ("small_pixels", 300)])
def test_a_step_that_needs_full_resolution_gets_it_in_a_collect_run(tmp_path: Path, step: str, expect_long_side: int) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    rng = np.random.default_rng(1)
    image = cv2.resize(rng.integers(0, 255, (12, 16, 3), dtype=np.uint8), (2400, 1800), interpolation=cv2.INTER_CUBIC)
    (folder / "a.jpg").write_bytes(jpeg(image))
    Image.fromarray(image).save(folder / "b.png")
    settings = settings_from_dict({"storage": {"root": str(tmp_path / "data")}})
    pipeline = ScrapePipeline(kind="import", source="folder", paths=[folder], label="x", chain=["decode", step, "store"])
    SeesPixels.seen = []
    stats = asyncio.run(collect(App.create(settings, plugins=[PixelPlugin()]), "import", pipeline=pipeline))
    assert stats.accepted == 2 and len(SeesPixels.seen) == 2
    for shape, width, height in SeesPixels.seen:
        assert (width, height) == (2400, 1800)  # the original's size either way
        if expect_long_side == 2400:
            assert shape == (1800, 2400, 3)
        else:  # JPEG decoded at 1/8, PNG downscaled once: at least what was asked, less than twice
            assert expect_long_side <= max(shape[:2]) < 2 * expect_long_side
    stored = {p.read_bytes() for p in (tmp_path / "data").rglob("*.jpg")}
    assert (folder / "a.jpg").read_bytes() in stored  # storage writes the original bytes
