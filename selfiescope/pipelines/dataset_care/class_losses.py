"""Rejections per label: which settings made images unusable, and losses that depend on the class.

A chain that drops 13% of one label and 53% of the other for the same reason (a format it
cannot handle, a detector that misses tilted faces) changes what each class looks like: the
model then learns the chain, not the photos. The dataset card and the training report list
every rejection reason whose rate differs between labels by more than :data:`BIAS_FACTOR`
(and concerns at least :data:`BIAS_MIN_IMAGES` images), as a bias warning.

Rates count distinct photos (the manifest's ``images`` rows): a photo seen under a label,
rejected or accepted, counts once for that label.
"""

from __future__ import annotations

from typing import Any

from ...core.manifest import Manifest
from ...core.settings import Settings

BIAS_FACTOR = 2.0  # one label loses a reason's images at least this many times as often as another
BIAS_MIN_IMAGES = 5  # ...and the reason cost at least this many images in all (a few are noise)

# reject code -> (component, options) whose values decide it
SETTING_OF_REASON: dict[str, tuple[str, tuple[str, ...]]] = {
    "too_small": ("decode", ("min_side",)),
    "too_many_pixels": ("decode", ("max_pixels",)),
    "animated": ("decode", ("animated",)),
    "unsupported": ("decode", ("formats",)),
    "no_face": ("face_area", ("detector", "min_face_area")),
    "face_too_small": ("face_area", ("min_face_area",)),
    "duplicate": ("dedup", ("max_distance",)),
}
PRIVACY_REASONS = {"location_metadata": "[privacy] strip_metadata"}


def rejections_by_label(manifest: Manifest, labels: list[str] | None = None) -> dict[str, dict[str, Any]]:
    """``{label: {"seen": photos, "accepted": n, "reasons": {code: n}}}`` from the manifest."""
    out: dict[str, dict[str, Any]] = {}
    rows = manifest.query("SELECT label, decision, reject_code, COUNT(*) FROM images GROUP BY 1, 2, 3")
    for label, decision, code, n in rows:
        if label is None or (labels is not None and label not in labels):
            continue
        entry = out.setdefault(label, {"seen": 0, "accepted": 0, "reasons": {}})
        entry["seen"] += n
        if decision == "accepted":
            entry["accepted"] += n
        elif decision == "rejected":
            entry["reasons"][code or "?"] = entry["reasons"].get(code or "?", 0) + n
    return out


def setting_text(code: str, settings: Settings | None, pipeline: tuple[str, Any] | None = None) -> str | None:
    """``[plugins.decode] min_side = 64``: the settings whose values decided a rejection, each with
    its value (``[plugins.face_area] detector = 'hog', min_face_area = 0.1``); None for a reason
    no setting decides. ``pipeline`` (name, pipeline) names a value that pipeline's own
    ``options`` set under ``[pipelines.NAME.options.COMPONENT]`` instead."""
    if code in PRIVACY_REASONS:
        value = settings.privacy.strip_metadata if settings is not None else None
        return PRIVACY_REASONS[code] + (f" = {value!r}" if value is not None else "")
    if code not in SETTING_OF_REASON:
        return None
    component, options = SETTING_OF_REASON[code]
    own: dict[str, Any] = pipeline[1].options.get(component, {}) if pipeline is not None else {}
    values = _effective_options(settings, component, own)
    sections: dict[str, list[str]] = {}
    for option in options:
        value = values.get(option)
        section = f"[pipelines.{pipeline[0]}.options.{component}]" if pipeline and option in own else f"[plugins.{component}]"
        sections.setdefault(section, []).append(option + (f" = {value!r}" if value is not None else ""))
    return "; ".join(f"{section} {', '.join(parts)}" for section, parts in sections.items())


def _effective_options(settings: Settings | None, component: str, own: dict[str, Any]) -> dict[str, Any]:
    """The options the component runs with: the settings' values over its defaults, validated by its
    own model, so a value derived from another (``min_face_area`` from ``detector``) is the real one."""
    from ...plugins.decode import DecodeOptions
    from ...plugins.dedup import DedupOptions
    from ...plugins.face_area import FaceAreaOptions

    given: dict[str, Any] = {}
    if settings is not None:
        try:
            given = settings.component_options(component, None)
        except Exception:  # noqa: BLE001 - the names alone still say what to change
            given = {}
    given = {**given, **own}
    model = {"decode": DecodeOptions, "face_area": FaceAreaOptions, "dedup": DedupOptions}.get(component)
    if model is None:
        return given
    try:
        return model.model_validate(given).model_dump()
    except Exception:  # noqa: BLE001 - settings another component reads differently: show what was given
        return given


