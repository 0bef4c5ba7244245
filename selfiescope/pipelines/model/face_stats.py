"""How many images per label each face-area threshold keeps: data for choosing ``min_face_area``.

The face filter records the largest face's area share for every image it looked at,
kept or rejected (``no_face`` records 0), so one collection at a permissive threshold
shows what any stricter one would keep. Detections go down to ``min_size_ratio``² of
the threshold in use (3.75% of the image at the default 15%): the curve below that is
a lower bound.
"""

from __future__ import annotations

from pathlib import Path
from collections.abc import Sequence
from typing import Any

import numpy as np

from ...core.components import steps_providing
from ...core.manifest import Manifest
from ...core.plugins import Registry
from ...core.settings import Settings

THRESHOLDS = np.round(np.arange(0.0, 0.505, 0.01), 2)
TABLE_THRESHOLDS = (0.05, 0.10, 0.15, 0.20, 0.25, 0.30)


def face_filters(registry: Registry) -> list[str]:
    """The installed steps that judge faces (they provide ``"faces"``): asked, never named."""
    return steps_providing(registry.steps, "faces")


def face_areas(manifest: Manifest, filters: Sequence[str]) -> dict[str, np.ndarray]:
    """``"label (detector)"`` -> area shares of every image the face filter judged
    (accepted, or rejected by one of the ``filters`` steps; later steps' rejections are duplicates)."""
    marks = ",".join("?" * len(filters)) or "NULL"
    rows = manifest.query(
        "SELECT label, face_detector, face_area FROM images WHERE face_area IS NOT NULL"
        f" AND (decision='accepted' OR rejected_by IN ({marks}))", tuple(filters),
    )
    detectors = {r["face_detector"] for r in rows}
    out: dict[str, list[float]] = {}
    for r in rows:
        key = r["label"] if len(detectors) < 2 else f"{r['label']} ({r['face_detector'] or 'haar'})"
        out.setdefault(key, []).append(float(r["face_area"]))
    return {k: np.array(v) for k, v in sorted(out.items())}


def kept_per_threshold(areas: dict[str, np.ndarray], thresholds: np.ndarray = THRESHOLDS) -> dict[str, list[int]]:
    """Images each threshold keeps (area share strictly above it, the filter's rule)."""
    return {k: [int((v > t).sum()) for t in thresholds] for k, v in areas.items()}


def threshold_plot(path: Path, areas: dict[str, np.ndarray], current: float | None = None) -> Path:
    from .report import _plt, _save

    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for key, counts in kept_per_threshold(areas).items():
        ax.plot(THRESHOLDS * 100, counts, label=f"{key} ({len(areas[key])} judged)")
    if current is not None:
        ax.axvline(current * 100, color="k", ls=":", lw=1, label=f"min_face_area now ({current:.0%})")
    ax.set(xlabel="min_face_area (% of the image)", ylabel="images kept",
           title="images kept per label at each face-area threshold")
    ax.legend(loc="upper right", fontsize=8)
    _save(fig, path)
    return path


def current_threshold(settings: Settings, registry: Registry, filters: Sequence[str]) -> float | None:
    """The first face filter's ``min_face_area`` option under ``settings``, if it has one."""
    for name in filters:
        options = registry.steps[name].Options.model_validate(settings.component_options(name))
        if isinstance(value := getattr(options, "min_face_area", None), float | int):
            return float(value)
    return None


def rejection_counts(manifest: Manifest) -> dict[str, int]:
    """``"who/why"`` -> how many decisions against an image or a post (a step's, or a source's
    for a post it could not use: ``instagram/gone``, ``instagram/too_large``)."""
    rows = manifest.query("SELECT rejected_by, reject_code, COUNT(*) n FROM rejections GROUP BY 1, 2 ORDER BY 3 DESC")
    return {f"{r['rejected_by'] or '?'}/{r['reject_code'] or '?'}": r["n"] for r in rows}


def face_area_stats(root: Path, plot: Path | None, current: float | None, filters: Sequence[str]) -> dict[str, Any]:
    manifest = Manifest.for_reading(root)
    try:
        areas = face_areas(manifest, filters)
        rejections = rejection_counts(manifest)
    finally:
        manifest.close()
    kept = kept_per_threshold(areas, np.array(TABLE_THRESHOLDS))
    table = {k: dict(zip((f"{t:.0%}" for t in TABLE_THRESHOLDS), kept[k])) for k in areas}
    result: dict[str, Any] = {"root": str(root), "judged": {k: len(v) for k, v in areas.items()}, "kept": table,
                              "plot": None, "rejections": rejections}
    if plot is not None and areas:
        result["plot"] = str(threshold_plot(plot, areas, current))
    return result
