"""Rejections that depend on the class are flagged; unusable images name the setting that decided."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from selfiescope.core.app import App
from selfiescope.core.manifest import Manifest
from selfiescope.pipelines.dataset_care.card import build_card, render_markdown
from selfiescope.pipelines.dataset_care.class_losses import class_dependent_losses, rejections_by_label, why_unusable

from privacy_helpers import import_folder, settings_for


def _photos(folder: Path, sizes: list[int], seed: int) -> None:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for i, side in enumerate(sizes):
        Image.fromarray(rng.integers(0, 255, (side, side + 7, 3), dtype=np.uint8)).save(folder / f"p{i}.png")


def test_a_rejection_that_hits_one_label_is_flagged_on_the_card(tmp_path: Path) -> None:
    root = tmp_path / "data"
    settings = settings_for(root)
    _photos(tmp_path / "a", [96] * 8 + [40], 1)  # one tiny photo of nine
    _photos(tmp_path / "b", [96] * 4 + [40] * 6, 2)  # six of ten
    import_folder(settings, tmp_path / "a", "selfie")
    import_folder(settings, tmp_path / "b", "portrait")
    manifest = Manifest.at_root(root)
    try:
        by_label = rejections_by_label(manifest)
        card = build_card(App.create(settings), manifest)
    finally:
        manifest.close()
    assert by_label["portrait"]["reasons"] == {"too_small": 6} and by_label["selfie"]["reasons"] == {"too_small": 1}
    losses = card["rejections"]["class_dependent"]
    assert [loss["reason"] for loss in losses] == ["too_small"]
    assert losses[0]["rates"] == {"selfie": round(1 / 9, 4), "portrait": 0.6}
    text = render_markdown(card)
    assert "class-dependent loss" in text and any("too_small" in b and "min_side" in b for b in card["known_biases"])
    assert why_unusable(by_label, "portrait", settings) == "6 rejected too_small ([plugins.decode] min_side = 64)"


def test_equal_rates_and_small_counts_are_not_flagged() -> None:
    def entry(seen: int, **reasons: int) -> dict:
        return {"seen": seen, "accepted": seen - sum(reasons.values()), "reasons": reasons}

    assert class_dependent_losses({"a": entry(100, no_face=20), "b": entry(50, no_face=11)}) == []
    assert class_dependent_losses({"a": entry(100, no_face=1), "b": entry(10, no_face=3)}) == []  # 4 photos: noise
    flagged = class_dependent_losses({"a": entry(100, location_metadata=13), "b": entry(100, location_metadata=53)})
    assert flagged and flagged[0]["reason"] == "location_metadata"


def test_train_short_of_images_says_which_setting_rejected_them(tmp_path: Path) -> None:
    import pytest

    from selfiescope.pipelines.model.dataset import DatasetError
    from selfiescope.pipelines.model.train import train
    from train_helpers import train_settings

    root = tmp_path / "data"
    _photos(tmp_path / "a", [96] * 6, 3)
    _photos(tmp_path / "b", [96] * 2 + [40] * 5, 4)
    import_folder(settings_for(root), tmp_path / "a", "selfie")
    import_folder(settings_for(root), tmp_path / "b", "portrait")
    with pytest.raises(DatasetError) as caught:
        train(App.create(train_settings(root, tmp_path / "m", ["image"])), "t")
    assert "portrait: 5 rejected too_small ([plugins.decode] min_side = 64)" in str(caught.value)
    assert "selfie:" not in str(caught.value)  # a label with enough images needs no excuse
