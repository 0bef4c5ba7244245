"""normalize = true removes the frame's shape; the counterfactual flags a model that reads it."""

from __future__ import annotations

import io
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from hypothesis import given, settings as hsettings, strategies as st

from privacy_helpers import import_pictures
from selfiescope.core.app import App
from selfiescope.core.events import FaceBox
from selfiescope.pipelines.model.counterfactual import FLIP_WARN, reshape_to_aspect
from selfiescope.pipelines.model.baselines import confounder_warnings
from selfiescope.pipelines.model.normalize import DETAIL, FACE_CONTEXT, Recipe, normalize_image, square_crop
from selfiescope.pipelines.model.predict import load_model
from selfiescope.pipelines.model.train import train
from selfiescope.plugins.features import ImageFeatures
from train_helpers import build_dataset, train_settings


@hsettings(max_examples=40, deadline=None)
@given(width=st.integers(40, 400), height=st.integers(40, 400), fx=st.floats(0, 1), fy=st.floats(0, 1),
       fs=st.floats(0.05, 0.6))
def test_normalized_images_have_one_shape_and_keep_the_face(width: int, height: int, fx: float, fy: float, fs: float) -> None:
    side = max(4, int(fs * min(width, height)))
    box = [int(fx * (width - side)), int(fy * (height - side)), side, side]
    image = np.full((height, width, 3), 128, np.uint8)
    out, face = normalize_image(image, {"box": box, "face_area": 0.5, "n_faces": 1}, Recipe(96, 90))
    assert out.shape == (96, 96, 3)  # no aspect, no size left
    x, y, w, h = face["box"]
    assert 0 <= x and 0 <= y and x + w <= 96 and y + h <= 96
    crop = min(round(FACE_CONTEXT * side), width, height)  # the face's square, as far as the frame allows
    assert w == pytest.approx(side * 96 / crop, abs=2)  # the whole face is inside the square
    assert face["face_area"] == pytest.approx(w * h / 96**2)


def test_a_padded_or_cropped_copy_normalizes_to_the_same_square() -> None:
    rng = np.random.default_rng(0)
    square = cv2.resize(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8), (120, 120), interpolation=cv2.INTER_CUBIC)
    padded, face = reshape_to_aspect(square, {"box": [40, 30, 40, 40]}, 1.5)
    assert padded.shape == (120, 180, 3) and face["box"] == [70, 30, 40, 40]
    a, _ = normalize_image(square, {"box": [40, 30, 40, 40]}, Recipe(64, 95))
    b, _ = normalize_image(padded, face, Recipe(64, 95))
    assert np.array_equal(a, b)


