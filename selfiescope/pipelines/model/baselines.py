"""Confounder baselines: how well do the camera and the file alone tell the classes apart?

When each label comes from its own source (one hashtag, one dataset, one phone), a
classifier can separate the classes by image size, aspect ratio or compression instead
of by what the photo shows. Each baseline here is a small model on such a property,
scored on the same grouped folds as the real model; when one comes within
:data:`WARN_MARGIN` AUC of the model, the model's figures say little about selfie-ness
and the report and the CLI say so.

- ``face_area``: logistic regression on the largest face's share of the image (the
  original method's criterion; content, not a confounder, but the bar to beat).
- ``image_size``: width, height, aspect ratio and pixel count, from the file's header.
- ``file_format``: container format, JPEG quality (estimated from the quantisation
  tables), chroma subsampling, progressive encoding and which metadata blocks the file
  carries (EXIF, ICC profile, XMP: an editor's re-save or a site's upload drops them,
  so one source can have them and another not). Not bytes per pixel: how well a
  picture compresses depends on what it shows (a face at the edge or in the middle of a
  synthetic scene was enough to give it AUC 0.87), so it would measure content too.

Also here: bootstrap confidence intervals over the CV groups and per-source
(hashtag / job) metrics.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from .normalize import DETAIL

WARN_MARGIN = 0.05  # a confounder baseline this close to the model's AUC triggers the warning
WARN_MIN_AUC = 0.65  # ...and only when it beats chance clearly (both near 0.5 means nothing)
CONFOUNDERS = {"image_size": "image size / aspect ratio", "file_format": "file format / JPEG quality / metadata"}
FORMATS = {"JPEG": 0, "PNG": 1, "WEBP": 2, "GIF": 3, "BMP": 4, "TIFF": 5, "MPO": 0}


@lru_cache(maxsize=1)
def _reference_tables() -> np.ndarray:
    """Luminance quantisation table (as Pillow reports it) of libjpeg's standard tables at
    quality 1..100, made by Pillow itself so the coefficient order always matches."""
    from PIL import Image

    tiny = Image.new("L", (8, 8))
    tables = []
    for quality in range(1, 101):
        buf = io.BytesIO()
        tiny.save(buf, "JPEG", quality=quality)
        with Image.open(buf) as im:
            tables.append(list(im.quantization[0]))
    return np.array(tables, dtype=np.float64)


def jpeg_quality(quantization: dict[int, Sequence[int]] | None) -> float:
    """The libjpeg quality (1-100) whose standard luminance table is nearest to this one
    (mean relative difference); NaN without tables. Encoders with their own tables get the
    closest standard quality, which is what a quality comparison needs."""
    if not quantization or 0 not in quantization:
        return math.nan
    table = np.asarray(quantization[0], dtype=np.float64)
    refs = _reference_tables()
    if table.shape != refs.shape[1:]:
        return math.nan
    error = np.mean(np.abs(refs - table) / np.maximum(refs, 1.0), axis=1)
    return float(np.argmin(error) + 1)


@dataclass
class FileFacts:
    width: float = math.nan
    height: float = math.nan
    format: float = math.nan
    quality: float = math.nan
    subsampling: float = math.nan
    progressive: float = math.nan
    metadata: float = math.nan  # which blocks the file carries: EXIF 1 + ICC profile 2 + XMP 4

    def size_features(self) -> list[float]:
        aspect = self.width / self.height if self.height else math.nan
        pixels = math.log10(self.width * self.height) if self.width and self.height else math.nan
        return [self.width, self.height, aspect, pixels]

    def file_features(self) -> list[float]:
        return [self.format, self.quality, self.subsampling, self.progressive, self.metadata]


SIZE_COLUMNS = ["width", "height", "aspect", "log10_pixels"]
FILE_COLUMNS = ["format", "jpeg_quality", "chroma_subsampling", "progressive", "metadata"]


FACTS_VERSION = "2"  # in the feature cache (dataset.py) beside the feature groups


def file_facts(source: Path | bytes) -> FileFacts:
    """Header facts of an image file or its bytes (no pixel decoding); NaNs where unreadable."""
    from PIL import Image, JpegImagePlugin

    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as im:
            width, height = im.size
            if im.getexif().get(0x0112) in (5, 6, 7, 8):  # EXIF orientation: the picture is turned
                width, height = height, width
            facts = FileFacts(float(width), float(height), float(FORMATS.get(im.format or "", 9)))
            facts.metadata = float(bool(im.info.get("exif") or len(im.getexif())) + 2 * bool(im.info.get("icc_profile"))
                                   + 4 * bool(im.info.get("xmp") or im.info.get("XML:com.adobe.xmp")))
            if im.format in ("JPEG", "MPO"):
                facts.quality = jpeg_quality(getattr(im, "quantization", None))
                facts.subsampling = float(JpegImagePlugin.get_sampling(im))
                facts.progressive = float(bool(im.info.get("progressive") or im.info.get("progression")))
            return facts
    except Exception:  # noqa: BLE001 - a missing file only loses its baseline features
        return FileFacts()


def confounder_matrices(facts: Sequence[FileFacts]) -> dict[str, np.ndarray]:
    """The baselines' inputs from each image's header facts (read with the image, see dataset.py)."""
    return {
        "image_size": np.array([f.size_features() for f in facts], dtype=np.float64).reshape(-1, len(SIZE_COLUMNS)),
        "file_format": np.array([f.file_features() for f in facts], dtype=np.float64).reshape(-1, len(FILE_COLUMNS)),
    }


Predictor = Callable[[np.ndarray], np.ndarray]


def fit_trees(x: np.ndarray, y: np.ndarray) -> Predictor:
    """A few shallow boosted trees: file properties matter through exact values and
    thresholds (306x306, quality 75), not linearly. NaN is a value of its own."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    model = HistGradientBoostingClassifier(max_iter=60, max_depth=3, learning_rate=0.1, min_samples_leaf=5,
                                           class_weight="balanced", random_state=0)
    model.fit(x, y)
    return lambda z: model.predict_proba(z)[:, 1]


