"""Prediction: every input gets a result, the model's schema is checked, and predict sees what training saw."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from train_helpers import build_dataset, render, train_settings, write_pictures
from typer.testing import CliRunner

import selfiescope
from selfiescope.core.app import App
from selfiescope.cli import app
from selfiescope.pipelines.model.predict import ModelError, load_model
from selfiescope.pipelines.model.train import train

CHEAP = ["geometry", "image"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("predict_ds")
    files = {
        "selfie": write_pictures(root / "in" / "selfie", "selfie", 25, seed=3),
        "portrait": write_pictures(root / "in" / "portrait", "portrait", 25, seed=4),
    }
    build_dataset(root, files)
    return train(App.create(train_settings(root, root / "model", CHEAP, folds=3, report=False)), "t")


@pytest.fixture()
def inputs(tmp_path) -> dict[str, Path]:
    rng = np.random.default_rng(5)
    good = tmp_path / "good.jpg"
    Image.fromarray(render("selfie", rng)).save(good)
    nofaces = tmp_path / "noface.png"
    ramp = np.linspace(0, 255, 256, dtype=np.uint8)
    Image.fromarray(np.stack([np.tile(ramp, (256, 1))] * 3, axis=2)).save(nofaces)
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(good.read_bytes()[:600])
    text = tmp_path / "page.jpg"
    text.write_text("<html><body>login required</body></html>")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    return {"good": good, "noface": nofaces, "corrupt": corrupt, "text": text, "empty": empty,
            "missing": tmp_path / "gone.jpg"}


def test_every_input_gets_a_clear_result_and_the_rest_go_on(trained, inputs):
    order = ["corrupt", "good", "noface", "text", "empty", "missing"]
    results = selfiescope.load_model(trained.model_dir).predict([inputs[k] for k in order])
    by = dict(zip(order, results))
    assert [r.path for r in results] == [str(inputs[k]) for k in order]
    assert by["good"].status == "ok" and by["good"].label == "selfie" and by["good"].probability > 0.5
    assert by["noface"].status == "no_face" and "no_face" in by["noface"].reason
    assert by["corrupt"].status == "error" and "truncated" in by["corrupt"].reason.lower()
    assert by["text"].status == "error" and "HTML" in by["text"].reason
    assert by["empty"].status == "error" and "zero bytes" in by["empty"].reason
    assert by["missing"].status == "error" and "cannot read" in by["missing"].reason
    assert all(r.label is None and r.probability is None for r in results if r.status != "ok")


def test_folders_are_expanded(trained, inputs, tmp_path):
    results = load_model(trained.model_dir).predict(tmp_path)
    assert {Path(r.path).name for r in results} == {"good.jpg", "noface.png", "corrupt.jpg", "page.jpg", "empty.png"}


def test_predict_sees_exactly_what_training_saw(trained):
    model = load_model(trained.model_dir)
    rows = trained.table.rows[:6]
    by_location = {p.path: p for p in model.predict_stored()}  # read back through the storage backend
    results = [by_location[r.location] for r in rows]
    expected = trained.final.booster.predict(trained.table.X[:6], num_iteration=trained.final.best_iteration)
    assert [r.status for r in results] == ["ok"] * 6
    np.testing.assert_allclose([r.raw_probability for r in results], expected, rtol=1e-9)
    # the probability is the saved calibrator applied to that score; the label follows the threshold used
    np.testing.assert_allclose([r.probability for r in results], model.calibrator(expected), rtol=1e-9)
    assert model.calibrator.method in ("identity", "platt", "isotonic")
    assert all(r.threshold == 0.5 and r.label == ("selfie" if r.probability >= 0.5 else "portrait") for r in results)


def _edited_model(trained, tmp_path: Path, edit) -> Path:
    copy = tmp_path / "model_copy"
    shutil.copytree(trained.model_dir, copy)
    schema = json.loads((copy / "schema.json").read_text())
    edit(schema)
    (copy / "schema.json").write_text(json.dumps(schema))
    return copy


def test_schema_mismatch_is_a_clear_error(trained, tmp_path):
    def bump(schema):
        schema["groups"][0]["version"] = "999"

    with pytest.raises(ModelError, match="'geometry' is version 1, the model was trained with version 999"):
        load_model(_edited_model(trained, tmp_path / "a", bump))

    def unknown(schema):
        schema["groups"][1]["name"] = "vanished"

    with pytest.raises(ModelError, match="'vanished' is not installed"):
        load_model(_edited_model(trained, tmp_path / "b", unknown))

    def renamed(schema):
        schema["groups"][0]["features"][0] = "old_name"

    with pytest.raises(ModelError, match="different features.*Retrain"):
        load_model(_edited_model(trained, tmp_path / "c", renamed))


def test_unusable_model_folders(trained, tmp_path):
    with pytest.raises(ModelError, match="no such model folder"):
        load_model(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="schema.json is missing"):
        load_model(tmp_path / "empty")
    copy = tmp_path / "broken"
    shutil.copytree(trained.model_dir, copy)
    (copy / "model.txt").write_text("garbage")
    with pytest.raises(ModelError, match="truncated since training"):  # checked against schema.json first
        load_model(copy)
    schema = json.loads((copy / "schema.json").read_text())
    del schema["files"]  # a first-release model records no hashes: the model text is parsed in Python first
    (copy / "schema.json").write_text(json.dumps(schema))
    with pytest.raises(ModelError, match="not a usable LightGBM model"):
        load_model(copy)


def test_cli_predict_table_json_and_exit_codes(trained, inputs, tmp_path):
    runner = CliRunner()
    ok = runner.invoke(app, ["predict", str(trained.model_dir), str(inputs["good"]), str(inputs["noface"]), "--json"])
    assert ok.exit_code == 0, ok.output
    data = json.loads(ok.stdout)
    assert data["counts"] == {"ok": 1, "no_face": 1, "rejected": 0, "error": 0}
    assert data["predictions"][0]["label"] == "selfie"
    assert data["threshold"] == 0.5 and data["predictions"][0]["threshold"] == 0.5
    assert data["calibration"] in ("none", "platt", "isotonic") and data["predictions"][0]["raw_probability"] is not None
    bad = runner.invoke(app, ["predict", str(trained.model_dir), str(inputs["good"]), str(inputs["corrupt"])])
    assert bad.exit_code == 1
    assert "selfie" in bad.stdout and "error" in bad.stdout
    schema_bad = _edited_model(trained, tmp_path / "x", lambda s: s["groups"][0].update(version="0"))
    mismatch = runner.invoke(app, ["predict", str(schema_bad), str(inputs["good"])])
    assert mismatch.exit_code == 2 and "Retrain" in mismatch.output
    nothing = runner.invoke(app, ["predict", str(trained.model_dir), str(tmp_path / "no_such_dir_here")])
    assert nothing.exit_code == 2 and "not found" in nothing.output  # a path that does not exist is a bad path


@pytest.mark.parametrize("steps", ["absent", "old"], ids=["schema-without-steps", "schema-naming-decode-face_area"])
def test_models_saved_before_capabilities_still_load_and_agree(trained, tmp_path, steps):
    """Older schemas: ``steps`` missing (the steps are found by capability) or the literal old names."""
    def edit(schema):
        if steps == "absent":
            schema.pop("steps")
        else:
            schema["steps"] = ["decode", "face_area"]

    model = load_model(_edited_model(trained, tmp_path, edit))
    assert model.steps == ["decode", "face_area"]
    rows = trained.table.rows[:3]
    by_location = {p.path: p for p in model.predict_stored()}
    expected = trained.final.booster.predict(trained.table.X[:3], num_iteration=trained.final.best_iteration)
    np.testing.assert_allclose([by_location[r.location].raw_probability for r in rows], expected, rtol=1e-9)


def test_the_model_saves_the_steps_chosen_by_capability(trained):
    schema = json.loads((trained.model_dir / "schema.json").read_text())
    assert schema["steps"] == ["decode", "face_area"]


def test_a_photo_the_chain_rejects_is_a_decision_naming_the_models_setting(trained, inputs, tmp_path):
    small = tmp_path / "small.jpg"
    Image.open(inputs["good"]).resize((50, 50)).save(small)
    results = load_model(trained.model_dir).predict([small, inputs["noface"], inputs["corrupt"]])
    assert [r.status for r in results] == ["rejected", "no_face", "error"]
    assert results[0].code == "too_small" and results[0].setting == "[plugins.decode] min_side = 64"
    assert results[1].setting and "detector = 'hog', min_face_area = 0.1" in results[1].setting
    assert results[2].setting is None  # a file that is no image: no setting would keep it

    runner = CliRunner()
    table = runner.invoke(app, ["predict", str(trained.model_dir), str(small), str(inputs["noface"])])
    assert table.exit_code == 0, table.output  # read and decided: not an error
    assert "[plugins.decode] min_side = 64" in table.stdout and "[plugins.face_area] detector" in table.stdout
    assert "lower [plugins.decode] min_side to keep it" in table.stdout  # the step's own words, brackets kept
    assert "nothing scored: of 2 images, 2 rejected" in table.stdout
    data = json.loads(runner.invoke(app, ["predict", str(trained.model_dir), str(small), str(inputs["good"]), "--json"]).stdout)
    assert data["counts"] == {"ok": 1, "no_face": 0, "rejected": 1, "error": 0} and data["nothing_scored"] is None
    assert data["rejection_settings"] == {"too_small": "[plugins.decode] min_side = 64"}
    assert "[plugins.decode] min_side" in data["predictions"][0]["reason"]


def test_each_model_row_of_the_card_names_the_scores_it_rates(trained):
    card = (trained.model_dir / "MODEL.md").read_text()
    cv = json.loads((trained.model_dir / "metrics.json").read_text())["cv"]
    rows = {line.split(" | ")[0].lstrip("| "): line for line in card.splitlines() if line.startswith("| LightGBM")}
    assert rows, card
    assert all("fold models" in title or "final recipe" in title for title in rows), list(rows)
    assert not any(title.startswith("LightGBM, calibrated") for title in rows)  # "none" improved nothing: say what differs
    folds = next(line for title, line in rows.items() if "fold models" in title)
    assert f"| {cv['lightgbm']['brier']:.3f} |" in folds
    served = [line for title, line in rows.items() if "what predict runs" in title]
    assert len(served) == 1 and f"| {cv['lightgbm_calibrated']['brier']:.3f} |" in served[0]
    assert f"({cv['calibration']['method']})" in served[0] or f"calibration {cv['calibration']['method']}" in served[0]
    assert "score different models" in card