def _shapes_only_dataset(tmp_path: Path) -> Path:
    """Two labels whose pictures differ only by their frame: square vs 3:2 landscape."""
    root = tmp_path / "data"
    rng = np.random.default_rng(7)

    def framed(w: int) -> np.ndarray:  # the middle w columns of a 180 x 120 smooth random picture
        big = cv2.resize(rng.integers(0, 255, (6, 9, 3), dtype=np.uint8), (180, 120), interpolation=cv2.INTER_CUBIC)
        return big[:, (180 - w) // 2:(180 - w) // 2 + w]

    import_pictures(root, tmp_path, {"selfie": [framed(120) for _ in range(16)],
                                     "portrait": [framed(180) for _ in range(16)]})
    return root


def test_a_model_that_reads_the_shape_is_flagged_and_normalize_removes_it(tmp_path: Path) -> None:
    root = _shapes_only_dataset(tmp_path)
    raw = train(App.create(train_settings(root, tmp_path / "raw", ["image"], folds=2)), "t").metrics
    flips = raw["counterfactual"]["per_label"]
    assert raw["counterfactual"]["warn"], raw["counterfactual"]
    assert sum(v["flipped"] for v in flips.values()) > 0.5 * sum(v["checked"] for v in flips.values())
    assert any("follows the picture's frame" in w for w in raw["warnings"])
    shaped = train(App.create(train_settings(root, tmp_path / "norm", ["image"], folds=2, normalize=True)), "t")
    cf = shaped.metrics["counterfactual"]
    assert not cf["warn"] and sum(v["flipped"] for v in cf["per_label"].values()) <= 2, cf
    model_card = (shaped.model_dir / "MODEL.md").read_text()
    assert "Does the answer follow the frame?" in model_card and "changed decision" in model_card
    assert "Frame counterfactual" in (shaped.model_dir / "report.html").read_text()


def _texture(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """Smooth random shapes with fine grain: detail at every scale, as a photo has."""
    base = cv2.resize(rng.integers(0, 255, (8, 12, 3), dtype=np.uint8), (width, height), interpolation=cv2.INTER_CUBIC)
    return np.clip(base + rng.normal(0, 25, base.shape), 0, 255).astype(np.uint8)


@hsettings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 2**16), big=st.integers(DETAIL * 3 // 2, 4 * DETAIL), share=st.floats(0.0, 1.0))
def test_normalize_does_not_tell_how_many_pixels_the_source_had(seed: int, big: int, share: float) -> None:
    """A picture and a smaller copy of it (both at least 1.5 x DETAIL on a side) normalize to
    squares whose sharpness, the feature most tied to resolution, is the same."""
    small = round(DETAIL * 3 // 2 + share * (big - DETAIL * 3 // 2))
    picture = _texture(np.random.default_rng(seed), big, big)
    copy = cv2.resize(picture, (small, small), interpolation=cv2.INTER_AREA)
    a, _ = normalize_image(picture, {}, Recipe(320, 85))
    b, _ = normalize_image(copy, {}, Recipe(320, 85))
    sharpness = ImageFeatures().extract(a, {})["sharpness"] / ImageFeatures().extract(b, {})["sharpness"]
    assert 0.85 < sharpness < 1.18, (big, small, sharpness)
    assert np.abs(a.astype(int) - b).mean() < 4


def _sizes_only_dataset(tmp_path: Path) -> Path:
    """Two labels whose pictures differ only by their pixel size: one aspect (3:2), one content
    distribution; the portraits are rendered at the selfies' size and averaged down to 60 %."""
    root = tmp_path / "data"
    rng = np.random.default_rng(11)
    smaller = [cv2.resize(_texture(rng, 480, 320), (288, 192), interpolation=cv2.INTER_AREA) for _ in range(16)]
    import_pictures(root, tmp_path, {"selfie": [_texture(rng, 480, 320) for _ in range(16)], "portrait": smaller})
    return root


def test_a_model_that_reads_the_pixel_size_is_flagged_and_normalize_removes_it(tmp_path: Path) -> None:
    root = _sizes_only_dataset(tmp_path)
    raw = train(App.create(train_settings(root, tmp_path / "raw", ["image"], folds=2)), "t").metrics
    cf = raw["counterfactual"]
    assert cf["warn_checks"] == ["size"], cf  # the aspect is the same: that check has nothing to move
    assert all("skipped" in v for v in cf["per_label"].values())
    sized = cf["per_label_size"].values()
    assert sum(v["flipped"] for v in sized) > 0.5 * sum(v["checked"] for v in sized), cf
    assert any("follows the picture's frame" in w and "pixel size" in w for w in raw["warnings"]), raw["warnings"]
    assert any("only the pixel size" in w for w in raw["warnings"]), raw["warnings"]  # not "the aspect ratio"
    shaped = train(App.create(train_settings(root, tmp_path / "norm", ["image"], folds=2, normalize=True)), "t")
    cf = shaped.metrics["counterfactual"]
    assert not cf["warn"] and sum(v["flipped"] for v in cf["per_label_size"].values()) <= 3, cf
    assert shaped.metrics["cv"]["lightgbm"]["roc_auc"] < 0.75, shaped.metrics["cv"]["lightgbm"]
    assert "megapixels" in (shaped.model_dir / "MODEL.md").read_text()


def test_the_size_warning_names_the_part_of_the_frame_that_carries_the_signal() -> None:
    """An image-size baseline that only the pixel count explains is not blamed on the aspect."""
    by_pixels = {"image_size": {"roc_auc": 0.99, "carried_by": {"aspect ratio": 0.5, "pixel size": 0.99}}}
    [warning] = confounder_warnings(0.98, by_pixels)
    assert "only the pixel size (" in warning and "aspect ratio alone: AUC 0.500" in warning
    by_aspect = {"image_size": {"roc_auc": 0.97, "carried_by": {"aspect ratio": 0.97, "pixel size": 0.55}}}
    assert "only the aspect ratio (" in confounder_warnings(0.98, by_aspect)[0]
    together = {"image_size": {"roc_auc": 0.97, "carried_by": {"aspect ratio": 0.7, "pixel size": 0.7}}}
    assert "only the image size and aspect ratio (" in confounder_warnings(0.98, together)[0]
    normalized = confounder_warnings(0.98, by_pixels, normalized=True)[0]
    assert "the aspect ratio" not in normalized.split("reaches")[1]  # normalize removed it: not a cause left


def test_a_model_saved_without_a_detail_step_is_fed_as_it_was_trained(tmp_path: Path) -> None:
    """A schema naming only ``shape`` is the normalize those models were trained with: the
    largest square, resize, JPEG (no bars trimmed, no detail step)."""
    picture = _texture(np.random.default_rng(3), 300, 200)
    box = {"box": [120, 50, 60, 60], "face_area": 0.06, "n_faces": 1}
    got, _ = normalize_image(picture, box, Recipe.saved({"side": 160, "jpeg_quality": 80, "shape": "square"}))
    x, y, side = square_crop(300, 200, box["box"])
    crop = cv2.resize(picture[y:y + side, x:x + side], (160, 160), interpolation=cv2.INTER_AREA)
    buf = io.BytesIO()
    Image.fromarray(crop).save(buf, "JPEG", quality=80)
    assert np.array_equal(got, np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB")))
    assert not np.array_equal(got, normalize_image(picture, box, Recipe(160, 80))[0])  # a new model's differs


def _halved(paths: list[Path], folder: Path) -> list[Path]:
    folder.mkdir()
    out = []
    for path in paths:
        with Image.open(path) as im:
            small = im.convert("RGB").resize((im.width // 2, im.height // 2), Image.Resampling.LANCZOS)
            small.save(folder / path.name, quality=90, exif=im.info.get("exif", b""))  # only the size differs
        out.append(folder / path.name)
    return out


def test_the_counterfactual_sees_what_predict_does_to_a_smaller_copy(faces_dir: Path, tmp_path: Path) -> None:
    """Real photos, one label halved: the face detector boxes a face in a smaller picture on
    another grid, so a copy's geometry differs from the stored box scaled. The counterfactual
    must report the flips predict really makes on halved copies of the same photos."""
    photos = sorted((faces_dir / "portrait").glob("caltech_*.jpg"))[:40]
    root = tmp_path / "data"
    build_dataset(root, {"selfie": _halved(photos[0::2], tmp_path / "small"), "portrait": photos[1::2]})
    result = train(App.create(train_settings(root, tmp_path / "model", ["geometry", "image"], folds=3,
                                             normalize=True)), "t")
    model = load_model(result.model_dir)
    full = model.predict(photos[1::2])
    half = model.predict(_halved(photos[1::2], tmp_path / "copies"))
    pairs = [(a.label, b.label) for a, b in zip(full, half) if a.status == b.status == "ok"]
    predict_rate = sum(a != b for a, b in pairs) / len(pairs)
    cf = result.metrics["counterfactual"]["per_label_size"]["portrait"]
    assert abs(cf["rate"] - predict_rate) <= 0.3, (cf, predict_rate, len(pairs))
    assert ("size" in result.metrics["counterfactual"]["warn_checks"]) == (cf["rate"] > FLIP_WARN)
    # the face is found again in the normalized square, on one grid for every copy: the size
    # no longer reaches the geometry through the detector's box (boxes moved from each
    # picture's own grid flipped most halved copies here)
    assert predict_rate <= 0.25, (predict_rate, len(pairs))


def test_a_found_face_replaces_the_moved_box_and_none_found_keeps_it() -> None:
    picture = _texture(np.random.default_rng(5), 300, 200)
    face = {"box": [120, 50, 60, 60], "face_area": 0.06, "n_faces": 1}
    seen: list[bytes] = []

    def two_faces(data: bytes, pixels: np.ndarray) -> list[FaceBox]:
        seen.append(data)
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(data)).convert("RGB")), pixels)
        return [FaceBox(10, 20, 30, 40), FaceBox(50, 40, 80, 90)]

    out, found = normalize_image(picture, face, Recipe(160, 80), find_faces=two_faces)
    # the finder got the square's own bytes: what it boxes is what the features measure
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(seen[0])).convert("RGB")), out)
    assert found["box"] == [50, 40, 80, 90] and found["n_faces"] == 2
    assert found["face_area"] == pytest.approx(80 * 90 / 160 ** 2)
    _, moved = normalize_image(picture, face, Recipe(160, 80))
    for nothing in ([], None):
        assert normalize_image(picture, face, Recipe(160, 80), find_faces=lambda data, pixels: nothing)[1] == moved


