"""Calibrated probabilities: map the booster's scores to observed frequencies.

LightGBM trained with ``scale_pos_weight`` ranks photos well but its probabilities are not
frequencies. The calibrator is fit on the out-of-fold predictions (photos the scoring
model never saw), so it learns how the model errs on new photos. Platt scaling (a
logistic curve on the score's logit) and isotonic regression are both tried, each scored
by the Brier score of its own out-of-fold calibrated predictions over near-duplicate
groups; the better one is refit on all the out-of-fold predictions and saved in
``schema.json`` (plain numbers, no pickle). Those nested out-of-fold calibrated
predictions are also what the report's "after" figures describe.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

EPS = 1e-6
METHODS = ("platt", "isotonic")


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), EPS, 1 - EPS)
    return np.log(p / (1 - p))


@dataclass
class Calibrator:
    """``method`` "platt" (``a``, ``b``: sigmoid(a * logit(p) + b)), "isotonic" (``x``, ``y``:
    a monotone step curve, linearly interpolated) or "identity"."""

    method: str
    a: float = 1.0
    b: float = 0.0
    x: list[float] = field(default_factory=list)
    y: list[float] = field(default_factory=list)

    def __call__(self, prob: np.ndarray) -> np.ndarray:
        prob = np.asarray(prob, dtype=np.float64)
        if self.method == "platt":
            return 1.0 / (1.0 + np.exp(-(self.a * _logit(prob) + self.b)))
        if self.method == "isotonic":
            return np.interp(prob, self.x, self.y)
        return prob

    def to_dict(self) -> dict[str, Any]:
        if self.method == "platt":
            return {"method": "platt", "a": self.a, "b": self.b}
        if self.method == "isotonic":
            return {"method": "isotonic", "x": self.x, "y": self.y}
        return {"method": "identity"}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> "Calibrator":
        if not data:
            return cls("identity")
        method = data.get("method")
        if method == "platt":
            return cls("platt", a=float(data["a"]), b=float(data["b"]))
        if method == "isotonic":
            x, y = [float(v) for v in data["x"]], [float(v) for v in data["y"]]
            if len(x) != len(y) or not x:
                raise ValueError("isotonic calibration needs matching, non-empty x and y")
            return cls("isotonic", x=x, y=y)
        if method == "identity":
            return cls("identity")
        raise ValueError(f"unknown calibration method {method!r}")


def fit_calibrator(method: str, prob: np.ndarray, y: np.ndarray) -> Calibrator:
    if len(np.unique(y)) < 2:
        return Calibrator("identity")
    if method == "platt":
        from sklearn.linear_model import LogisticRegression

        lr = LogisticRegression(C=1e4).fit(_logit(prob)[:, None], y)
        return Calibrator("platt", a=float(lr.coef_[0, 0]), b=float(lr.intercept_[0]))
    if method == "isotonic":
        from sklearn.isotonic import IsotonicRegression

        iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(prob, y)
        return Calibrator("isotonic", x=iso.X_thresholds_.tolist(), y=iso.y_thresholds_.tolist())
    raise ValueError(f"unknown calibration method {method!r}")


def _splits(y: np.ndarray, groups: np.ndarray, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    from sklearn.model_selection import StratifiedGroupKFold

    per_class = min(len(np.unique(groups[y == c])) for c in (0, 1))
    folds = min(5, per_class)
    if folds < 2:
        return []
    return list(StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed).split(np.zeros(len(y)), y, groups))


@dataclass
class CalibrationResult:
    calibrator: Calibrator
    calibrated_oof: np.ndarray  # nested out-of-fold: each photo calibrated by a calibrator that never saw it
    brier_before: float
    brier_after: float
    brier_by_method: dict[str, float]

    def summary(self) -> dict[str, Any]:
        return {"method": self.calibrator.method, "brier_before": self.brier_before, "brier_after": self.brier_after,
                "brier_by_method": self.brier_by_method, "chosen_by": "grouped cross-validation on out-of-fold predictions"}


def calibrate(oof: np.ndarray, y: np.ndarray, groups: np.ndarray, seed: int = 0) -> CalibrationResult:
    """Choose Platt or isotonic by grouped CV on the out-of-fold predictions, fit it on all."""
    brier_before = float(np.mean((oof - y) ** 2))
    splits = _splits(y, groups, seed)
    if not splits:
        return CalibrationResult(Calibrator("identity"), oof.copy(), brier_before, brier_before, {})
    nested: dict[str, np.ndarray] = {}
    for method in METHODS:
        out = np.full(len(y), np.nan)
        for train_idx, test_idx in splits:
            out[test_idx] = fit_calibrator(method, oof[train_idx], y[train_idx])(oof[test_idx])
        nested[method] = out
    brier = {m: float(np.mean((p - y) ** 2)) for m, p in nested.items()}
    best = min(brier, key=brier.__getitem__)
    return CalibrationResult(fit_calibrator(best, oof, y), nested[best], brier_before, brier[best], brier)
