"""Feature groups: what each one measures, the plugin surface, the cache key and the dedup groups."""

from __future__ import annotations

import io
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from selfiescope import hookimpl
from selfiescope.core.components import FeatureExtractor
from selfiescope.core.plugins import build_registry
from selfiescope.pipelines.model.dataset import cache_version, extract_features, face_dict
from selfiescope.pipelines.model.groups import near_duplicate_groups
from selfiescope.plugins import embed
from selfiescope.plugins.features import GeometryFeatures, ImageFeatures, exif_block, exif_features
from selfiescope.plugins.landmarks import EmbeddingFeatures, LandmarkFeatures
from selfiescope.testing.synth import FACE_BOX, astronaut

FACES = Path(__file__).resolve().parents[2] / "shared" / "faces"
BOX = [int(v) for v in FACE_BOX]


def face(box=None, n=1, area=None, exif=None):
    return face_dict(box, area, n if box else 0, exif)


def test_builtin_groups_are_plugins_with_stable_names():
    registry = build_registry(entrypoints=False)
    for name in ("geometry", "landmarks", "embedding", "image"):
        extractor = registry.features[name]()
        names = extractor.feature_names()
        assert len(names) == len(set(names)) > 0
        values = extractor.extract(np.ascontiguousarray(astronaut()), face(BOX))
        assert list(values) == names or set(values) == set(names)
        assert all(isinstance(v, float) for v in values.values())


def test_geometry_measures_the_box_against_the_frame():
    image = np.zeros((200, 400, 3), np.uint8)
    out = GeometryFeatures().extract(image, face([0, 50, 100, 100], n=2))
    assert out["has_face"] == 1.0 and out["n_faces"] == 2.0
    assert out["face_area"] == pytest.approx(100 * 100 / (200 * 400))
    assert out["face_cx"] == pytest.approx(50 / 400) and out["face_cy"] == pytest.approx(0.5)
    assert out["edge_left"] == 0.0 and out["edge_right"] == pytest.approx(0.75)
    assert out["edge_top"] == pytest.approx(0.25) and out["edge_bottom"] == pytest.approx(0.25)
    assert out["edge_min"] == 0.0 and out["face_aspect"] == 1.0
    # the filter's own area share wins over the box when given
    assert GeometryFeatures().extract(image, face([0, 50, 100, 100], area=0.3))["face_area"] == 0.3
    none = GeometryFeatures().extract(image, face(None))
    assert none["has_face"] == 0.0 and math.isnan(none["face_area"]) and none["n_faces"] == 0.0


def test_image_features_follow_light_colour_and_focus():
    img = np.ascontiguousarray(astronaut())
    sharp = ImageFeatures().extract(img, face(BOX))
    blurred = ImageFeatures().extract(cv2.GaussianBlur(img, (0, 0), 3), face(BOX))
    assert blurred["sharpness"] < sharp["sharpness"] / 4
    red = np.zeros((100, 300, 3), np.uint8)
    red[..., 0] = 255
    out = ImageFeatures().extract(red, face(None))
    assert out["aspect"] == 3.0 and out["r_mean"] == 1.0 and out["g_mean"] == 0.0 and out["saturation"] == 1.0
    dark = ImageFeatures().extract((img * 0.3).astype(np.uint8), face(BOX))
    assert dark["brightness"] < sharp["brightness"] * 0.4
    assert math.isnan(out["face_sharpness_ratio"]) and not math.isnan(sharp["face_sharpness_ratio"])


def _jpeg_with_exif() -> bytes:
    exif = Image.Exif()
    exif[0x010F] = "Apple"
    exif[0x0110] = "iPhone 12"
    sub = exif.get_ifd(0x8769)
    sub[0x920A] = 4.2
    sub[0xA405] = 26
    sub[0x829D] = 2.2
    sub[0x8827] = 100
    sub[0xA434] = "iPhone 12 front camera 2.71mm f/2.2"
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), "gray").save(buf, "JPEG", exif=exif)
    return buf.getvalue()


