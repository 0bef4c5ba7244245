"""How far the cross-validated figures can be trusted: baselines, intervals, calibration, sources.

:func:`assess` takes the feature table and the model's out-of-fold predictions and adds,
on the same grouped folds: the confounder baselines (:mod:`.baselines`), bootstrap
intervals over the CV groups (those :mod:`.leak_groups` made) for every AUC, the calibrator
(:mod:`.calibration`), metrics per source job, and the plain-language warnings the
report, the model card and the CLI show.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from .baselines import (CONFOUNDERS, baseline_oof, bootstrap_auc_ci, confounder_matrices, confounder_warnings,
                        per_source, size_signal)
from .calibration import CalibrationResult, calibrate
from .leak_groups import links_text

if TYPE_CHECKING:  # pragma: no cover
    from .dataset import FeatureTable
    from .train import CVResult

# Fewer independent groups than this in a label: every figure rests on too few units to say much,
# and a bootstrap over them gives an interval that only looks precise (none is given).
MIN_GROUPS_PER_LABEL = 5
BASELINE_TITLES = {"face_area": "face area only", **{k: f"{v} only" for k, v in CONFOUNDERS.items()}}


@dataclass
class Assessment:
    baselines: dict[str, np.ndarray]  # name -> out-of-fold probabilities (face_area included)
    calibration: CalibrationResult
    metrics: dict[str, Any]
    warnings: list[str] = field(default_factory=list)


def few_groups_warning(y: np.ndarray, groups: np.ndarray, labels: list[str], folds_asked: int,
                       folds_used: int) -> str | None:
    """A warning when a label has fewer than :data:`MIN_GROUPS_PER_LABEL` CV groups, or the
    groups allowed fewer folds than asked for (None otherwise)."""
    per_label = [len(np.unique(groups[y == c])) for c in (1, 0)]
    if min(per_label) >= MIN_GROUPS_PER_LABEL and folds_used >= folds_asked:
        return None
    largest = int(np.unique(groups, return_counts=True)[1].max()) if len(groups) else 0
    folds = (f"; only {folds_used} of the {folds_asked} folds asked for could be made"
             if folds_used < folds_asked else "")
    return (f"Cross-validation rests on few independent groups: {labels[0]} {per_label[0]}, {labels[1]} "
            f"{per_label[1]} (the largest holds {largest} of {len(y)} photos){folds}. Photos linked by person, post, "
            f"owner or near copy share a group, and with so few of them every figure here, the baselines' too, says "
            f"little"
            + (" and no confidence interval is given" if min(per_label) < MIN_GROUPS_PER_LABEL else "")
            + ": collect photos of more people and sources, or check that near copies do not chain unrelated "
              "photos ([pipelines.NAME] group_distance).")


def assess(table: "FeatureTable", cv: "CVResult", labels: list[str], threshold: float, seed: int,
           score: Any, normalized: bool = False, folds_asked: int | None = None) -> Assessment:
    """``score(y, prob, threshold)`` is the metric function the model itself is scored with."""
    y, groups = table.y, table.groups
    few = len(np.unique(y)) < 2 or min(len(np.unique(groups[y == c])) for c in (0, 1)) < MIN_GROUPS_PER_LABEL
    matrices = confounder_matrices(table.facts)
    probs = {"face_area": cv.baseline_oof, **baseline_oof(matrices, y, cv.splits)}
    calibration = calibrate(cv.oof if cv.final_oof is None else cv.final_oof, y, groups, seed)
    scored = {name: score(y, p, threshold) for name, p in probs.items()}
    scored["image_size"]["carried_by"] = size_signal(matrices["image_size"], y, cv.splits)  # aspect or pixels
    model_auc = score(y, cv.oof, threshold)["roc_auc"]
    curves = {"lightgbm": cv.oof, "lightgbm_calibrated": calibration.calibrated_oof, **probs}
    intervals = {}
    for name, prob in curves.items():
        ci = None if few else bootstrap_auc_ci(y, prob, groups, seed=seed)
        intervals[name] = list(ci) if ci else None
    warnings = confounder_warnings(model_auc, scored, normalized)
    if len(np.unique(y)) == 2 and (text := few_groups_warning(y, groups, labels, folds_asked or cv.folds, cv.folds)):
        warnings.append(text)
    jobs = [r.job for r in table.rows]
    metrics = {
        "baselines": scored,
        "lightgbm_calibrated": score(y, calibration.calibrated_oof, threshold),
        "roc_auc_ci95": intervals,
        "ci_method": (f"not computed: fewer than {MIN_GROUPS_PER_LABEL} CV groups in a label" if few else
                      f"percentile bootstrap over the CV groups ({links_text(table.grouping)}), 400 resamples"),
        "calibration": calibration.summary(),
        "per_source": per_source(jobs, labels, y, calibration.calibrated_oof, threshold),
    }
    return Assessment(probs, calibration, metrics, warnings)


def summary_fields(m: dict[str, Any]) -> dict[str, Any]:
    """The honesty figures of ``metrics.json`` that the CLI's summary shows."""
    cv = m["cv"]
    out: dict[str, Any] = {f"baseline_{k}_roc_auc": v["roc_auc"] for k, v in cv.get("baselines", {}).items()
                           if k != "face_area"}
    if "without_normalize" in cv:
        out["roc_auc_without_normalize"] = cv["without_normalize"]["roc_auc"]
    if "calibration" in cv:
        out.update(calibration=cv["calibration"]["method"], brier_before_calibration=cv["calibration"]["brier_before"],
                   brier_after_calibration=cv["calibration"]["brier_after"])
    return out