def test_training_measures_the_face_the_chain_finds_in_the_square(tmp_path: Path, monkeypatch) -> None:
    """The feature workers (in this process and in a pool) run predict's own steps on each
    normalized square: geometry measures that box, not the collection's box moved in."""
    from skimage.data import astronaut

    from selfiescope.core.components import StoredImage
    from selfiescope.pipelines.model import dataset, feature_tasks
    from selfiescope.plugins.decode import DecodeStep
    from selfiescope.plugins.face_area import FaceAreaStep
    from selfiescope.plugins.features import GeometryFeatures

    head = astronaut()[10:250, 90:390]  # 300 x 240, the face about a fifth of it
    pictures = {"wide": head, "half": cv2.resize(head, (150, 120), interpolation=cv2.INTER_AREA)}
    steps = [(DecodeStep, {}), (FaceAreaStep, {})]
    made = [cls(cls.Options.model_validate(options), None) for cls, options in steps]
    tasks, expected = [], {}
    for name, picture in pictures.items():
        buf = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(picture)).save(buf, "PNG")
        event = feature_tasks.decode_with_step(made[0], buf.getvalue())
        made[1].process(event)  # a large face: kept, boxed on the picture's own grid
        face = dataset.event_face_dict(event, None)
        _, moved = normalize_image(event.image, face, Recipe(200, 85))
        _, found = normalize_image(event.image, face, Recipe(200, 85), find_faces=feature_tasks.chain_faces(made))
        assert found["box"] and found["box"] != moved["box"]  # the square's own detection, not the moved box
        expected[name] = found["box"][2] / 200
        tasks.append(feature_tasks.Task(name, StoredImage(name, "x", f"x/{name}.png"), face, ["geometry"], Recipe(200, 85),
                                  data=buf.getvalue()))

    def run() -> dict[str, float]:
        got: dict[str, float] = {}
        feature_tasks.run_tasks(tasks, steps, [GeometryFeatures()], 2,
                          lambda h, r, e: got.__setitem__(h, r["geometry"]["face_w"] if r else e))
        return got

    assert run() == pytest.approx(expected)
    monkeypatch.setattr(feature_tasks, "MIN_POOL_TASKS", 0)
    assert run() == pytest.approx(expected)  # the pooled workers set up the same steps
    # the decoding step's own decisions are not asked again about a square normalize made:
    # a min_side above the square's side still leaves the face to be found in it
    strict = [DecodeStep(DecodeStep.Options(min_side=1000), None), made[1]]
    event = feature_tasks.decode_with_step(made[0], tasks[0].data)
    _, found = normalize_image(event.image, tasks[0].face, Recipe(200, 85), find_faces=feature_tasks.chain_faces(strict))
    assert found["box"][2] / 200 == pytest.approx(expected["wide"])