def test_exif_focal_length_phone_and_front_lens():
    raw = exif_block(_jpeg_with_exif())
    out = exif_features(raw)
    assert out["exif_present"] == 1.0
    assert out["exif_focal_mm"] == pytest.approx(4.2) and out["exif_focal_35mm"] == 26.0
    assert out["exif_fnumber"] == pytest.approx(2.2) and out["exif_iso"] == 100.0
    assert out["exif_phone"] == 1.0 and out["exif_front_lens"] == 1.0
    buf = io.BytesIO()
    Image.new("RGB", (64, 64)).save(buf, "PNG")
    assert exif_block(buf.getvalue()) is None
    plain = exif_features(None)
    assert plain["exif_present"] == 0.0 and math.isnan(plain["exif_focal_mm"])
    assert exif_features(b"Exif\x00\x00garbage")["exif_present"] in (0.0, 1.0)  # broken EXIF never raises
    assert exif_block(b"not an image") is None


def test_landmarks_follow_rotation_and_ignore_scale():
    img = np.ascontiguousarray(astronaut())
    base = LandmarkFeatures().extract(img, face(BOX))
    assert all(math.isfinite(v) for v in base.values())
    assert base["points_outside"] == 0.0 and 0.3 < base["eyes_y"] < base["nose_y"] < base["mouth_y"] < 1.0
    cx, cy = BOX[0] + BOX[2] / 2, BOX[1] + BOX[3] / 2
    turned = cv2.warpAffine(img, cv2.getRotationMatrix2D((cx, cy), 12, 1.0), img.shape[1::-1])
    rot = LandmarkFeatures().extract(turned, face(BOX))
    assert rot["eye_tilt"] - base["eye_tilt"] == pytest.approx(-12, abs=3)
    assert rot["roll"] - base["roll"] == pytest.approx(-12, abs=3)
    big = LandmarkFeatures().extract(cv2.resize(img, (1024, 1024)), face([v * 2 for v in BOX]))
    for key in ("iod_frac", "nose_width", "face_width", "mouth_width"):
        assert big[key] == pytest.approx(base[key], rel=0.08), key
    mirrored = LandmarkFeatures().extract(np.ascontiguousarray(img[:, ::-1]), face([512 - BOX[0] - BOX[2], *BOX[1:]]))
    assert mirrored["yaw"] == pytest.approx(-base["yaw"], abs=3)
    no_face = LandmarkFeatures().extract(img, face(None))
    assert all(math.isnan(v) for v in no_face.values())


def test_embedding_is_the_same_for_the_same_face():
    img = np.ascontiguousarray(astronaut())
    e1 = np.array(list(EmbeddingFeatures().extract(img, face(BOX)).values()))
    e2 = np.array(list(EmbeddingFeatures().extract(np.ascontiguousarray(img[:, ::-1]), face([512 - BOX[0] - BOX[2], *BOX[1:]])).values()))
    assert e1.shape == (128,) and np.isfinite(e1).all()
    assert np.linalg.norm(e1 - e2) < 0.4  # dlib's same-person threshold is 0.6
    if (FACES / "portrait" / "biden.jpg").exists():
        from selfiescope.plugins.face_area import FaceAreaOptions, detect_faces

        other = np.asarray(Image.open(FACES / "portrait" / "biden.jpg").convert("RGB"))
        box = detect_faces(other, FaceAreaOptions(min_face_area=0.01))[0].as_list()
        e3 = np.array(list(EmbeddingFeatures().extract(other, face(box)).values()))
        assert np.linalg.norm(e1 - e3) > 0.6


@pytest.mark.faces
def test_landmarks_on_real_frontal_portraits():
    files = sorted((FACES / "portrait").glob("caltech_image_000*.jpg"))[:4]
    if not files:
        pytest.skip("real photos in ../shared/faces absent")
    from selfiescope.plugins.face_area import FaceAreaOptions, detect_faces

    for path in files:
        img = np.asarray(Image.open(path).convert("RGB"))
        box = detect_faces(img, FaceAreaOptions(min_face_area=0.02))[0].as_list()
        out = LandmarkFeatures().extract(img, face(box))
        assert abs(out["roll"]) < 15 and abs(out["yaw"]) < 30, path.name  # people facing the camera
        assert 1.5 < out["face_width"] < 3.0, path.name


def test_scene_group_is_optional(monkeypatch):
    monkeypatch.setattr(embed, "available", lambda: False)
    assert embed.selfiescope_features() == []
    monkeypatch.undo()
    if not embed.available():
        assert "scene" not in build_registry(entrypoints=False).features
        pytest.skip("embed extra not installed: only the absent case is checked")
    scene = embed.SceneFeatures()
    img = np.ascontiguousarray(astronaut())
    a = scene.extract(img, face(BOX))
    assert len(a) == 32 and all(math.isfinite(v) for v in a.values())
    assert scene.extract(img, face(None)) == a  # whole-picture: independent of the face, deterministic
    other = scene.extract(np.ascontiguousarray(img[::-1]), face(None))
    assert other != a
    wide = embed.SceneFeatures(embed.SceneOptions(dims=1280))
    assert len(wide.feature_names()) == 1280


