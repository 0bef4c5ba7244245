"""A third party's own storage backend (tests/example_storage: images as SQLite rows), installed
through its entry point, carries a whole run: import -> train -> predict, through the CLI."""

from __future__ import annotations

import json
import sqlite3
import textwrap
from pathlib import Path

import pytest
from package_helpers import cli, install_example
from train_helpers import write_pictures

EXAMPLE = Path(__file__).parent / "example_storage"
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".bin"}


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> dict[str, str]:
    return install_example(tmp_path_factory, EXAMPLE)[0]


def test_import_train_predict_with_a_third_party_storage_backend(installed, tmp_path):
    root = tmp_path / "data"
    (tmp_path / "settings.toml").write_text(textwrap.dedent(f"""
        [storage]
        root = "{root}"
        backend = "blobstore"
        [pipelines.t]
        kind = "train"
        labels = ["selfie", "portrait"]
        features = ["geometry", "image"]
        model_dir = "{tmp_path / 'model'}"
        folds = 3
        workers = 1
    """))
    for label, seed in (("selfie", 21), ("portrait", 22)):
        folder = tmp_path / "in" / label
        write_pictures(folder, label, 18, seed=seed)
        proc = cli(installed, "import", str(folder), "--label", label, "--chain", "decode,face_area,store", "--json",
                   cwd=tmp_path)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert json.loads(proc.stdout)["accepted"] >= 12
    # every image is a row of the backend's database; none is a file under the root
    assert not [p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES]
    db = sqlite3.connect(root / "blobs.sqlite")
    blobs = db.execute("SELECT label || '/' || id FROM blobs").fetchall()
    db.close()
    manifest = sqlite3.connect(root / "manifest.sqlite")
    stored = manifest.execute("SELECT location, notes FROM images WHERE decision='accepted'").fetchall()
    manifest.close()
    assert {b for (b,) in blobs} == {loc for loc, _ in stored}
    assert all(json.loads(n)["blobstore"] == "sqlite" for _, n in stored)  # the backend's notes were saved

    proc = cli(installed, "train", "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "data:image/jpeg;base64," in (tmp_path / "model" / "report.html").read_text()  # thumbnails read via the backend

    # predict: the stored images, read back through the backend; and a new file from disk
    proc = cli(installed, "predict", str(tmp_path / "model"), "--stored", "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    predictions = json.loads(proc.stdout)["predictions"]
    assert len(predictions) == len(stored) and all(p["status"] == "ok" for p in predictions)
    right = sum(p["label"] == p["path"].split("/")[0] for p in predictions)
    assert right / len(predictions) > 0.75, predictions  # the geometry tells the classes apart
    new = write_pictures(tmp_path / "new", "selfie", 1, seed=99)[0]
    proc = cli(installed, "predict", str(tmp_path / "model"), str(new), "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads(proc.stdout)["predictions"][0]["status"] == "ok"
    proc = cli(installed, "predict", str(tmp_path / "model"), "--stored", "--label", "nobody", cwd=tmp_path)
    assert proc.returncode == 2 and "no images under label 'nobody'" in proc.stdout + proc.stderr
    proc = cli(installed, "predict", str(tmp_path / "model"), str(new), "--stored", cwd=tmp_path)
    assert proc.returncode == 2 and "not both" in proc.stdout + proc.stderr


def test_the_storage_guide_shows_the_example_as_it_is():
    guide = (Path(__file__).resolve().parents[1] / "docs" / "storage.md").read_text()
    for name in ("selfiescope_blobstore/__init__.py", "pyproject.toml"):
        assert (EXAMPLE / name).read_text() in guide, f"docs/storage.md no longer shows {name}"