def test_classes_that_differ_only_by_exif_are_flagged_and_normalize_drops_the_metadata(tmp_path: Path) -> None:
    """The same kind of pictures, one label's files with an EXIF block, the other's without
    (an editor's re-save drops it): the file-format baseline sees it and warns; normalized
    features never see the file's metadata, so the model cannot read it."""
    from privacy_helpers import import_folder, settings_for

    rng = np.random.default_rng(21)
    root = tmp_path / "data"
    for label, with_exif in (("selfie", True), ("portrait", False)):
        folder = tmp_path / label
        folder.mkdir()
        for i in range(16):
            exif = Image.Exif()
            exif[0x010F] = "Camera Maker"  # Make
            Image.fromarray(_texture(rng, 360, 240)).save(folder / f"{i}.jpg", quality=90,
                                                           exif=exif.tobytes() if with_exif else b"")
        import_folder(settings_for(root), folder, label)
    raw = train(App.create(train_settings(root, tmp_path / "raw", ["image"], folds=2)), "t").metrics
    assert raw["cv"]["baselines"]["file_format"]["roc_auc"] > 0.9, raw["cv"]["baselines"]
    assert any("metadata" in w and "camera or file" in w for w in raw["warnings"]), raw["warnings"]
    shaped = train(App.create(train_settings(root, tmp_path / "norm", ["image"], folds=2, normalize=True)), "t")
    columns = shaped.table.columns
    present = shaped.table.X[:, columns.index("image.exif_present")]
    assert set(present.tolist()) == {0.0}  # no picture's metadata reached the features
    assert shaped.metrics["cv"]["lightgbm"]["roc_auc"] < 0.75, shaped.metrics["cv"]["lightgbm"]