def settings_of_reasons(reasons: Any, settings: Settings | None, pipeline: tuple[str, Any] | None = None) -> dict[str, str]:
    """``{code: setting text}`` for each reject code of ``reasons`` that a setting decides."""
    return {code: text for code in reasons if (text := setting_text(code, settings, pipeline))}


def rejection_lines(reasons: dict[str, int], settings: Settings | None, pipeline: tuple[str, Any] | None = None,
                    *, whose: str = "") -> list[str]:
    """``too_small 12: decided by [plugins.decode] min_side = 64``, one line per reject code, most
    frequent first (``whose`` qualifies the settings, e.g. "the model's")."""
    lines = []
    for code, n in sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0])):
        setting = setting_text(code, settings, pipeline)
        lines.append(f"{code} {n}" + (f": decided by {whose + ' ' if whose else ''}{setting}" if setting else ""))
    return lines


def nothing_kept_line(seen: int, reasons: dict[str, int], failed: int, settings: Settings | None,
                      pipeline: tuple[str, Any] | None = None, *, kept_word: str = "kept", whose: str = "") -> str | None:
    """One plain sentence when a job that saw images kept none of them (None otherwise): how many
    the chain rejected and, for each reason, the setting that decided it."""
    if not seen:
        return None
    rejected = sum(reasons.values())
    parts = []
    if rejected:
        parts.append(f"{rejected} rejected ({'; '.join(rejection_lines(reasons, settings, pipeline, whose=whose))})")
    if failed:
        parts.append(f"{failed} failed (see the errors)")
    return f"nothing {kept_word}: of {seen} image{'' if seen == 1 else 's'}, " + " and ".join(parts or [f"none was {kept_word}"])


def why_unusable(by_label: dict[str, dict[str, Any]], label: str, settings: Settings | None) -> str:
    """``38 rejected too_small ([plugins.decode] min_side = 64), 2 rejected no_face (...)`` for one label."""
    reasons = sorted((by_label.get(label) or {}).get("reasons", {}).items(), key=lambda kv: -kv[1])
    parts = []
    for code, n in reasons:
        setting = setting_text(code, settings)
        parts.append(f"{n} rejected {code}" + (f" ({setting})" if setting else ""))
    return ", ".join(parts)


def class_dependent_losses(
    by_label: dict[str, dict[str, Any]], factor: float = BIAS_FACTOR, min_images: int = BIAS_MIN_IMAGES,
) -> list[dict[str, Any]]:
    """Every rejection reason whose rate (rejected / seen) differs between two labels by more
    than ``factor`` and that cost at least ``min_images`` photos in all."""
    labels = [label for label, entry in by_label.items() if entry["seen"]]
    codes = sorted({code for entry in by_label.values() for code in entry["reasons"]})
    out = []
    for code in codes:
        rates = {label: by_label[label]["reasons"].get(code, 0) / by_label[label]["seen"] for label in labels}
        total = sum(by_label[label]["reasons"].get(code, 0) for label in labels)
        if len(rates) < 2 or total < min_images:
            continue
        high, low = max(rates.values()), min(rates.values())
        if high > 0 and (low == 0 or high / low > factor):
            out.append({"reason": code, "rates": {k: round(v, 4) for k, v in rates.items()},
                        "rejected": {k: by_label[k]["reasons"].get(code, 0) for k in labels}})
    return out


def loss_warnings(losses: list[dict[str, Any]], settings: Settings | None = None) -> list[str]:
    """One plain sentence per class-dependent loss."""
    out = []
    for loss in losses:
        rates = ", ".join(f"{label} {rate:.0%} ({loss['rejected'][label]})" for label, rate in loss["rates"].items())
        setting = setting_text(loss["reason"], settings)
        out.append(
            f"The chain itself treats the classes differently: '{loss['reason']}' rejected {rates} of the photos "
            f"seen per label; what remains of each class is shaped by the filter"
            + (f" ({setting})" if setting else "") + "."
        )
    return out


def unusable_note(pipeline: Any, settings: Settings, labels: list[str]) -> str:
    """``; selfie: 38 rejected too_small ([plugins.decode] min_side = 64)`` for the labels short of
    images, read from the dataset's manifest; empty where it cannot be read or says nothing."""
    from pathlib import Path

    root = Path(pipeline.dataset_root or settings.storage.root)
    try:
        manifest = Manifest.at_root(root)
    except Exception:  # noqa: BLE001 - the message is still true without the reasons
        return ""
    try:
        by_label = rejections_by_label(manifest, labels)
    except Exception:  # noqa: BLE001
        return ""
    finally:
        manifest.close()
    parts = [f"{label}: {text}" for label in labels if (text := why_unusable(by_label, label, settings))]
    return ("; why the others were unusable: " + "; ".join(parts)) if parts else ""
