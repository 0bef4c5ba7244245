"""The fsspec backend against a real S3 API (moto's server on 127.0.0.1, s3fs as the client):
import -> dedup -> train -> predict with every image only in the bucket."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("s3fs")
pytest.importorskip("moto.server")

from s3_helpers import moto_s3  # noqa: E402
from train_helpers import write_pictures  # noqa: E402

from selfiescope.core.app import App
from selfiescope.core.settings import ScrapePipeline, settings_from_dict  # noqa: E402
from selfiescope.pipelines.collecting.collect import collect  # noqa: E402
from selfiescope.pipelines.model.predict import load_model  # noqa: E402
from selfiescope.pipelines.model.train import train  # noqa: E402

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".bin"}
CHAIN = ["decode", "face_area", "dedup", "store"]


@pytest.fixture(scope="module")
def s3():
    with pytest.MonkeyPatch.context() as mp, moto_s3(mp) as server:
        yield server


def settings_for(root: Path, s3, model_dir: Path, **train_extra):
    return settings_from_dict({
        "storage": {"root": str(root), "backend": "fsspec"},
        "plugins": {"fsspec": s3.options("dataset")},
        "pipelines": {"t": {"kind": "train", "labels": ["selfie", "portrait"], "features": ["geometry", "image"],
                            "model_dir": str(model_dir), "folds": 3, "workers": 1, **train_extra}},
    })


def local_images(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]


@pytest.fixture(scope="module")
def imported(s3, tmp_path_factory):
    base = tmp_path_factory.mktemp("s3run")
    root = base / "root"
    settings = settings_for(root, s3, base / "model")
    for label, seed in (("selfie", 11), ("portrait", 12)):
        folder = base / "in" / label
        files = write_pictures(folder, label, 30, seed=seed)
        shutil.copyfile(files[0], folder / "zz_exact_copy.jpg")  # dedup must reject it
        pipeline = ScrapePipeline(kind="import", source="folder", paths=[folder], label=label, chain=CHAIN)
        stats = asyncio.run(collect(App.create(settings), "import", pipeline=pipeline))
        assert stats.accepted >= 8 and not stats.errors and not stats.failed, stats.as_dict()  # synthetic: many near-duplicates
        reasons = stats.rejected_by_reason  # the copy is a duplicate of its original, or both near-duplicates of a third
        assert reasons.get("duplicate", 0) + reasons.get("near_duplicate", 0) >= 1, stats.as_dict()
    return base, root, settings


def test_import_puts_every_image_in_the_bucket_and_none_under_the_root(s3, imported):
    _, root, _ = imported
    keys = s3.keys("dataset")
    import sqlite3

    db = sqlite3.connect(root / "manifest.sqlite")
    stored = db.execute("SELECT label, location, notes FROM images WHERE decision='accepted'").fetchall()
    db.close()
    assert stored and len(keys) == len(stored)
    assert {f"{s3.bucket}/dataset/{loc}" for _, loc, _ in stored} == set(keys)
    assert all(loc.startswith(f"{label}/") for label, loc, _ in stored)
    assert local_images(root) == []  # the manifest is local, the images are not
    notes = [json.loads(n) for _, _, n in stored if n]
    assert notes and all("face_detector" in n for n in notes)  # accepted images' notes are saved


def test_train_and_predict_read_only_from_the_bucket(s3, imported):
    base, root, settings = imported
    result = train(App.create(settings), "t")
    assert not result.table.failed and result.table.computed == len(result.table.rows) >= 16
    assert local_images(root) == []
    html = (result.model_dir / "report.html").read_text()
    assert "data:image/jpeg;base64," in html  # the report's examples were read through the backend
    assert "image missing" not in html
    model = load_model(result.model_dir)
    predictions = model.predict_stored()
    assert len(predictions) == len(result.table.rows) and all(p.status == "ok" for p in predictions)
    by_location = {p.path: p for p in predictions}
    rows = result.table.rows[:5]
    expected = result.final.booster.predict(result.table.X[:5], num_iteration=result.final.best_iteration)
    np.testing.assert_allclose([by_location[r.location].raw_probability for r in rows], expected, rtol=1e-9)
    # the second training reads nothing: every feature and header fact is cached in the local manifest
    again = train(App.create(settings_for(root, s3, base / "model2", report=False)), "t")
    assert again.table.computed == 0 and again.table.cached == len(again.table.rows)


def test_forget_deletes_from_the_bucket(s3, imported):
    """`selfiescope forget --image ID` through the fsspec backend: the object goes, and a second
    delete of it (an interrupted forget resumed) is not an error."""
    import sqlite3

    from selfiescope.core.components import StoredImage
    from selfiescope.core.context import RunContext
    from selfiescope.core.manifest import Manifest
    from selfiescope.core.plugins import build_registry
    from selfiescope.pipelines.dataset_care.forget import ForgetRequest, forget

    _, root, settings = imported
    db = sqlite3.connect(root / "manifest.sqlite")
    image_id, label, location = db.execute(
        "SELECT id, label, location FROM images WHERE decision='accepted' AND label='portrait' LIMIT 1").fetchone()
    db.close()
    key = f"{s3.bucket}/dataset/{location}"
    assert key in s3.keys("dataset")
    result = asyncio.run(forget(App.create(settings), ForgetRequest(images=[image_id])))
    assert result.removed_anything and key not in s3.keys("dataset")
    manifest = Manifest(":memory:")
    storage = App.create(settings).run_context("t", None, manifest).component("storage", "fsspec")

    async def again() -> bool:
        await storage.open()
        return await storage.delete(StoredImage(image_id, label, location))

    assert asyncio.run(again()) is False
    manifest.close()