class Brightness(FeatureExtractor):
    name = "brightness_test"
    version = "3"

    def feature_names(self):
        return ["mean"]

    def extract(self, image, face):
        return {"mean": float(image.mean())}


class ThirdParty:
    @hookimpl
    def selfiescope_features(self):
        return [Brightness]


def test_a_third_party_group_plugs_in_and_columns_are_prefixed():
    registry = build_registry(plugins=[ThirdParty()], entrypoints=False)
    assert registry.features["brightness_test"] is Brightness
    img = np.full((10, 10, 3), 7, np.uint8)
    out = extract_features(img, face([0, 0, 5, 5]), [Brightness(), GeometryFeatures()])
    assert out["brightness_test.mean"] == 7.0 and out["geometry.face_w"] == 0.5


def test_cache_version_changes_with_version_options_and_face():
    g = GeometryFeatures()
    v = cache_version(g, face([0, 0, 10, 10]))
    assert v == cache_version(GeometryFeatures(), face([0, 0, 10, 10]))
    assert v != cache_version(g, face([0, 0, 12, 10]))
    assert v.split("+")[0] == g.version
    if embed.available():
        assert cache_version(embed.SceneFeatures(), face(None)) != cache_version(
            embed.SceneFeatures(embed.SceneOptions(dims=8)), face(None)
        )


def test_near_duplicate_groups_are_transitive():
    a = 0x0F0F0F0F0F0F0F0F
    b = a ^ 0b111  # 3 bits from a
    c = b ^ (0b111 << 20)  # 3 bits from b, 6 from a
    far = ~a & 0xFFFFFFFFFFFFFFFF
    hashes = [f"{a:016x}", f"{far:016x}", f"{c:016x}", None, f"{b:016x}", None]
    groups = near_duplicate_groups(hashes, 4)
    assert groups[0] == groups[2] == groups[4]
    assert len({groups[0], groups[1], groups[3], groups[5]}) == 4
    assert len(set(near_duplicate_groups(hashes, 0))) == 6


def test_process_pool_gives_the_same_features_as_this_process(tmp_path, monkeypatch):
    from selfiescope.pipelines.model import feature_tasks
    from selfiescope.plugins.decode import DecodeStep

    paths = []
    for i in range(3):
        path = tmp_path / f"{i}.jpg"
        Image.fromarray(np.ascontiguousarray(astronaut()[i * 20:])).save(path)
        paths.append(path)
    (tmp_path / "bad.jpg").write_bytes(b"nope")
    from selfiescope.core.components import StoredImage

    # the bytes travel with the task (the parent reads them through the storage backend)
    tasks = [feature_tasks.Task(p.stem, StoredImage(p.stem, "x", f"x/{p.name}"), face(BOX), ["geometry", "image"],
                          data=p.read_bytes()) for p in [*paths, tmp_path / "bad.jpg"]]
    tasks.append(feature_tasks.Task("unread", StoredImage("unread", "x", "x/unread.jpg"), face(BOX), ["geometry"],
                              error="cannot read from storage: FileNotFoundError"))
    extractors = [GeometryFeatures(), ImageFeatures()]

    def run(workers):
        got = {}
        feature_tasks.run_tasks(tasks, [(DecodeStep, {})], extractors, workers, lambda h, r, e: got.__setitem__(h, (r, e)))
        return got

    here = run(1)
    monkeypatch.setattr(feature_tasks, "MIN_POOL_TASKS", 0)
    pooled = run(2)
    assert here.keys() == pooled.keys()
    for key, (values, error) in here.items():
        assert pooled[key][1] == error
        for group, feats in (values or {}).items():
            for name, v in feats.items():  # OpenCV's threading may change float sums in the last bits
                assert pooled[key][0][group][name] == pytest.approx(v, rel=1e-5, nan_ok=True), name
    assert here["bad"][0] is None and "not_image" in here["bad"][1]
    assert here["unread"] == (None, "cannot read from storage: FileNotFoundError")  # a failed read costs its row only
    assert here["0"][0]["geometry"]["face_w"] == pytest.approx(BOX[2] / 512)