BASELINE_FITS: dict[str, Callable[[np.ndarray, np.ndarray], Predictor]] = {
    "image_size": fit_trees, "file_format": fit_trees,
}


def baseline_oof(
    matrices: dict[str, np.ndarray], y: np.ndarray, splits: Sequence[tuple[np.ndarray, np.ndarray]],
) -> dict[str, np.ndarray]:
    """Out-of-fold probabilities of every baseline on the model's own folds."""
    out = {}
    for name, x in matrices.items():
        prob = np.full(len(y), np.nan)
        for train_idx, test_idx in splits:
            prob[test_idx] = fit_informative(BASELINE_FITS[name], x[train_idx], y[train_idx])(x[test_idx])
        out[name] = prob
    return out


SIZE_PARTS = {"aspect ratio": [SIZE_COLUMNS.index("aspect")], "pixel size": [SIZE_COLUMNS.index("log10_pixels")]}


def size_signal(
    size_matrix: np.ndarray, y: np.ndarray, splits: Sequence[tuple[np.ndarray, np.ndarray]],
) -> dict[str, float]:
    """Out-of-fold AUC of the image-size baseline on each part of the frame alone (the aspect
    ratio, the pixel count): which of them carries what the whole baseline finds."""
    out = {}
    for part, columns in SIZE_PARTS.items():
        x = size_matrix[:, columns]
        prob = np.full(len(y), np.nan)
        for train_idx, test_idx in splits:
            prob[test_idx] = fit_informative(fit_trees, x[train_idx], y[train_idx])(x[test_idx])
        auc = _auc(y, prob) if np.all(np.isfinite(prob)) else math.nan
        out[part] = None if math.isnan(auc) else round(auc, 4)
    return out


def size_cue(baseline: dict[str, Any]) -> str:
    """What the image-size baseline's signal is: the part of the frame (:func:`size_signal`) that
    alone comes within WARN_MARGIN of the whole baseline, with each part's own AUC."""
    parts = {p: auc for p, auc in (baseline.get("carried_by") or {}).items() if auc is not None}
    whole = baseline.get("roc_auc") or 0.0
    strong = [p for p, auc in parts.items() if auc >= max(WARN_MIN_AUC, whole - WARN_MARGIN)]
    alone = "; ".join(f"{p} alone: AUC {auc:.3f}" for p, auc in parts.items())
    name = strong[0] if len(strong) == 1 else "image size and aspect ratio"
    return f"{name} ({alone})" if alone else CONFOUNDERS["image_size"]


def informative_columns(x: np.ndarray) -> np.ndarray:
    """Indices of the columns that vary among the rows that have a value: a column that is all
    NaN (no JPEG, so no JPEG quality) or holds one value (every file a PNG) tells nothing."""
    keep = []
    for j in range(x.shape[1]):
        values = x[:, j][np.isfinite(x[:, j])]
        if values.size and np.ptp(values) > 0 or values.size and values.size < len(x):
            keep.append(j)  # a value some rows lack (NaN) is information too
    return np.array(keep, dtype=int)


