"""The shape counterfactual: does the model's answer follow the picture's frame?

A sample of each label is reshaped to the other label's typical aspect ratio (the median of
its images' width / height): a picture wider than the target is cropped around its face, a
narrower one is padded left and right with black, as a screenshot or a letterbox would be.
Each reshaped picture goes through what training did (normalize, the feature groups) and is
scored by the final model; a changed decision is a *flip*. A model that reads selfie-ness
from the photo flips rarely; one that reads the frame's shape flips often, and the training
report, MODEL.md and the CLI warn when more than :data:`FLIP_WARN` of a label flips.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from ...core.app import App
    from ...core.settings import TrainPipeline
    from .dataset import FeatureTable
    from ..dataset_care.stored import StoredReader

FLIP_WARN = 0.2  # a share of a label's sample whose decision changes with the frame alone
SAMPLE_PER_LABEL = 24  # pictures reshaped per label (each costs one feature extraction)


def reshape_to_aspect(image: np.ndarray, face: dict[str, Any], aspect: float) -> tuple[np.ndarray, dict[str, Any]]:
    """``image`` with width / height ``aspect``: cropped around the face when wider, padded with
    black left and right when narrower; the face box follows (clipped to the new frame)."""
    height, width = image.shape[:2]
    target = max(1, int(round(height * aspect)))
    box = face.get("box")
    if target <= width:
        cx = box[0] + box[2] / 2 if box else width / 2
        x = int(round(min(max(cx - target / 2, 0), width - target)))
        out, shift = np.ascontiguousarray(image[:, x:x + target]), -x
    else:
        left = (target - width) // 2
        out = np.zeros((height, target, 3), dtype=image.dtype)
        out[:, left:left + width] = image
        shift = left
    moved = {**face}
    if box:
        x0, x1 = max(0, box[0] + shift), min(out.shape[1], box[0] + box[2] + shift)
        moved["box"] = [x0, box[1], x1 - x0, box[3]] if x1 > x0 else None
        moved["face_area"] = (x1 - x0) * box[3] / float(out.shape[0] * out.shape[1]) if x1 > x0 else 0.0
    return out, moved


def typical_aspects(table: "FeatureTable", labels: list[str]) -> dict[str, float]:
    """Median width / height per label, from the images' header facts."""
    out = {}
    for label in labels:
        ratios = [f.width / f.height for f, r in zip(table.facts, table.rows)
                  if r.label == label and f.width and f.height and math.isfinite(f.width / f.height)]
        if ratios:
            out[label] = float(np.median(ratios))
    return out


def shape_flips(
    app: "App", pipeline: "TrainPipeline", table: "FeatureTable", reader: "StoredReader",
    predict: Callable[[np.ndarray], np.ndarray], threshold: float, sample: int = SAMPLE_PER_LABEL,
) -> dict[str, Any]:
    """``{"per_label": {label: {"to_aspect", "checked", "flipped", "rate"}}, "warn": bool}``;
    ``{"skipped": why}`` where the check cannot run (one shape for both labels, nothing readable).
    The table's own decoding step and extractors re-score the reshaped photos, read by ``reader``."""
    from .dataset import decode_with_step, extract_features
    from .normalize import normalize_image

    labels = list(pipeline.labels)
    aspects = typical_aspects(table, labels)
    if len(aspects) < 2:
        return {"skipped": "the images' sizes could not be read"}
    step_cls = app.registry.steps[table.image_step]
    step = step_cls(step_cls.Options.model_validate(app.settings.component_options(table.image_step)), None)
    extractors = table.extractors
    rng = np.random.default_rng(pipeline.seed)
    per_label: dict[str, dict[str, Any]] = {}
    for label, other in ((labels[0], labels[1]), (labels[1], labels[0])):
        idx = [i for i, r in enumerate(table.rows) if r.label == label]
        chosen = rng.choice(idx, size=min(sample, len(idx)), replace=False) if idx else []
        checked = flipped = 0
        for i in chosen:
            row = table.rows[int(i)]
            try:
                event = decode_with_step(step, reader.read(row.stored))
            except Exception:  # noqa: BLE001 - an unreadable file is left out of the sample
                continue
            face = {"box": row.box, "face_area": row.face_area, "n_faces": row.n_faces, "exif": event.exif}
            image, face = reshape_to_aspect(event.image, face, aspects[other])
            if pipeline.normalize:
                image, face = normalize_image(image, face, pipeline.normalize_side, pipeline.normalize_quality)
            try:
                values = extract_features(image, face, extractors)
            except Exception:  # noqa: BLE001
                continue
            x = np.array([[values.get(c, math.nan) for c in table.columns]], dtype=np.float64)
            before = predict(table.X[int(i):int(i) + 1])[0] >= threshold
            after = predict(x)[0] >= threshold
            checked += 1
            flipped += int(before != after)
        per_label[label] = {"to_aspect": round(aspects[other], 3), "checked": checked, "flipped": flipped,
                            "rate": flipped / checked if checked else None}
    rates = [v["rate"] for v in per_label.values() if v["rate"] is not None]
    return {"per_label": per_label, "aspects": {k: round(v, 3) for k, v in aspects.items()},
            "warn": any(rate > FLIP_WARN for rate in rates), "threshold": FLIP_WARN}


def flip_warnings(result: dict[str, Any]) -> list[str]:
    if not result.get("warn"):
        return []
    parts = ", ".join(f"{label} {v['flipped']}/{v['checked']} (reshaped to aspect {v['to_aspect']})"
                      for label, v in result["per_label"].items() if v["checked"])
    return [f"The model's answer follows the picture's frame: reshaping photos to the other label's typical "
            f"aspect ratio changed the decision for {parts}. It has learnt the classes' image shapes; collect "
            f"both labels with the same shapes, or train with normalize = true (a square crop around the face) "
            f"and compare."]


def flip_lines(result: dict[str, Any] | None) -> list[str]:
    """Plain lines for MODEL.md and the report: per label, how many reshaped photos flipped."""
    if not result:
        return []
    if "skipped" in result:
        return [f"Shape counterfactual not run: {result['skipped']}."]
    lines = []
    for label, v in result["per_label"].items():
        if v["checked"]:
            lines.append(f"{label}: {v['flipped']} of {v['checked']} photos reshaped to aspect {v['to_aspect']} "
                         f"changed decision ({v['rate']:.0%})")
    return lines
