"""Dataset and model honesty: confounder baselines warn, calibration helps, the model card tells.

The datasets are synthetic with a known truth: in the confounded one the two labels hold
the same kind of pictures and differ only in the JPEG quality they were saved with, so
any separation is the file's, not the content's.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings as hsettings, strategies as st
from PIL import Image
from train_helpers import build_dataset, render, train_settings, write_pictures
from typer.testing import CliRunner

from selfiescope.core.app import App
from selfiescope.cli import app
from selfiescope.pipelines.model.baselines import bootstrap_auc_ci, confounder_warnings, jpeg_quality
from selfiescope.pipelines.model.calibration import Calibrator, calibrate
from selfiescope.pipelines.model.normalize import DETAIL, Recipe
from selfiescope.pipelines.model.predict import load_model
from selfiescope.pipelines.model.train import train

CHEAP = ["geometry", "image"]


def write_by_quality(folder: Path, n: int, seed: int, quality: int) -> list[Path]:
    """Pictures of both kinds (so geometry tells nothing), all saved at one JPEG quality."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        path = folder / f"q{quality}_{i:03d}.jpg"
        Image.fromarray(render("selfie" if i % 2 else "portrait", rng)).save(path, "JPEG", quality=quality)
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def confounded(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("confounded")
    files = {"selfie": write_by_quality(root / "in" / "s", 30, seed=5, quality=95),
             "portrait": write_by_quality(root / "in" / "p", 30, seed=6, quality=35)}
    accepted = build_dataset(root, files)
    assert min(accepted.values()) >= 20, accepted
    return root


@pytest.fixture(scope="module")
def clean(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("clean")
    files = {"selfie": write_pictures(root / "in" / "s", "selfie", 30, seed=1),
             "portrait": write_pictures(root / "in" / "p", "portrait", 30, seed=2)}
    build_dataset(root, files)
    return root


def test_classes_that_differ_only_by_jpeg_quality_trigger_the_warning(confounded, tmp_path):
    result = train(App.create(train_settings(confounded, tmp_path / "model", CHEAP, folds=3)), "t")
    cv = result.metrics["cv"]
    assert cv["baselines"]["file_format"]["roc_auc"] > 0.95
    assert cv["baselines"]["image_size"]["roc_auc"] < 0.65  # same size everywhere: that baseline knows nothing
    assert any("file format / JPEG quality" in w and "camera or file" in w for w in result.metrics["warnings"])
    html = (result.model_dir / "report.html").read_text()
    card = (result.model_dir / "MODEL.md").read_text()
    for text in (html, card):
        assert "differ by camera or file" in text
    assert "baseline: file format / JPEG quality / metadata only" in card and "Known limitations" in card


def test_clean_dataset_has_no_warning_and_a_complete_card(clean, tmp_path):
    # The renderings all come from one photo, so at the default pHash distance (16) each label is
    # one near-copy group and training warns that it could not group by it (tests/test_grouping.py);
    # within 4 bits (whole, centre or mirror) they are distinct photos, which is what this test is about.
    # They are one face, too: grouped by person, each label would be one group (and training says so).
    settings = train_settings(clean, tmp_path / "model", CHEAP, folds=3, group_distance=4, group_by_person=False)
    result = train(App.create(settings), "t")
    cv = result.metrics["cv"]
    assert result.metrics["warnings"] == []
    assert cv["lightgbm"]["roc_auc"] > 0.9 and cv["baselines"]["file_format"]["roc_auc"] < 0.7
    lo, hi = cv["roc_auc_ci95"]["lightgbm"]
    assert lo <= cv["lightgbm"]["roc_auc"] <= hi
    assert set(cv["per_source"]) == {"#selfie", "#portrait"}
    assert cv["per_source"]["#selfie"]["per_label"] == {"selfie": result.metrics["dataset"]["per_label"]["selfie"],
                                                       "portrait": 0}
    card = (result.model_dir / "MODEL.md").read_text()
    for part in ("## Intended use", "## Data", "## Features", "## Metrics", "## Known limitations", "#selfie",
                 "baseline: face area only", "baseline: image size / aspect ratio only", "Collected:"):
        assert part in card, part
    assert "Warning" not in card
    schema = json.loads((result.model_dir / "schema.json").read_text())
    assert schema["calibration"]["method"] in ("identity", "platt", "isotonic")
    calibration = result.metrics["cv"]["calibration"]
    assert set(calibration["brier_by_method"]) == {"none", "platt", "isotonic"}  # none is always a candidate
    assert calibration["method"] == {"identity": "none"}.get(schema["calibration"]["method"], schema["calibration"]["method"])
    assert "Calibration of the final model" in card and "none (Brier" in card
    grouping = result.metrics["dataset"]["grouping"]
    assert grouping["groups"] == result.metrics["dataset"]["groups"] and "Grouped by" in card


def test_too_few_groups_are_warned_about_and_get_no_interval(clean, tmp_path, monkeypatch):
    """Links that chain most photos into a few groups leave fewer folds than asked for and a
    bootstrap over a handful of units: training says so, and gives no interval that only
    looks precise."""
    from selfiescope.pipelines.model import dataset
    from selfiescope.pipelines.model.assessment import few_groups_warning
    from selfiescope.pipelines.model.leak_groups import Grouping

    y = np.array([1] * 20 + [0] * 20)
    assert few_groups_warning(y, np.arange(40), ["selfie", "portrait"], 5, 5) is None  # 20 groups a label
    chained = np.repeat(np.arange(8), 5)  # 4 groups per label
    assert "selfie 4, portrait 4" in few_groups_warning(y, chained, ["selfie", "portrait"], 5, 4)
    original = dataset.table_grouping

    def three_per_label(X, columns, rows, pipeline, y, **kwargs):
        grouping = original(X, columns, rows, pipeline, y, **kwargs)
        return Grouping(np.where(y == 1, 0, 3) + np.arange(len(y)) % 3, grouping.summary)

    monkeypatch.setattr(dataset, "table_grouping", three_per_label)
    result = train(App.create(train_settings(clean, tmp_path / "model", CHEAP, folds=5, group_distance=4,
                                             group_by_person=False)), "t")
    cv = result.metrics["cv"]
    assert cv["folds"] == 3
    [warning] = [w for w in result.metrics["warnings"] if "few independent groups" in w]
    assert "selfie 3, portrait 3" in warning and "only 3 of the 5 folds" in warning
    assert all(ci is None for ci in cv["roc_auc_ci95"].values()) and cv["ci_method"].startswith("not computed")
    card = (result.model_dir / "MODEL.md").read_text()
    assert "few independent groups" in card and "| n/a |" in card


def test_cli_says_it_plainly(confounded, tmp_path, monkeypatch):
    (tmp_path / "settings.toml").write_text(
        f'[storage]\nroot = "{confounded}"\n[pipelines.mine]\nkind = "train"\nfeatures = ["geometry"]\n'
        f'model_dir = "{tmp_path / "cli_model"}"\nfolds = 3\nreport = false\n'
    )
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["train"])
    assert result.exit_code == 0, result.output
    assert "warning:" in result.output and "differ by camera or file" in result.output


def test_normalize_reencodes_before_features_and_reports_both(confounded, tmp_path, monkeypatch):
    result = train(App.create(train_settings(confounded, tmp_path / "model", CHEAP, folds=3, normalize=True,
                                  normalize_side=200, normalize_quality=70)), "t")
    cv = result.metrics["cv"]
    assert result.metrics["normalize"] == {"side": 200, "jpeg_quality": 70, "shape": "square", "detail": DETAIL,
                                           "face": "square", "metadata": "dropped", "borders": "trimmed",
                                           "crop": "face"}
    assert cv["without_normalize"]["roc_auc"] is not None
    assert "files as stored (no normalize)" in (result.model_dir / "report.html").read_text()
    # predict re-encodes the same way: the stored files give the training features back
    model = load_model(result.model_dir)
    rows = result.table.rows[:3]
    by_location = {p.path: p for p in model.predict_stored()}  # read back through the storage backend
    got = [by_location[r.location] for r in rows]
    np.testing.assert_allclose([r.raw_probability for r in got], result.final.booster.predict(result.table.X[:3]), rtol=1e-6)
    # a model saved before the detail step, the second detection, the dropped metadata, the
    # trimmed bars and the face's square (its schema names none of them) is still fed as it
    # was: no band limit, the collection's box moved into the largest square, its EXIF and bars
    schema_path = result.model_dir / "schema.json"
    schema = json.loads(schema_path.read_text())
    del schema["normalize"]["detail"]
    del schema["normalize"]["face"]
    del schema["normalize"]["metadata"]
    del schema["normalize"]["borders"]
    del schema["normalize"]["crop"]
    schema_path.write_text(json.dumps(schema))
    import selfiescope.pipelines.model.predict as predict_module

    seen: list[object] = []
    refits: list[object] = []
    original = predict_module.normalized_square

    def spy(image, face, recipe):
        seen.append(recipe)
        return original(image, face, recipe)

    monkeypatch.setattr(predict_module, "normalized_square", spy)
    monkeypatch.setattr(predict_module, "refit_face", lambda *a: refits.append(a))
    load_model(result.model_dir).predict_stored()
    assert seen and set(seen) == {Recipe(200, 70, "square", None, "frame", "kept", "kept", "largest")}
    assert refits == []


def _toy(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    z = rng.normal(0, 1.5, n)
    y = (rng.random(n) < 1 / (1 + np.exp(-z))).astype(int)
    overconfident = 1 / (1 + np.exp(-4 * z + 1))  # right ranking, wrong probabilities
    return overconfident, y


def test_calibration_lowers_the_brier_score_of_a_miscalibrated_model():
    rng = np.random.default_rng(0)
    prob, y = _toy(rng, 600)
    result = calibrate(prob, y, np.arange(len(y)))
    assert result.brier_after < result.brier_before - 0.02
    fresh, y_fresh = _toy(rng, 2000)  # new data the calibrator never saw
    before = np.mean((fresh - y_fresh) ** 2)
    after = np.mean((result.calibrator(fresh) - y_fresh) ** 2)
    assert after < before - 0.02
    again = Calibrator.from_dict(json.loads(json.dumps(result.calibrator.to_dict())))
    np.testing.assert_allclose(again(fresh), result.calibrator(fresh))
    assert np.all(np.diff(again(np.linspace(0, 1, 50))) >= -1e-12)  # monotone: the ranking is kept


@hsettings(max_examples=25, deadline=None)
@given(quality=st.integers(5, 100), side=st.integers(8, 64))
def test_jpeg_quality_is_read_back_from_the_quantisation_tables(quality, side):
    buf = io.BytesIO()
    Image.new("RGB", (side, side), (90, 120, 150)).save(buf, "JPEG", quality=quality)
    estimate = jpeg_quality(Image.open(buf).quantization)
    assert abs(estimate - quality) <= 1  # neighbouring qualities can share a table
    assert np.isnan(jpeg_quality(None))


def test_warning_rule():
    base = {"image_size": {"roc_auc": 0.93}, "file_format": {"roc_auc": 0.55}}
    assert len(confounder_warnings(0.95, base)) == 1
    assert confounder_warnings(0.99, base) == []  # 0.06 behind the model
    assert confounder_warnings(0.6, {"image_size": {"roc_auc": 0.58}}) == []  # both near chance: nothing learnt


def test_bootstrap_interval_over_groups_is_wider_when_copies_are_not_independent():
    rng = np.random.default_rng(1)
    y = np.repeat(rng.integers(0, 2, 40), 5)
    prob = np.clip(y * 0.3 + rng.random(len(y)) * 0.7, 0, 1)
    per_image = bootstrap_auc_ci(y, prob, np.arange(len(y)))
    per_group = bootstrap_auc_ci(y, prob, np.repeat(np.arange(40), 5))
    assert per_image and per_group
    assert per_group[1] - per_group[0] > per_image[1] - per_image[0]