def fit_informative(fit: Callable[[np.ndarray, np.ndarray], Predictor], x: np.ndarray, y: np.ndarray) -> Predictor:
    """``fit`` on the informative columns only; with none, or one label, 0.5 for every row: a
    baseline that knows nothing ties everything (AUC exactly 0.5; a per-fold share of the labels
    would rank the folds against each other)."""
    columns = informative_columns(x)
    if columns.size == 0 or len(np.unique(y)) < 2:
        return lambda z: np.full(len(z), 0.5)
    model = fit(x[:, columns], y)
    return lambda z: model(z[:, columns])


def _auc(y: np.ndarray, prob: np.ndarray) -> float:
    """ROC AUC by ranks (ties averaged); NaN unless both classes are present."""
    from scipy.stats import rankdata

    pos = y == 1
    n1, n0 = int(pos.sum()), int((~pos).sum())
    if not n1 or not n0:
        return math.nan
    ranks = rankdata(prob)
    return float((ranks[pos].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def bootstrap_auc_ci(
    y: np.ndarray, prob: np.ndarray, groups: np.ndarray, *, reps: int = 400, seed: int = 0, level: float = 0.95,
) -> tuple[float, float] | None:
    """Percentile interval of the AUC when whole CV groups are resampled with
    replacement (copies of one photo are not independent evidence)."""
    rng = np.random.default_rng(seed)
    ids, inverse = np.unique(groups, return_inverse=True)
    members = [np.flatnonzero(inverse == g) for g in range(len(ids))]
    values = []
    for _ in range(reps):
        pick = np.concatenate([members[g] for g in rng.integers(0, len(ids), len(ids))])
        auc = _auc(y[pick], prob[pick])
        if not math.isnan(auc):
            values.append(auc)
    if len(values) < reps // 2:
        return None
    tail = (1 - level) / 2 * 100
    return float(np.percentile(values, tail)), float(np.percentile(values, 100 - tail))


def confounder_warnings(
    model_auc: float | None, baselines: dict[str, dict[str, Any]], normalized: bool = False,
) -> list[str]:
    """Plain-language warnings for confounder baselines within WARN_MARGIN AUC of the model."""
    if model_auc is None:
        return []
    closed = ("normalize = true hides it from the model, which stays well below the baseline; but the labels "
              "still differ by it here, and so may everything else that came with each source; collect both "
              "labels from the same sources")
    advice = ("normalize = true did not close the gap: every picture was already a square around the face without "
              "bars or metadata, averaged to one level of detail, so what remains is what each source shows (or the blur of pictures too small "
              f"for that detail: under about {DETAIL * 3 // 2} pixels on the shorter side); collect both labels "
              "from the same sources" if normalized else
              "collect both labels from the same sources, or train with [pipelines.<name>] normalize = true and compare")
    out = []
    for name, what in CONFOUNDERS.items():
        baseline = baselines.get(name) or {}
        auc = baseline.get("roc_auc")
        if name == "image_size":
            what = size_cue(baseline)
        if auc is not None and auc >= WARN_MIN_AUC and auc >= model_auc - WARN_MARGIN:
            out.append(
                f"The classes differ by camera or file, not only by content: a baseline that sees only the "
                f"{what} reaches AUC {auc:.3f} (the model: {model_auc:.3f}). The model's figures cannot show "
                f"that it recognises selfies; {closed if normalized and auc > model_auc + WARN_MARGIN else advice}."
            )
    return out


def per_source(
    jobs: Sequence[str], labels: Sequence[str], y: np.ndarray, prob: np.ndarray, threshold: float,
) -> dict[str, dict[str, Any]]:
    """Metrics per source job (hashtag, folder): counts, accuracy, mean probability, AUC
    where the job holds both labels. A job with one label gets accuracy only."""
    out: dict[str, dict[str, Any]] = {}
    jobs_arr = np.array([j or "(none)" for j in jobs])
    for job in sorted(set(jobs_arr.tolist())):
        idx = jobs_arr == job
        yy, pp = y[idx], prob[idx]
        auc = _auc(yy, pp)
        out[job] = {
            "images": int(idx.sum()),
            "per_label": {labels[0]: int(yy.sum()), labels[1]: int((1 - yy).sum())},
            "accuracy": float(np.mean((pp >= threshold) == (yy == 1))),
            "mean_probability": float(np.mean(pp)),
            "roc_auc": None if math.isnan(auc) else auc,
        }
    return out
