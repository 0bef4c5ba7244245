"""The train pipeline (``kind = "train"``): feature table -> grouped CV -> final LightGBM fit -> artifacts.

Cross-validation is stratified and grouped by what leaks (:mod:`.leak_groups`: person,
post, owner, near copy), so one person's photos never sit on both sides of a split. Each fold stops early on an inner,
likewise grouped, validation split; class imbalance is handled with
``scale_pos_weight``. The final model is fit on everything with the median best
iteration of the folds. A one-feature baseline (logistic regression on the face's area
share) is scored on the same folds so the report shows what the other features add, and
so are the confounder baselines (image size, file format: :mod:`.assessment`), which
warn when the classes can be told apart by camera or file alone. The probabilities are
calibrated on the out-of-fold predictions (:mod:`.calibration`); ``normalize = true``
crops every image to a square around the face at one level of detail, size and JPEG quality
before features (:mod:`.normalize`) and reports the un-normalized figures beside them; the
frame counterfactual (:mod:`.counterfactual`) checks whether the final model's answer follows
the aspect ratio or the pixel size. MODEL.md (:mod:`.model_card`) sums it all up.

:func:`fit_model` is the only place that knows the estimator; another engine can pass
its own ``fit`` to :func:`cross_validate`.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ...core.compute import load_target
from ...core.app import App
from ...core.settings import Settings, SettingsError, TrainPipeline
from ...core.checks import check_components, train_pipeline_problems
from .assessment import assess, summary_fields
from .dataset import DatasetError, FeatureTable, Progress, build_feature_table, extractor_options, require_dataset
from .artifacts import prepare_model_dir, write_artifacts
from .model_card import dataset_facts
from ..dataset_care.stored import StoredReader
from .leak_groups import describe as describe_grouping, fallback_warning

log = logging.getLogger("selfiescope.train")

SCHEMA_FORMAT = 1
MIN_PER_LABEL = 4


def default_params(seed: int) -> dict[str, Any]:
    """LightGBM settings for small tabular data (hundreds to thousands of photos)."""
    return {
        "objective": "binary", "learning_rate": 0.05, "n_estimators": 1000, "num_leaves": 15,
        "min_child_samples": 5, "colsample_bytree": 0.8, "subsample": 0.8, "subsample_freq": 1,
        "reg_lambda": 1.0, "random_state": seed, "n_jobs": os.cpu_count() or 1, "verbose": -1,
    }


ROUND_ALIASES = ("num_iterations", "num_iteration", "n_iter", "num_tree", "num_trees", "num_round",
                 "num_rounds", "num_boost_round")


SMALL_ROWS = 5_000


def training_params(pipeline: TrainPipeline, n_rows: int) -> dict[str, Any]:
    """Defaults overridden by ``[pipelines.NAME] params``; the number of rounds is always ``n_estimators``.

    Below SMALL_ROWS rows one thread is the default: a boosting round is then too small
    to pay for thread synchronisation (it cost more CPU and, on a busy machine, more time).
    """
    params = {**default_params(pipeline.seed), **pipeline.params}
    if n_rows < SMALL_ROWS and not {"n_jobs", "num_threads", "num_thread", "nthread", "nthreads"} & set(pipeline.params):
        params["n_jobs"] = 1
    for alias in ROUND_ALIASES:
        if alias in params:
            params["n_estimators"] = params.pop(alias)
    return params


def lightgbm() -> Any:
    """Import LightGBM with OpenMP told to sleep, not spin, while it waits: on a machine
    shared with other work, spinning threads made 2-thread training 10-40x slower than
    1 thread (benchmarks/bench_train.py); sleeping, 2 threads are ~2x faster."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import lightgbm as lgb

    return lgb


def _balance(params: dict[str, Any], y: np.ndarray) -> dict[str, Any]:
    if "is_unbalance" in params or "scale_pos_weight" in params or "class_weight" in params:
        return params
    pos = int(y.sum())
    return {**params, "scale_pos_weight": (len(y) - pos) / pos if pos else 1.0}


