"""Calibration calibrates the final predictor, and never makes what `predict` returns worse on new data."""

from __future__ import annotations

import numpy as np
import pytest

from selfiescope.core.settings import TrainPipeline
from selfiescope.pipelines.model.calibration import METHODS, Calibrator, calibrate
from selfiescope.pipelines.model.dataset import DatasetRow, FeatureTable
from selfiescope.pipelines.model.train import cross_fit, cross_validate, fit_model, predict_proba, training_params

COLUMNS = 12


def disagreeing(n_groups: int, per_group: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows in groups (people) that each carry their own offset on the label and their own
    look: a weak signal shared by all, the rest group-specific, so models trained on
    different folds disagree about the groups they have not seen. The offsets cancel out, so
    a new sample has the training sample's base rate (a shift of the base rate is another
    matter, which no calibrator fitted on the training sample can know of)."""
    rng = np.random.default_rng(seed)
    groups = np.repeat(np.arange(n_groups), per_group)
    look = rng.normal(size=(n_groups, COLUMNS))[groups]
    X = look + rng.normal(scale=0.3, size=(len(groups), COLUMNS))
    half = rng.normal(scale=1.5, size=n_groups // 2)
    offset = rng.permutation(np.concatenate([half, -half]))[groups]  # mean zero: the same base rate in every sample
    logit = 0.8 * X[:, 0] + offset
    y = (rng.random(len(groups)) < 1 / (1 + np.exp(-logit))).astype(np.int64)
    return X, y, groups


def table_of(X: np.ndarray, y: np.ndarray, groups: np.ndarray) -> FeatureTable:
    rows = [DatasetRow(str(i), None, "selfie" if y[i] else "portrait", "#t", ".", None, 0.2, 1, None)
            for i in range(len(y))]
    return FeatureTable(X, y, groups, rows, [f"c{i}" for i in range(COLUMNS)])


def brier(p: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean((p - y) ** 2))


@pytest.mark.timeout(900)
@pytest.mark.parametrize("seed", [1, 6, 9])
def test_calibration_never_raises_the_brier_of_what_predict_returns(seed):
    """Train as `train` does (grouped CV, the final recipe cross-fitted, the calibrator chosen
    on it, the final model on everything), then score unseen groups with the final model,
    raw and calibrated: the calibrated one is never worse beyond noise."""
    X, y, groups = disagreeing(60, 8, seed)
    X_new, y_new, _ = disagreeing(300, 8, seed + 100)
    table = table_of(X, y, groups)
    pipeline = TrainPipeline(kind="train", folds=5, seed=seed)
    params = {**training_params(pipeline, len(y)), "n_estimators": 300}
    cv = cross_validate(table, params, pipeline)
    rounds = max(10, int(np.median(cv.best_iterations)))
    scores = cross_fit(table, params, cv.splits, rounds)
    result = calibrate(scores, y, groups, seed)
    final = fit_model(X, y, {**params, "n_estimators": rounds}, columns=table.columns)
    raw = predict_proba(final, X_new)
    calibrated = Calibrator.from_dict(result.calibrator.to_dict())(raw)  # as predict loads it from schema.json
    assert brier(calibrated, y_new) <= brier(raw, y_new) + 0.002, result.summary()


def test_none_is_a_candidate_and_wins_on_calibrated_scores():
    """Scores that already are frequencies: no calibrator beats them by more than noise."""
    rng = np.random.default_rng(5)
    p = rng.random(600)
    y = (rng.random(600) < p).astype(np.int64)
    result = calibrate(p, y, np.arange(600), seed=0)
    assert "none" in METHODS and set(result.brier_by_method) == set(METHODS)
    assert result.method == "none" and np.array_equal(result.calibrator(p), p)
    assert result.summary()["method"] == "none"


def test_a_calibrator_is_chosen_when_it_clearly_helps():
    rng = np.random.default_rng(6)
    p = rng.random(800)
    y = (rng.random(800) < p).astype(np.int64)
    squashed = 0.5 + (p - 0.5) * 0.3  # far too timid: a calibrator must stretch it
    result = calibrate(squashed, y, np.arange(800), seed=0)
    assert result.method in ("platt", "isotonic")
    assert result.brier_after < result.brier_before