@hsettings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**16), sides=st.tuples(*[st.integers(0, 60)] * 4), colour=st.sampled_from([0, 255, 40]),
       jpeg=st.booleans())
def test_bars_at_the_edges_are_trimmed_before_the_square(seed: int, sides: tuple[int, int, int, int], colour: int,
                                                         jpeg: bool) -> None:
    """A letterboxed or padded copy (one-colour bars on any sides, saved losslessly or as a JPEG,
    whose ringing blurs the bars' inner edge) gives nearly the square its original gives."""
    from selfiescope.pipelines.model.normalize import content_bounds

    rng = np.random.default_rng(seed)
    picture = _texture(rng, 240, 160)
    top, bottom, left, right = sides
    padded = cv2.copyMakeBorder(picture, top, bottom, left, right, cv2.BORDER_CONSTANT, value=(colour,) * 3)
    if jpeg:
        buf = io.BytesIO()
        Image.fromarray(padded).save(buf, "JPEG", quality=90)
        padded = np.asarray(Image.open(buf).convert("RGB"))
    box = [90, 40, 60, 60]
    x0, y0, x1, y1 = content_bounds(padded, [box[0] + left, box[1] + top, 60, 60])
    slack = 8 if jpeg else 0  # a JPEG block across the bar's edge is not one colour any more
    assert 0 <= left - x0 <= slack and 0 <= top - y0 <= slack
    assert 0 <= (x1 - left) - 240 <= slack and 0 <= (y1 - top) - 160 <= slack
    a, _ = normalize_image(picture, {"box": box}, Recipe(96, 95))
    b, _ = normalize_image(padded, {"box": [box[0] + left, box[1] + top, 60, 60]}, Recipe(96, 95))
    assert np.abs(a.astype(float) - b.astype(float)).mean() < (6 if jpeg else 2)


def test_a_photo_all_of_one_colour_or_bars_up_to_the_face_keep_the_face() -> None:
    from selfiescope.pipelines.model.normalize import content_bounds

    flat = np.full((100, 150, 3), 30, np.uint8)
    assert content_bounds(flat, None) == (0, 0, 150, 100)  # nothing but one colour: nothing trimmed
    assert content_bounds(flat, [10, 10, 20, 20]) == (0, 0, 150, 100)
    framed = flat.copy()
    framed[20:80, 30:120] = _texture(np.random.default_rng(1), 90, 60)
    assert content_bounds(framed, None) == (30, 20, 120, 80)
    framed[20:80, 30:40] = 30  # a face box reaching into the bar's colour is kept whole
    assert content_bounds(framed, [32, 30, 40, 40]) == (32, 20, 120, 80)


def test_classes_that_differ_only_by_letterbox_bars_do_not_reach_the_normalized_model(tmp_path: Path) -> None:
    """One label's pictures carry black bars above and below (a letterboxed upload): a model on
    the files reads them; the square crop alone would keep them; trimmed first, the normalized
    model gives a new picture and its letterboxed copy exactly one answer."""
    rng = np.random.default_rng(13)
    pictures = [_texture(rng, 300, 200) for _ in range(40)]

    def barred(p: np.ndarray) -> np.ndarray:
        return cv2.copyMakeBorder(p, 30, 30, 0, 0, cv2.BORDER_CONSTANT, value=(0, 0, 0))

    root = tmp_path / "data"
    (tmp_path / "in").mkdir()
    import_pictures(root, tmp_path / "in", {"selfie": [barred(p) for p in pictures[:16]], "portrait": pictures[16:32]})
    raw = train(App.create(train_settings(root, tmp_path / "raw", ["image"], folds=2)), "t")
    assert raw.metrics["cv"]["lightgbm"]["roc_auc"] > 0.9  # the bars tell the labels apart
    shaped = train(App.create(train_settings(root, tmp_path / "norm", ["image"], folds=2, normalize=True)), "t")
    new = tmp_path / "new"
    new.mkdir()
    for i, p in enumerate(pictures[32:]):
        cv2.imwrite(str(new / f"{i}.png"), p)
        cv2.imwrite(str(new / f"{i}-barred.png"), barred(p))
    for model, same in ((load_model(raw.model_dir), False), (load_model(shaped.model_dir), True)):
        got = {Path(r.path).name: r.probability for r in model.predict([new])}
        pairs = [(got[f"{i}.png"], got[f"{i}-barred.png"]) for i in range(8)]
        assert all(a == b for a, b in pairs) == same, pairs