@dataclass
class Fitted:
    model: Any  # a lightgbm.Booster, or an estimator with ``booster_`` (LGBMClassifier, DaskLGBMClassifier)
    best_iteration: int

    @property
    def booster(self) -> Any:
        return getattr(self.model, "booster_", self.model)


def fit_model(
    X: np.ndarray, y: np.ndarray, params: dict[str, Any], *, columns: list[str],
    X_valid: np.ndarray | None = None, y_valid: np.ndarray | None = None, early_stopping_rounds: int = 50,
) -> Fitted:
    """Fit one LightGBM booster; with a validation set, stop early on its log-loss."""
    lgb = lightgbm()

    params = _balance(dict(params), y)
    rounds = int(params.pop("n_estimators", params.pop("num_iterations", 1000)))
    names = [c.replace(" ", "_") for c in columns]
    train_set = lgb.Dataset(X, label=y, feature_name=names, free_raw_data=False)
    kwargs: dict[str, Any] = {}
    if X_valid is not None and y_valid is not None and len(np.unique(y_valid)) == 2:
        kwargs["valid_sets"] = [lgb.Dataset(X_valid, label=y_valid, reference=train_set)]
        kwargs["callbacks"] = [lgb.early_stopping(early_stopping_rounds, verbose=False)]
        params.setdefault("metric", "binary_logloss")
    booster = lgb.train(params, train_set, num_boost_round=rounds, **kwargs)
    return Fitted(booster, int(booster.best_iteration or booster.current_iteration()))


def predict_proba(fitted: Fitted, X: np.ndarray) -> np.ndarray:
    return np.asarray(fitted.booster.predict(X, num_iteration=fitted.best_iteration))


def cv_splits(y: np.ndarray, groups: np.ndarray, folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    from sklearn.model_selection import StratifiedGroupKFold

    per_class = min(len(np.unique(groups[y == c])) for c in (0, 1))
    folds = min(folds, per_class)
    if folds < 2:
        raise DatasetError("too few distinct photos per label for cross-validation (need at least 2 each)")
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    return list(splitter.split(np.zeros(len(y)), y, groups))


def inner_split(y: np.ndarray, groups: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray] | None:
    """A grouped ~20 % validation split of a training fold, for early stopping (None when too small)."""
    from sklearn.model_selection import StratifiedGroupKFold

    per_class = min((len(np.unique(groups[y == c])) for c in (0, 1)), default=0)
    if per_class < 5 or len(y) < 40:
        return None
    splitter = StratifiedGroupKFold(n_splits=5, shuffle=True, random_state=seed + 1)
    return next(iter(splitter.split(np.zeros(len(y)), y, groups)))


FitFn = Callable[..., Fitted]


@dataclass
class CVResult:
    oof: np.ndarray
    baseline_oof: np.ndarray
    best_iterations: list[int]
    folds: int
    fold_auc: list[float] = field(default_factory=list)
    splits: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)
    assessment: Any = None  # an assessment.Assessment once train() has made one
    final_oof: np.ndarray | None = None  # the final recipe's cross-fitted scores (what calibration sees)


def cross_validate(
    table: FeatureTable, params: dict[str, Any], pipeline: TrainPipeline, fit: FitFn = fit_model,
) -> CVResult:
    X, y, groups = table.X, table.y, table.groups
    oof = np.full(len(y), np.nan)
    baseline = np.full(len(y), np.nan)
    face_area = baseline_feature(table)
    best_iterations, fold_auc = [], []
    splits = cv_splits(y, groups, pipeline.folds, pipeline.seed)
    from sklearn.metrics import roc_auc_score

    for k, (train_idx, test_idx) in enumerate(splits):
        inner = inner_split(y[train_idx], groups[train_idx], pipeline.seed + k)
        if inner is None:
            fitted = fit(X[train_idx], y[train_idx], {**params, "n_estimators": min(params["n_estimators"], 200)},
                         columns=table.columns)
        else:
            fit_idx, val_idx = train_idx[inner[0]], train_idx[inner[1]]
            fitted = fit(X[fit_idx], y[fit_idx], params, columns=table.columns, X_valid=X[val_idx],
                         y_valid=y[val_idx], early_stopping_rounds=pipeline.early_stopping_rounds)
        best_iterations.append(fitted.best_iteration)
        oof[test_idx] = predict_proba(fitted, X[test_idx])
        baseline[test_idx] = fit_baseline(face_area[train_idx], y[train_idx])(face_area[test_idx])
        if len(np.unique(y[test_idx])) == 2:
            fold_auc.append(float(roc_auc_score(y[test_idx], oof[test_idx])))
    return CVResult(oof, baseline, best_iterations, len(splits), fold_auc, splits)


