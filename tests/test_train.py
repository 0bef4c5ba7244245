"""Training: a geometry-decided synthetic dataset is learnt, artifacts are complete, features are cached."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score
from train_helpers import build_dataset, rendered_dataset, train_settings, write_pictures
from typer.testing import CliRunner

from selfiescope.core.app import App
from selfiescope.cli import app
from selfiescope.core.settings import SettingsError, settings_from_dict
from selfiescope.pipelines.model.dataset import DatasetError
from selfiescope.pipelines.model.predict import load_model
from selfiescope.pipelines.model.train import _balance, cv_splits, train

FACES = Path(__file__).resolve().parents[2] / "shared" / "faces"
CHEAP = ["geometry", "image"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return rendered_dataset(tmp_path_factory.mktemp("train_ds"), 40, 30)


@pytest.fixture(scope="module")
def trained(dataset: Path):
    settings = train_settings(dataset, dataset / "model", CHEAP, folds=3)
    return train(App.create(settings), "t")


def test_learns_geometry_and_beats_the_face_area_baseline(trained, dataset, tmp_path):
    cv = trained.metrics["cv"]
    assert cv["lightgbm"]["roc_auc"] > 0.9
    assert cv["lightgbm"]["roc_auc"] > cv["baseline_face_area"]["roc_auc"] + 0.05
    # Fresh pictures never seen in training, through the real predict path (decode + face_area + features).
    files = write_pictures(tmp_path / "sel", "selfie", 12, seed=11) + write_pictures(tmp_path / "por", "portrait", 12, seed=12)
    results = load_model(trained.model_dir).predict(files)
    scored = [(r.probability, "selfie_" in Path(r.path).name) for r in results if r.status == "ok"]
    assert len(scored) >= 20
    assert roc_auc_score([t for _, t in scored], [p for p, _ in scored]) > 0.9


def test_artifacts_folder_is_complete(trained):
    d = trained.model_dir
    for name in ("model.txt", "schema.json", "settings.json", "metrics.json", "versions.json", "predictions.csv",
                 "report.html", "roc.png", "confusion.png", "calibration.png", "importance.png", "balance.png",
                 "examples.png"):
        assert (d / name).stat().st_size > 0, name
    schema = json.loads((d / "schema.json").read_text())
    assert schema["labels"] == ["selfie", "portrait"] and schema["threshold"] == 0.5
    assert [g["name"] for g in schema["groups"]] == CHEAP
    assert all(g["version"] for g in schema["groups"])
    assert "geometry.edge_min" in schema["columns"]
    assert json.loads((d / "settings.json").read_text())["settings"]["pipelines"]["t"]["features"] == CHEAP
    versions = json.loads((d / "versions.json").read_text())
    assert versions["lightgbm"] and versions["scikit-learn"] and versions["python"]
    metrics = json.loads((d / "metrics.json").read_text())
    assert metrics["dataset"]["per_label"]["selfie"] >= 30
    assert len(metrics["cv"]["lightgbm"]["confusion_matrix"]) == 2
    html = (d / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 5 and "data:image/jpeg;base64," in html
    assert "face area only" in html and "#selfie" in html  # baseline and per-hashtag balance
    assert not list(d.parent.glob(f".{d.name}.*"))  # no temporary folders left


def test_second_training_reuses_every_cached_feature(trained, dataset):
    db = sqlite3.connect(dataset / "manifest.sqlite")
    before = db.execute("SELECT COUNT(*) FROM features").fetchone()[0]
    settings = train_settings(dataset, dataset / "model2", CHEAP, folds=3, report=False)
    again = train(App.create(settings), "t")
    assert again.table.computed == 0 and again.table.cached == len(again.table.rows)
    assert db.execute("SELECT COUNT(*) FROM features").fetchone()[0] == before
    assert again.metrics["cv"]["lightgbm"]["roc_auc"] == pytest.approx(trained.metrics["cv"]["lightgbm"]["roc_auc"])
    assert not (dataset / "model2" / "report.html").exists()


def test_a_broken_stored_file_is_reported_and_training_goes_on(dataset, tmp_path):
    root = tmp_path / "ds"
    root.mkdir()
    shutil.copy(dataset / "manifest.sqlite", root / "manifest.sqlite")
    for folder in ("selfie", "portrait"):  # the stored images, as the files backend keeps them
        shutil.copytree(dataset / folder, root / folder)
    db = sqlite3.connect(root / "manifest.sqlite")
    (victim, label) = db.execute("SELECT content_hash, label FROM images WHERE decision='accepted' LIMIT 1").fetchone()
    (root / label / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")  # read through the files backend
    db.execute("UPDATE images SET location=? WHERE content_hash=?", (f"{label}/broken.jpg", victim))
    db.execute("DELETE FROM features WHERE content_hash=?", (victim,))
    (gone,) = db.execute("SELECT content_hash FROM images WHERE decision='accepted' AND content_hash != ? LIMIT 1",
                         (victim,)).fetchone()
    (gone_location,) = db.execute("SELECT location FROM images WHERE content_hash=?", (gone,)).fetchone()
    (root / gone_location).unlink()  # reading it back from storage fails
    db.execute("DELETE FROM features WHERE content_hash=?", (gone,))
    db.commit()
    result = train(App.create(train_settings(root, root / "model", CHEAP, folds=3, report=False)), "t")
    assert sorted(result.table.failed) == sorted([victim, gone])
    assert "corrupt" in result.table.failed[victim] or "truncated" in result.table.failed[victim]
    assert result.table.failed[gone].startswith("cannot read from storage: FileNotFoundError")
    assert result.metrics["dataset"]["failed"] == 2
    assert result.table.computed + result.table.cached == len(result.table.rows)


def test_grouped_folds_never_split_a_near_duplicate_cluster():
    rng = np.random.default_rng(0)
    y = np.array([0, 1] * 30)
    groups = rng.integers(0, 15, len(y)) * 2 + y  # clusters never mix labels
    for train_idx, test_idx in cv_splits(y, groups, 4, seed=0):
        assert not set(groups[train_idx]) & set(groups[test_idx])
        assert set(y[test_idx]) == {0, 1}


def test_class_imbalance_is_weighted():
    y = np.array([1] * 10 + [0] * 40)
    assert _balance({}, y)["scale_pos_weight"] == 4.0
    assert _balance({"is_unbalance": True}, y) == {"is_unbalance": True}


def test_bad_train_settings_and_datasets_are_clear_errors(dataset, tmp_path):
    with pytest.raises(SettingsError, match="two labels"):
        train(App.create(train_settings(dataset, tmp_path / "m", CHEAP, labels=["selfie"])), "t")
    with pytest.raises(SettingsError, match="unknown feature group 'nope'"):
        train(App.create(train_settings(dataset, tmp_path / "m", ["geometry", "nope"])), "t")
    with pytest.raises(DatasetError, match="no dataset"):
        train(App.create(train_settings(tmp_path / "empty", tmp_path / "m", CHEAP)), "t")
    with pytest.raises(DatasetError, match="at least"):
        train(App.create(train_settings(dataset, tmp_path / "m", CHEAP, labels=["selfie", "cat"])), "t")
    settings = settings_from_dict({"pipelines": {"s": {"kind": "import", "source": "folder", "paths": ["x"], "label": "a"}}})
    with pytest.raises(SettingsError, match="not a train pipeline"):
        train(App.create(settings), "s")


def test_cli_train_json(dataset, tmp_path, monkeypatch):
    (tmp_path / "settings.toml").write_text(
        f'[storage]\nroot = "{dataset}"\n[pipelines.mine]\nkind = "train"\nfeatures = ["geometry"]\n'
        f'model_dir = "{tmp_path / "cli_model"}"\nfolds = 3\nreport = false\n'
    )
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["train", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["roc_auc"] > 0.9 and summary["features_cached"] == summary["images"]
    assert (tmp_path / "cli_model" / "model.txt").exists()
    bad = CliRunner().invoke(app, ["train", "--features", "geometry,nope"])
    assert bad.exit_code == 2 and "nope" in bad.output


@pytest.mark.faces
@pytest.mark.slow
def test_train_and_predict_on_real_photos(tmp_path):
    if not FACES.is_dir():
        pytest.skip("real photos in ../shared/faces absent")
    selfies = sorted((FACES / "selfie").glob("*.jpg"))
    portraits = sorted((FACES / "portrait").glob("caltech_*.jpg"))
    # 306 px Instagram selfies: a lower area threshold than the default keeps most of them
    settings = train_settings(tmp_path, tmp_path / "model", ["geometry", "landmarks", "embedding", "image"],
                              plugins={"face_area": {"min_face_area": 0.05}}, folds=3, report=False)
    accepted = build_dataset(tmp_path, {"selfie": selfies[:34], "portrait": portraits[:16]}, settings)
    assert min(accepted.values()) >= 8, accepted
    result = train(App.create(settings), "t")
    assert result.metrics["dataset"]["failed"] == 0
    assert result.metrics["cv"]["lightgbm"]["roc_auc"] is not None
    # 306x306 Instagram selfies vs 448x296 Caltech portraits: the sizes alone separate them, and the run says so
    assert result.metrics["cv"]["baselines"]["image_size"]["roc_auc"] > 0.9
    assert any("image size" in w for w in result.metrics["warnings"])
    assert np.isfinite(result.table.X[:, result.table.columns.index("landmarks.yaw")]).mean() > 0.8
    model = load_model(result.model_dir)
    unseen = selfies[34:37] + portraits[30:33] + [FACES / "group" / "t1.jpg"]
    results = model.predict(unseen)
    assert len(results) == len(unseen)
    assert {r.status for r in results} <= {"ok", "no_face"}
    ok = [r for r in results if r.status == "ok"]
    assert ok and all(r.label in ("selfie", "portrait") and 0 <= r.probability <= 1 for r in ok)
