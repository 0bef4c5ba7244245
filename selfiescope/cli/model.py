"""The model commands: ``train`` and ``predict``."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, Optional

import typer
from rich.table import Table
from rich.text import Text

from ..core.app import App
from ..core.settings import Settings
from ..core.text import printable
from ..exits import EXIT_FAILED, EXIT_INTERRUPTED
from .collect import _progress
from .common import JsonOpt, SchedulerOpt, SettingsOpt, console, core_app, emit_json, fail, load_app, out, tagged, with_scheduler


DEFAULT_TRAIN = "train"  # the pipeline `train` runs, with the defaults, when settings define none


def run_train(app: App, name: str, as_json: bool) -> None:
    """Train pipeline NAME, print its summary; shared by `train` and `run` (kind = "train")."""
    from ..pipelines.model.train import train

    with _progress(not as_json) as progress:
        task = progress.add_task("features", total=None)
        try:
            result = train(app, name, progress=lambda done, total: progress.update(task, completed=done, total=total))
        except KeyboardInterrupt:  # says what an interrupted training keeps: the features
            console.print(tagged("interrupted", "yellow", ": computed features are cached; run the same command again"))
            raise typer.Exit(EXIT_INTERRUPTED) from None
    summary = result.summary()
    summary["left_out"] = left_out_lines(result, app)
    if as_json:
        emit_json(summary)
        return
    table = Table(title=f"{name}: model written to {summary['model_dir']}", show_header=False)
    for key, value in summary.items():
        if key not in ("model_dir", "warnings", "likely_mislabeled"):
            table.add_row(key, f"{value:.3f}" if isinstance(value, float) else str(value))
    out.print(table)
    for line in summary["left_out"]:
        out.print(f"left out of training: {line}", highlight=False)
    for warning in summary["warnings"]:  # confounders: the figures above may describe the sources, not the photos
        console.print(tagged("warning:", "bold red", f" {warning}"), highlight=False)
    out.print(f"model card: {Path(summary['model_dir']) / 'MODEL.md'}")
    if mislabeled := summary.get("likely_mislabeled"):
        out.print(f"{mislabeled} training image{'s look' if mislabeled != 1 else ' looks'} mislabeled (the cross-validated "
                  "model contradicts the label): `selfiescope review` shows them first (sort: most likely mislabeled)")


def left_out_lines(result: Any, app: App) -> list[str]:
    """``too_small 3: decided by [plugins.decode] min_side = 64``: the stored images training could
    not use, by reason, each with the setting that decided it (a setting changed since collection)."""
    from ..pipelines.dataset_care.class_losses import rejection_lines

    failed = getattr(getattr(result, "table", None), "failed", None) or {}
    reasons = Counter(reason.split(":", 1)[0].strip() if ":" in reason else "error" for reason in failed.values())
    return rejection_lines(dict(reasons), app.settings)


@core_app.command("train")
def train_command(
    pipeline: Optional[str] = typer.Argument(None, help="a train pipeline from settings.toml (default: the only one)"),
    features: Optional[str] = typer.Option(None, help="comma-separated feature groups, e.g. geometry,landmarks,image"),
    model_dir: Optional[Path] = typer.Option(None, "--model-dir", help="where to write the model folder"),
    settings_path: Optional[Path] = SettingsOpt,
    as_json: bool = JsonOpt,
    scheduler: Optional[str] = SchedulerOpt,
) -> None:
    """Train the selfie/portrait classifier on the collected images (cross-validated, with a report)."""
    chosen: list[str] = []

    def adjust(settings: Settings) -> Settings:  # the command's options, applied before the app is made
        name, settings = train_options(with_scheduler(settings, scheduler), pipeline, features, model_dir)
        chosen.append(name)
        return settings

    app = load_app(settings_path, adjust)
    run_train(app, chosen[0], as_json)


def train_options(settings: Settings, pipeline: Optional[str], features: Optional[str],
                  model_dir: Optional[Path]) -> tuple[str, Settings]:
    """The train pipeline `train` runs and the settings with its options (``--features``,
    ``--model-dir``) in it; a name that is not a train pipeline is one line and exit 2."""
    from ..core.settings import TrainPipeline

    trains = [n for n, p in settings.pipelines.items() if isinstance(p, TrainPipeline)]
    if pipeline is None:
        if len(trains) > 1:
            raise fail(f"several train pipelines are defined ({', '.join(trains)}); name one")
        pipeline = trains[0] if trains else DEFAULT_TRAIN
    if pipeline in settings.pipelines and pipeline not in trains:
        raise fail(f"pipelines.{printable(pipeline)} is not a train pipeline")
    if pipeline not in trains and not (pipeline == DEFAULT_TRAIN and not trains):
        # a typo must not train with the defaults and replace the model folder
        known = ", ".join(trains) if trains else "none defined; `selfiescope train` alone trains with the defaults"
        raise fail(f"no train pipeline named '{printable(pipeline)}' (known: {known})")
    base = settings.pipelines.get(pipeline) or TrainPipeline(kind="train")
    update: dict[str, Any] = {}
    if features:
        update["features"] = [f.strip() for f in features.split(",") if f.strip()]
    if model_dir:
        update["model_dir"] = model_dir
    if pipeline in settings.pipelines and not update:
        return pipeline, settings
    return pipeline, settings.model_copy(update={"pipelines": {**settings.pipelines, pipeline: base.model_copy(update=update)}})


@core_app.command("predict")
def predict_command(
    model: Path = typer.Argument(..., help="a model folder written by `selfiescope train`"),
    paths: Optional[list[Path]] = typer.Argument(None, help="image files or folders (or --stored)"),
    stored: bool = typer.Option(False, "--stored", help="label the images the dataset's storage backend holds "
                                "(read through the backend, e.g. an S3 bucket), instead of files"),
    label: Optional[str] = typer.Option(None, "--label", "-l", help="with --stored: only the images stored under this label"),
    settings_path: Optional[Path] = typer.Option(None, "--settings", "-s", help="with --stored: read the storage these settings name "
                                                 "(default: the training's, saved with the model)"),
    as_json: bool = JsonOpt,
) -> None:
    """Label images with a trained model. Exit code 1 if any input could not be read; a photo the
    chain rejects (no face, too small) is a decision, not an error."""
    from ..pipelines.dataset_care.class_losses import nothing_kept_line, settings_of_reasons
    from ..pipelines.model.predict import STATUSES, expand_paths, load_model

    if stored == bool(paths):
        raise fail("give image paths, or --stored (not both)")
    if not stored and (label or settings_path):
        raise fail("--label and --settings go with --stored")
    app = load_app(settings_path)  # its plugins predict ([plugins] disable); with --stored, its storage too
    if missing := [printable(p) for p in paths or [] if not p.expanduser().exists() and not p.is_symlink()]:
        raise fail(f"not found: {', '.join(missing)}")
    loaded = load_model(model, app=app)
    if stored:
        results = loaded.predict_stored(label, settings=app.settings if settings_path else None)
        if not results:
            raise fail(f"the storage holds no images{f' under label {label!r}' if label else ''}")
    else:
        if not expand_paths(paths or []):
            raise fail("no image files found in the given paths")
        results = loaded.predict(paths or [])
    counts = {s: sum(r.status == s for r in results) for s in STATUSES}
    reasons = dict(Counter(r.code or "unknown" for r in results if r.status in ("no_face", "rejected")))
    nothing_scored = None if counts["ok"] else nothing_kept_line(
        len(results), reasons, counts["error"], loaded.settings, kept_word="scored", whose="the model's")
    if as_json:
        emit_json({"model": str(model), "positive": loaded.labels[0], "threshold": loaded.threshold,
                   "calibration": loaded.calibrator.name, "counts": counts,
                   "rejection_settings": settings_of_reasons(reasons, loaded.settings), "nothing_scored": nothing_scored,
                   "predictions": [r.as_dict() for r in results]})
    else:
        table = Table(title=f"{len(results)} images, model {printable(model)}: {loaded.labels[0]} when the calibrated "
                            f"p >= {loaded.threshold:g}")
        for col in ("path", "result", f"p({loaded.labels[0]})", "detail"):
            table.add_column(col)
        for r in results:
            table.add_row(r.path, _shown_status(r), f"{r.probability:.3f}" if r.probability is not None else "", _detail(r))
        out.print(table)
        if nothing_scored:
            out.print(Text(nothing_scored, style="bold yellow"), highlight=False)
    if counts["error"]:
        raise typer.Exit(EXIT_FAILED)


def _shown_status(prediction: Any) -> str | Text:
    if prediction.status == "ok":
        return prediction.label
    if prediction.status == "error":
        return Text("error", style="red")
    return "no face" if prediction.status == "no_face" else "rejected"


def _detail(prediction: Any) -> str:
    """The reason, and for the chain's decision the model's setting that made it (prediction runs
    with the training's chain settings, so changing it means retraining)."""
    detail = prediction.reason or ""
    if prediction.setting:
        detail += f"; decided by the model's {prediction.setting} (retrain to change it)"
    return detail