def cross_fit(table: FeatureTable, params: dict[str, Any], splits: list[tuple[np.ndarray, np.ndarray]],
              rounds: int, fit: FitFn = fit_model) -> np.ndarray:
    """Out-of-fold scores of models trained as the final one is (``rounds`` rounds, no early
    stopping), on the same grouped folds: the scores the calibrator must learn to map, since
    the final model's scores are as extreme as these, not as the early-stopped fold models'."""
    out = np.full(len(table.y), np.nan)
    for train_idx, test_idx in splits:
        fitted = fit(table.X[train_idx], table.y[train_idx], {**params, "n_estimators": rounds}, columns=table.columns)
        out[test_idx] = predict_proba(fitted, table.X[test_idx])
    return out


def baseline_feature(table: FeatureTable) -> np.ndarray:
    """The face's share of the image, straight from the face filter (what the seed thresholded on)."""
    return np.array([r.face_area if r.face_area is not None else np.nan for r in table.rows], dtype=np.float64)


def fit_baseline(x: np.ndarray, y: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    from sklearn.linear_model import LogisticRegression

    fill = float(np.nanmedian(x)) if np.isfinite(x).any() else 0.0
    model = LogisticRegression(class_weight="balanced").fit(np.nan_to_num(x, nan=fill)[:, None], y)
    return lambda z: model.predict_proba(np.nan_to_num(z, nan=fill)[:, None])[:, 1]


def score(y: np.ndarray, prob: np.ndarray, threshold: float = 0.5) -> dict[str, Any]:
    from sklearn import metrics

    pred = (prob >= threshold).astype(int)
    both = len(np.unique(y)) == 2
    cm = metrics.confusion_matrix(y, pred, labels=[0, 1])
    return {
        "roc_auc": float(metrics.roc_auc_score(y, prob)) if both else None,
        "average_precision": float(metrics.average_precision_score(y, prob)) if both else None,
        "accuracy": float(metrics.accuracy_score(y, pred)),
        "balanced_accuracy": float(metrics.balanced_accuracy_score(y, pred)),
        "f1": float(metrics.f1_score(y, pred, zero_division=0)),
        "precision": float(metrics.precision_score(y, pred, zero_division=0)),
        "recall": float(metrics.recall_score(y, pred, zero_division=0)),
        "brier": float(metrics.brier_score_loss(y, prob)),
        "log_loss": float(metrics.log_loss(y, np.clip(prob, 1e-6, 1 - 1e-6), labels=[0, 1])),
        "confusion_matrix": cm.tolist(),  # rows: true negative label, true positive label
        "threshold": threshold,
    }


@dataclass
class TrainResult:
    model_dir: Path
    metrics: dict[str, Any]
    table: FeatureTable
    cv: CVResult
    final: Fitted

    def summary(self) -> dict[str, Any]:
        m = self.metrics
        return {
            "model_dir": str(self.model_dir),
            "images": m["dataset"]["images"],
            "per_label": m["dataset"]["per_label"],
            "features_computed": self.table.computed,
            "features_cached": self.table.cached,
            "failed": m["dataset"]["failed"],
            "folds": m["cv"]["folds"],
            "cv_groups": m["dataset"]["groups"],
            "largest_cv_group": m["dataset"].get("largest_group"),
            "grouped_by": m["cv"]["grouped_by"],
            "roc_auc": m["cv"]["lightgbm"]["roc_auc"],
            "accuracy": m["cv"]["lightgbm"]["accuracy"],
            "baseline_roc_auc": m["cv"]["baseline_face_area"]["roc_auc"],
            **summary_fields(m),
            "elapsed_s": m["elapsed_s"],
            "likely_mislabeled": m["dataset"].get("review", {}).get("likely_mislabeled"),
            "warnings": m.get("warnings", []),
        }


def train_pipeline(settings: Settings, pipeline_name: str) -> TrainPipeline:
    p = settings.pipeline(pipeline_name)
    if not isinstance(p, TrainPipeline):
        raise SettingsError([f"pipelines.{pipeline_name}.kind: {p.kind!r} is not a train pipeline"])
    if problems := train_pipeline_problems(pipeline_name, p):
        raise SettingsError(problems)
    return p


# ``[compute] engine`` -> what runs a training elsewhere, by import path: dask_train imports
# this module (it reuses train() with its own runner and fit), never the other way round.
TRAIN_ENGINES: dict[str, str] = {"dask": "selfiescope.pipelines.model.dask_train:train_on_dask"}


def train(
    app: App,
    pipeline_name: str,
    *,
    progress: Progress | None = None,
    runner: Callable[..., None] | None = None,
    fit: FitFn = fit_model,
) -> TrainResult:
    """Build (or reuse) the feature table, cross-validate, fit, and write the artifacts folder.

    ``runner`` (feature tasks) and ``fit`` (the estimator) let another engine do the work;
    ``[compute] engine = "dask"`` sends the whole run to :mod:`.dask_train`.
    """
    settings, registry = app.settings, app.registry
    if settings.compute.engine in TRAIN_ENGINES and runner is None:
        return load_target(TRAIN_ENGINES[settings.compute.engine])(app, pipeline_name, progress=progress)
    started = time.monotonic()
    pipeline = train_pipeline(settings, pipeline_name)
    if problems := check_components(settings, registry):
        raise SettingsError(problems)
    prepare_model_dir(settings, pipeline)
    root = require_dataset(Path(pipeline.dataset_root or settings.storage.root))
    # One reader of the stored images for the whole command: the features, the shape
    # counterfactual and the report's thumbnails all read through the same open backend.
    with StoredReader(app, root) as reader:
        return _train(app, pipeline_name, pipeline, reader, started, progress, runner, fit)


def _train(
    app: App, pipeline_name: str, pipeline: TrainPipeline, reader: StoredReader, started: float,
    progress: Progress | None, runner: Callable[..., None] | None, fit: FitFn,
) -> TrainResult:
    settings = app.settings
    table = build_feature_table(app, pipeline, reader=reader, progress=progress, runner=runner)
    counts = {label: int(sum(r.label == label for r in table.rows)) for label in pipeline.labels}
    if min(counts.values()) < MIN_PER_LABEL:
        from ..dataset_care.class_losses import unusable_note

        raise DatasetError(
            f"need at least {MIN_PER_LABEL} usable images per label, have {counts}"
            + (f" ({len(table.failed)} failed: {next(iter(table.failed.values()))})" if table.failed else "")
            + unusable_note(pipeline, settings, [label for label, n in counts.items() if n < MIN_PER_LABEL])
        )
    params = training_params(pipeline, len(table.y))
    cv = cross_validate(table, params, pipeline, fit=fit)
    threshold = 0.5
    n_final = max(10, int(np.median(cv.best_iterations)))
    cv.final_oof = cross_fit(table, params, cv.splits, n_final, fit)
    cv.assessment = assess(table, cv, list(pipeline.labels), threshold, pipeline.seed, score, pipeline.normalize,
                           pipeline.folds)
    if grouping_warning := fallback_warning(table.grouping):
        cv.assessment.warnings.append(grouping_warning)
    final = fit(table.X, table.y, {**params, "n_estimators": n_final}, columns=table.columns)
    metrics = {
        "pipeline": pipeline_name,
        "labels": {"positive": pipeline.labels[0], "negative": pipeline.labels[1]},
        "dataset": {
            "images": len(table.rows), "per_label": counts, "groups": int(len(np.unique(table.groups))),
            "largest_group": int(np.unique(table.groups, return_counts=True)[1].max()), "grouping": table.grouping,
            "failed": len(table.failed), "failed_examples": dict(list(table.failed.items())[:20]),
            "features_computed": table.computed, "features_cached": table.cached,
        },
        "cv": {
            "folds": cv.folds, "grouped_by": describe_grouping(table.grouping) if table.grouping
            else f"pHash distance <= {pipeline.group_distance}",
            "lightgbm": score(table.y, cv.oof, threshold),
            "baseline_face_area": score(table.y, cv.baseline_oof, threshold),
            "fold_roc_auc": cv.fold_auc, "best_iterations": cv.best_iterations,
            "final_recipe": score(table.y, cv.final_oof, threshold),  # final rounds, uncalibrated, cross-fitted
            **cv.assessment.metrics,
        },
        "final": {"n_estimators": n_final, "features": len(table.columns)},
        "warnings": cv.assessment.warnings,
        "elapsed_s": None,
    }
    metrics["dataset"].update(dataset_facts(table, pipeline, settings))
    from .counterfactual import flip_warnings, shape_flips

    metrics["counterfactual"] = shape_flips(app, pipeline, table, reader, lambda x: predict_proba(final, x), threshold)
    metrics["warnings"] += flip_warnings(metrics["counterfactual"])
    from ..dataset_care.class_losses import loss_warnings

    metrics["warnings"] += loss_warnings(metrics["dataset"].get("class_dependent_losses", []), settings)
    calibrated = cv.assessment.calibration.calibrated_oof if cv.assessment else cv.oof
    # cleanlab's view: an image whose out-of-fold probability contradicts its label may be mislabeled
    metrics["dataset"]["review"]["likely_mislabeled"] = int(np.count_nonzero(np.abs(table.y - calibrated) > 0.5))
    if pipeline.normalize:
        from .normalize import Recipe

        metrics["normalize"] = Recipe(pipeline.normalize_side, pipeline.normalize_quality).as_schema()
        metrics["cv"]["without_normalize"] = unnormalized_score(app, pipeline, reader, progress, runner, fit)
    schema = {
        "format": SCHEMA_FORMAT,
        "labels": list(pipeline.labels),
        "positive": pipeline.labels[0],
        "threshold": threshold,
        "columns": table.columns,
        "groups": [
            {"name": e.name, "version": e.version, "options": extractor_options(e), "features": e.feature_names()}
            for e in table.extractors
        ],
        # chosen by capability (Step.provides), names saved; faces only where the training images had them
        "steps": table.predict_steps,
        "calibration": cv.assessment.calibration.calibrator.to_dict(),
        "normalize": metrics.get("normalize"),
    }
    metrics["elapsed_s"] = round(time.monotonic() - started, 2)
    model_dir = write_artifacts(app, pipeline, pipeline_name, table, cv, final, schema, metrics, reader)
    return TrainResult(model_dir, metrics, table, cv, final)


def unnormalized_score(
    app: App, pipeline: TrainPipeline, reader: StoredReader, progress: Progress | None,
    runner: Callable[..., None] | None, fit: FitFn,
) -> dict[str, Any]:
    """With ``normalize = true``: the same cross-validation on the files as stored, for the
    report's side-by-side (:mod:`.normalize` re-encodes; training owns the comparison)."""
    raw = pipeline.model_copy(update={"normalize": False})
    table = build_feature_table(app, raw, reader=reader, progress=progress, runner=runner)
    cv = cross_validate(table, training_params(raw, len(table.y)), raw, fit=fit)
    return score(table.y, cv.oof)
