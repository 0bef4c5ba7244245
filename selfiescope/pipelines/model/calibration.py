"""Calibrated probabilities: map the final model's scores to observed frequencies, or leave them.

LightGBM trained with ``scale_pos_weight`` ranks photos well but its probabilities are not
frequencies. What is calibrated is the final predictor itself: the calibrator is fit on
the final recipe's own cross-fitted scores (each photo scored by a model trained the way
the final one is, with its number of rounds, on the folds that leave the photo's group
out), never on the early-stopped fold models, whose scores are less extreme than the final
model's. Three candidates: "none" (the scores as they are), Platt scaling (a logistic
curve on the score's logit) and isotonic regression, each scored by the Brier score of
its own nested out-of-fold calibrated predictions over the CV groups. Choosing among
three on the same data flatters the winner, so a calibrator replaces "none" only when it
beats it by more than two standard errors of the Brier difference, whole CV groups taken
as the units (one standard error still let a calibrator through that made new photos
worse, on data where the folds disagree: tests/test_calibration_final.py); otherwise
the scores are left alone. The choice is refit on all the cross-fitted
scores and saved in ``schema.json`` (plain numbers, no pickle); the nested calibrated
predictions are what the report's "after" figures and reliability curve describe.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

EPS = 1e-6
METHODS = ("none", "platt", "isotonic")
SE_PENALTY = 2.0  # standard errors a calibrator must beat "none" by: ~97.5 % one-sided, for picking 1 of 2


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

    @property
    def name(self) -> str:
        """The method as users read it: "none" for the identity."""
        return "none" if self.method == "identity" else self.method

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
    if method == "none" or len(np.unique(y)) < 2:
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
    scores: np.ndarray | None = None  # what was calibrated: the final recipe's cross-fitted scores
    penalty: float = 0.0  # the margin a calibrator had to beat "none" by (SE_PENALTY standard errors)

    @property
    def method(self) -> str:
        return self.calibrator.name

    def summary(self) -> dict[str, Any]:
        return {"method": self.method, "brier_before": self.brier_before, "brier_after": self.brier_after,
                "brier_by_method": self.brier_by_method, "candidates": list(METHODS),
                "selection_penalty": self.penalty,
                "chosen_by": "grouped nested cross-validation on the final model's cross-fitted scores; a calibrator"
                             " replaces none only when its Brier score is lower by more than two standard errors"}


def _group_brier_se(a: np.ndarray, b: np.ndarray, y: np.ndarray, groups: np.ndarray) -> float:
    """Standard error of the mean Brier difference ``a - b`` when whole groups are the units."""
    diff = (a - y) ** 2 - (b - y) ** 2
    ids, inverse = np.unique(groups, return_inverse=True)
    if len(ids) < 2:
        return float("inf")
    per_group = np.bincount(inverse, weights=diff, minlength=len(ids))  # each group's share of the total
    return float(np.std(per_group * len(ids) / len(y), ddof=1) / np.sqrt(len(ids)))


def calibrate(scores: np.ndarray, y: np.ndarray, groups: np.ndarray, seed: int = 0) -> CalibrationResult:
    """Choose none, Platt or isotonic for ``scores`` (the final recipe's cross-fitted scores)
    by grouped nested CV with the SE_PENALTY margin, and fit the choice on all of them."""
    scores = np.asarray(scores, dtype=np.float64)
    brier_before = float(np.mean((scores - y) ** 2))
    splits = _splits(y, groups, seed)
    if not splits:
        return CalibrationResult(Calibrator("identity"), scores.copy(), brier_before, brier_before, {}, scores)
    nested: dict[str, np.ndarray] = {}
    for method in METHODS:
        out = np.full(len(y), np.nan)
        for train_idx, test_idx in splits:
            out[test_idx] = fit_calibrator(method, scores[train_idx], y[train_idx])(scores[test_idx])
        nested[method] = out
    brier = {m: float(np.mean((p - y) ** 2)) for m, p in nested.items()}
    best = min(brier, key=brier.__getitem__)
    penalty = 0.0 if best == "none" else SE_PENALTY * _group_brier_se(nested[best], nested["none"], y, groups)
    if best != "none" and brier["none"] - brier[best] <= penalty:
        best = "none"
    return CalibrationResult(fit_calibrator(best, scores, y), nested[best], brier_before, brier[best], brier, scores,
                             penalty)
