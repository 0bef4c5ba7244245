"""Downstream of `selfiescope review`: training uses the reviewed labels and leaves out excluded
images, its metrics and model card count the review, the CLI says how many look mislabeled, and
the review app then reads the new model's out-of-fold probabilities."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from train_helpers import build_dataset, train_settings, write_pictures
from typer.testing import CliRunner

from selfiescope.cli import app
from selfiescope.core.plugins import load_registry
from selfiescope.review.data import Filters, ReviewData

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def reviewed(tmp_path_factory) -> tuple[Path, list[str], list[str]]:
    root = tmp_path_factory.mktemp("review_train")
    files = {"selfie": write_pictures(root / "in" / "selfie", "selfie", 24, seed=1),
             "portrait": write_pictures(root / "in" / "portrait", "portrait", 24, seed=2)}
    build_dataset(root, files)
    settings = train_settings(root, root / "model", ["geometry"], folds=3, report=False)
    with ReviewData(settings, load_registry()) as data:
        selfies = [t.id for t in data.page(Filters(label=("selfie",)), "newest", None, 100).tiles]
        data.apply("relabel", selfies[:3], "portrait")
        data.apply("exclude", selfies[3:5], note="not a photo")
    return root, selfies[:3], selfies[3:5]


def test_training_uses_reviewed_labels_and_counts_the_review(reviewed) -> None:
    root, relabeled, excluded = reviewed
    settings = (root / "settings.toml")
    settings.write_text(f'[storage]\nroot = "{root}"\n[pipelines.t]\nkind = "train"\nfeatures = ["geometry"]\n'
                        f'model_dir = "{root / "model"}"\nfolds = 3\nreport = false\n')
    result = CliRunner().invoke(app, ["train", "--settings", str(settings)])
    assert result.exit_code == 0, result.output
    metrics = json.loads((root / "model" / "metrics.json").read_text())
    review = metrics["dataset"]["review"]
    assert (review["reviewed"], review["relabeled"], review["excluded"]) == (3, 3, 2)
    with (root / "model" / "predictions.csv").open() as fh:
        predictions = {r["content_hash"]: r for r in csv.DictReader(fh)}
    assert all(predictions[h]["label"] == "portrait" for h in relabeled)
    assert not set(excluded) & set(predictions)
    assert metrics["dataset"]["per_label"] == {"selfie": 24 - 5, "portrait": 24 + 3}
    assert "Labels reviewed (`selfiescope review`): 3 of 48 stored images; 3 labels changed, 2 images excluded" in (
        root / "model" / "MODEL.md").read_text()
    mislabeled = review["likely_mislabeled"]
    assert mislabeled >= 1  # the three flipped labels contradict a model that learnt the geometry
    assert f"{mislabeled} training image" in result.output and "selfiescope review" in result.output
    with ReviewData(train_settings(root, root / "model", ["geometry"]), load_registry()) as data:
        assert data.model_note() is None
        assert data.page(Filters(disagrees=True), "mislabeled", None, 100).total == mislabeled
        first = data.page(Filters(), "mislabeled", None, mislabeled).tiles
        assert {t.id for t in first} & set(relabeled)
