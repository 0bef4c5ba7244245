"""Training and prediction never end in a raw error or a reason that names no setting."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings as hsettings, strategies as st

from selfiescope.pipelines.model.baselines import FILE_COLUMNS, _auc, baseline_oof


def _splits(n: int, folds: int = 4) -> list[tuple[np.ndarray, np.ndarray]]:
    idx = np.arange(n)
    return [(idx[idx % folds != k], idx[idx % folds == k]) for k in range(folds)]


@hsettings(max_examples=5, deadline=None)
@given(
    fill=st.lists(st.sampled_from(["nan", "const", "varied"]), min_size=len(FILE_COLUMNS), max_size=len(FILE_COLUMNS)),
    n=st.integers(8, 40),
)
def test_file_baseline_fits_whatever_columns_say_nothing(fill: list[str], n: int) -> None:
    """A dataset with no JPEG gives all-NaN JPEG columns; one format gives a constant column."""
    rng = np.random.default_rng(n)
    y = np.arange(n) % 2
    columns = [np.full(n, np.nan) if f == "nan" else np.full(n, 1.0) if f == "const" else rng.normal(size=n) for f in fill]
    out = baseline_oof({"file_format": np.column_stack(columns)}, y, _splits(n))
    prob = out["file_format"]
    assert np.all(np.isfinite(prob)) and np.all((prob >= 0) & (prob <= 1))
    if "varied" not in fill and fill.count("const") == len(fill) - fill.count("nan"):
        assert _auc(y, prob) == 0.5  # nothing to learn from: ties everything


def test_file_baseline_still_sees_a_real_difference() -> None:
    y = np.arange(40) % 2
    x = np.column_stack([np.where(y == 1, 0.0, 1.0), np.full(40, np.nan), np.full(40, np.nan), np.full(40, np.nan)])
    assert _auc(y, baseline_oof({"file_format": x}, y, _splits(40))["file_format"]) > 0.9


def test_size_and_face_rejections_name_their_setting() -> None:
    import io

    from PIL import Image

    from selfiescope.api import Reject
    from selfiescope.plugins.decode import decode_image

    buf = io.BytesIO()
    Image.new("RGB", (40, 40), "grey").save(buf, "PNG")
    with pytest.raises(Reject, match=r"\[plugins\.decode\] min_side"):
        decode_image(buf.getvalue())


def test_a_model_trained_without_a_face_step_predicts_faceless_pictures(tmp_path) -> None:
    from PIL import Image

    from privacy_helpers import import_pictures
    from selfiescope.core.app import App
    from selfiescope.pipelines.model.predict import load_model
    from selfiescope.pipelines.model.train import train
    from train_helpers import train_settings

    root = tmp_path / "data"
    rng = np.random.default_rng(0)
    import_pictures(root, tmp_path, {label: [rng.integers(0, 255, (96, w + i, 3), dtype=np.uint8) for i in range(8)]
                                     for label, w in {"selfie": 96, "portrait": 160}.items()})
    result = train(App.create(train_settings(root, tmp_path / "m", ["image"], folds=2)), "t")
    shown = tmp_path / "new.png"
    Image.fromarray(rng.integers(0, 255, (96, 150, 3), dtype=np.uint8)).save(shown)
    (prediction,) = load_model(result.model_dir).predict([shown])
    assert prediction.status == "ok", prediction
    assert "face_area" not in load_model(result.model_dir).steps
