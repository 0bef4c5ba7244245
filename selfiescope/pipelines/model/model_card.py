"""MODEL.md, the model card written beside model.txt: what the model was trained on, what it
scores against every baseline (with intervals), where it must not be trusted, and what it
is for. Everything comes from ``metrics.json`` and ``schema.json`` of the same folder.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .assessment import BASELINE_TITLES
from .leak_groups import links_text
from ..dataset_care.reviewed import review_progress

if TYPE_CHECKING:  # pragma: no cover
    from ...core.settings import Settings, TrainPipeline
    from .dataset import FeatureTable

DATASET_CARDS = ("DATASET.md", "dataset_card.md", "DATASET_CARD.md", "datacard.md")



ROWS_NOTE = ("The LightGBM rows score different models, so their figures differ even with calibration none: "
             "the cross-validation's fold models (each early-stopped on its own fold), and the final recipe (the "
             "final model's number of rounds, refit on each fold's training part: cross-fitted) whose scores, "
             "through the chosen calibrator, are what `selfiescope predict` gives.")


def model_rows(cv: dict[str, Any]) -> list[tuple[str, dict[str, Any], str | None]]:
    """``(title, metrics, CI key)`` per LightGBM row, each title naming the scores it rates."""
    rows: list[tuple[str, dict[str, Any], str | None]] = [
        ("LightGBM: CV fold models, raw scores", cv["lightgbm"], "lightgbm")]
    if "lightgbm_calibrated" not in cv:
        return rows
    method = (cv.get("calibration") or {}).get("method", "none")
    if method == "none":
        return rows + [("LightGBM: final recipe (what predict runs), cross-fitted, calibration none", cv["lightgbm_calibrated"],
                        "lightgbm_calibrated")]
    if "final_recipe" in cv:
        rows.append(("LightGBM: final recipe, cross-fitted, raw scores", cv["final_recipe"], None))
    return rows + [(f"LightGBM: final recipe (what predict runs), cross-fitted, calibrated ({method})", cv["lightgbm_calibrated"],
                    "lightgbm_calibrated")]

def _day(ts: float | None) -> str | None:
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).strftime("%Y-%m-%d") if ts else None


def dataset_facts(table: "FeatureTable", pipeline: "TrainPipeline", settings: "Settings") -> dict[str, Any]:
    """Counts per label and source job, and when the images were collected (manifest ``first_seen``)."""
    from ...core.manifest import Manifest

    per_source = Counter((r.job or "(none)", r.label) for r in table.rows)
    root = Path(pipeline.dataset_root or settings.storage.root)
    dates: dict[str, dict[str, str | None]] = {}
    manifest = Manifest.at_root(root)
    try:
        seen = {r["content_hash"]: r["first_seen"] for r in manifest.query(
            "SELECT content_hash, first_seen FROM images WHERE decision='accepted'")}
        review = review_progress(manifest, tuple(pipeline.labels)).as_dict()
        from ..dataset_care.class_losses import class_dependent_losses, rejections_by_label

        rejected = rejections_by_label(manifest, list(pipeline.labels))
    finally:
        manifest.close()
    for label in pipeline.labels:
        stamps = [seen[r.content_hash] for r in table.rows if r.label == label and seen.get(r.content_hash)]
        dates[label] = {"first": _day(min(stamps)) if stamps else None, "last": _day(max(stamps)) if stamps else None}
    card = next((str(root / n) for n in DATASET_CARDS if (root / n).is_file()), None)
    return {
        "per_source": [{"job": job, "label": label, "images": n} for (job, label), n in sorted(per_source.items())],
        "collected": dates,
        "dataset_card": card,
        "review": review,  # `selfiescope review`: labels looked at, changed, left out (over these labels' images)
        "rejections_by_label": rejected,
        "class_dependent_losses": class_dependent_losses(rejected),
    }


def _f(v: Any) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def _ci(ci: list[float] | None) -> str:
    return f"{ci[0]:.3f}-{ci[1]:.3f}" if ci else "n/a"


def single_label_note(per_source: dict[str, dict[str, Any]]) -> str:
    single = [job for job, m in per_source.items() if min(m["per_label"].values()) == 0]
    if per_source and len(single) == len(per_source):
        return ("- **Every source job holds one label only** (" + ", ".join(single) + "): label and source coincide,"
                " so nothing here shows that the model separates the labels within one source.")
    return ("- A source job that holds one label only cannot show whether the model separates the labels within"
            " it; prefer sources that hold both.")


def render(metrics: dict[str, Any], schema: dict[str, Any]) -> str:
    ds, cv = metrics["dataset"], metrics["cv"]
    pos, neg = schema["labels"]
    cis = cv.get("roc_auc_ci95", {})
    lines = [f"# Model card: selfiescope `{metrics['pipeline']}`", ""]
    if metrics.get("warnings"):
        lines += ["> **Warning.** " + w for w in metrics["warnings"]] + [""]
    lines += [
        "## Intended use",
        f"Sorting face photos into **{pos}** (positive) and **{neg}**, to study how people photograph",
        "themselves, with a person reviewing the results. Not for decisions about a person, not for",
        "identifying anyone, and not for photos unlike the training data (other sources, eras, cameras).",
        "",
        "## Data",
        f"{ds['images']} images ({', '.join(f'{k}: {v}' for k, v in ds['per_label'].items())}) in {ds['groups']}"
        f" cross-validation groups (largest: {ds.get('largest_group', '?')} images); {ds['failed']} unusable.",
        f"Grouped by {metrics['cv']['grouped_by']}. Photos linked by any link applied"
        f" ({links_text(ds.get('grouping') or {})}) never sit on both sides of a"
        " split, in the folds, early stopping, calibration and the bootstrap intervals.",
    ]
    if ds.get("dataset_card"):
        lines.append(f"Dataset card: `{ds['dataset_card']}`.")
    if review := ds.get("review"):
        lines.append(f"Labels reviewed (`selfiescope review`): {review['reviewed']} of {review['stored']} stored images;"
                     f" {review['relabeled']} labels changed, {review['excluded']} images excluded from training.")
    collected = ds.get("collected", {})
    lines += ["", "| source job | label | images |", "|---|---|---:|"]
    lines += [f"| {s['job']} | {s['label']} | {s['images']} |" for s in ds.get("per_source", [])]
    lines += ["", "Collected: " + "; ".join(f"{label} {d['first'] or '?'} to {d['last'] or '?'}"
                                          for label, d in collected.items()) + " (UTC, when first stored).", ""]
    norm = metrics.get("normalize")
    lines += [
        "## Features",
        f"{len(schema['columns'])} features from the groups "
        + ", ".join(f"`{g['name']}` (v{g['version']})" for g in schema["groups"])
        + f", computed after the chain steps {', '.join(schema.get('steps', []))}."
        + (" " + normalize_text(norm) if norm else " Images were used as stored (no normalization)."),
        "",
        "## Metrics (out-of-fold, "
        f"{cv['folds']}-fold cross-validation grouped by {cv['grouped_by']})",
        "",
        "| model | ROC AUC | 95% CI | balanced accuracy | Brier |",
        "|---|---:|---:|---:|---:|",
    ]
    lines += [f"| {title} | {_f(m['roc_auc'])} | {_ci(cis.get(key) if key else None)} | {_f(m['balanced_accuracy'])} | "
              f"{_f(m['brier'])} |" for title, m, key in model_rows(cv)]
    for name, b in cv.get("baselines", {}).items():
        lines.append(f"| baseline: {BASELINE_TITLES.get(name, name)} | {_f(b['roc_auc'])} | {_ci(cis.get(name))} | "
                     f"{_f(b['balanced_accuracy'])} | {_f(b['brier'])} |")
    if "without_normalize" in cv:
        w = cv["without_normalize"]
        lines.append(f"| LightGBM on the files as stored (no normalization) | {_f(w['roc_auc'])} | n/a | "
                     f"{_f(w['balanced_accuracy'])} | {_f(w['brier'])} |")
    lines += ["", ROWS_NOTE]
    if cal := cv.get("calibration"):
        lines += ["", f"Calibration of the final model: **{cal['method']}**, chosen among "
                  + ", ".join(f"{m} (Brier {_f(b)})" for m, b in cal.get("brier_by_method", {}).items())
                  + f" by {cal.get('chosen_by', 'cross-validation')}."]
    lines += ["", f"CIs: {cv.get('ci_method', 'n/a')}. Decision threshold {schema['threshold']} on the calibrated"
              " probability.", "", "Per source job (calibrated out-of-fold probabilities):", "",
              "| source job | images | accuracy | mean p(" + pos + ") | AUC |", "|---|---:|---:|---:|---:|"]
    for job, m in cv.get("per_source", {}).items():
        lines.append(f"| {job} | {m['images']} | {_f(m['accuracy'])} | {_f(m['mean_probability'])} | {_f(m['roc_auc'])} |")
    lines += _honesty_lines(metrics)
    lines += [
        "",
        "## Known limitations",
        "- Cross-validated figures describe photos like the training photos. When each label comes from its"
        " own sources, the model can learn the source (camera, size, compression, era) instead of the"
        " pose; the confounder baselines above measure how far that alone goes.",
        single_label_note(cv.get("per_source", {})),
        "- The face filter sees frontal faces only; profiles, heavy occlusion and small faces never reach the model.",
        "- Near-duplicates are grouped by perceptual hash (mirrored copies are caught at collection);"
        " heavier edits (large crops, strong rotations) can still leak across folds.",
        "- Small datasets give wide intervals: read the CI, not the point estimate.",
        "",
    ]
    return "\n".join(lines)


def _honesty_lines(metrics: dict[str, Any]) -> list[str]:
    """The frame counterfactual and the rejections that depended on the label."""
    from .counterfactual import FLIP_WARN, flip_lines

    lines = ["", "## Does the answer follow the frame?", "",
             f"A sample of each label moved to the other label's typical aspect ratio (cropped around the face or"
             f" padded), separately to its typical pixel size (resampled), and separately to its typical face"
             f" position (cropped), re-scored by the final model; over {FLIP_WARN:.0%} flipped is a warning.", ""]
    lines += [f"- {line}" for line in flip_lines(metrics.get("counterfactual"))] or ["- not run"]
    losses = metrics.get("dataset", {}).get("class_dependent_losses") or []
    lines += ["", "## Rejections that depended on the label", ""]
    lines += [f"- {loss['reason']}: " + ", ".join(f"{k} {v:.0%}" for k, v in loss["rates"].items()) for loss in losses] \
        or ["- none (no rejection reason's rate differs between labels by more than 2x)"]
    return lines


def write_model_card(path: Path, metrics: dict[str, Any], schema: dict[str, Any]) -> Path:
    path.write_text(render(metrics, schema), encoding="utf-8")
    return path


def normalize_text(norm: dict[str, Any]) -> str:
    """One sentence on what normalize did to every image, from the model's saved recipe."""
    from .normalize import BORDERS, CROP, FACE_CONTEXT, METADATA, Recipe

    recipe = Recipe.saved(norm)
    done = []
    if recipe.square and recipe.borders == BORDERS:
        done.append("one-colour bars at its edges trimmed")
    if recipe.square:
        done.append(f"cropped to a square of {FACE_CONTEXT:g} face sides around its face (the largest square "
                    "without one)" if recipe.crop == CROP else "cropped to the largest square around its face")
    done.append(f"re-encoded to {recipe.side} px and JPEG quality {recipe.jpeg_quality}")
    text = "Before features, every image was " + ", ".join(done)
    if recipe.finds_face:
        text += "; the face was found again in that square by the same steps, so its box is on one grid for every picture"
    if recipe.metadata == METADATA:
        text += "; the file's metadata (EXIF) was not used"
    return text + "."