def test_a_check_whose_changed_photos_were_all_turned_away_is_still_listed() -> None:
    from selfiescope.pipelines.model.counterfactual import flip_lines

    result = {"per_label": {"selfie": {"to_aspect": 1.5, "checked": 0, "flipped": 0, "no_face": 11, "rate": None},
                            "portrait": {"to_aspect": 1.0, "checked": 20, "flipped": 1, "no_face": 0, "rate": 0.05}},
              "per_label_size": {}}
    lines = flip_lines(result)
    assert any(line.startswith("selfie, aspect ratio: not scored") and "all 11" in line for line in lines), lines
    assert any(line.startswith("portrait: 1 of 20") for line in lines), lines


def test_place_face_moves_the_face_by_cropping_only() -> None:
    from selfiescope.pipelines.model.counterfactual import place_face

    picture = _texture(np.random.default_rng(4), 300, 200)
    face = {"box": [120, 70, 60, 60], "face_area": 0.06}
    for target in ((0.5, 0.25), (0.2, 0.8), (0.5, 0.5), (0.9, 0.1)):
        out, moved = place_face(picture, face, target)
        x, y, w, h = moved["box"]
        assert out.shape[0] <= 200 and out.shape[1] <= 300  # a crop, never padding
        assert 0 <= x and 0 <= y and x + w <= out.shape[1] and y + h <= out.shape[0]  # the whole face stays
        assert np.array_equal(out[y:y + h, x:x + w], picture[70:130, 120:180])
        reachable = (w / 2 / out.shape[1], h / 2 / out.shape[0])  # the nearest the centre can get to an edge
        for axis, size in ((0, out.shape[1]), (1, out.shape[0])):
            centre = ((x, y)[axis] + (w, h)[axis] / 2) / size
            assert centre == pytest.approx(min(max(target[axis], reachable[axis]), 1 - reachable[axis]), abs=0.02)


def _edge_cropped(paths: list[Path], folder: Path) -> list[Path]:
    """Each photo cut just above its face (HOG's box, a tenth of its side of margin): a selfie's
    frame, the face at the top edge; otherwise the same pixels."""
    from selfiescope.plugins.face_area import detect_faces

    folder.mkdir()
    out = []
    for path in paths:
        with Image.open(path) as im:
            rgb = np.asarray(im.convert("RGB"))
        faces = detect_faces(rgb)
        if not faces:
            continue
        top = max(0, faces[0].y - faces[0].h // 10)
        Image.fromarray(rgb[top:]).save(folder / f"{path.stem}.png")
        out.append(folder / f"{path.stem}.png")
    return out


def test_classes_that_differ_only_by_where_the_face_sits_are_flagged(faces_dir: Path, tmp_path: Path) -> None:
    """One label's photos cut just above the face, the other's as they are: a normalized square
    that must stay inside the frame puts the face at its top edge, and the model reads that; the
    face-position check moves photos to the other label's placement and reports the flips."""
    photos = [p for p in sorted(faces_dir.glob("*/*.jpg")) if "group" not in p.parts][:60]
    root = tmp_path / "data"
    build_dataset(root, {"selfie": _edge_cropped(photos[0::2], tmp_path / "edge"), "portrait": photos[1::2]})
    result = train(App.create(train_settings(root, tmp_path / "model", ["geometry"], folds=3, normalize=True,
                                             group_by_person=False)), "t")
    cf = result.metrics["counterfactual"]
    placed = cf["per_label_placement"]
    assert all("to_placement" in v for v in placed.values()), placed
    auc = result.metrics["cv"]["lightgbm"]["roc_auc"]
    flipped = sum(v["flipped"] for v in placed.values()) / max(1, sum(v["checked"] for v in placed.values()))
    assert auc < 0.75 or "placement" in cf["warn_checks"], (auc, placed)  # read it, then it is flagged
    assert "face position" in (result.model_dir / "MODEL.md").read_text()
    assert auc < 0.75 or flipped > FLIP_WARN
