"""The latest model's out-of-fold probabilities, for "most likely mislabeled first".

``train`` writes ``predictions.csv`` into the model folder: per training image its
calibrated out-of-fold probability of the positive label (the model never saw the image
when it scored it). The latest model trained on this dataset is the newest row of the
manifest's ``models`` table whose folder still has the file (or a train pipeline's
``model_dir`` in settings).
"""

from __future__ import annotations

import csv
import json
import logging
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ..core.settings import Settings, TrainPipeline

log = logging.getLogger("selfiescope.review")
PREDICTIONS = "predictions.csv"


@dataclass
class ModelProbabilities:
    folder: Path | None = None
    positive: str | None = None
    negative: str | None = None
    by_hash: dict[str, float] = field(default_factory=dict)


def _candidates(db: sqlite3.Connection, settings: Settings) -> list[Path]:
    try:
        rows = db.execute("SELECT path FROM models ORDER BY trained DESC").fetchall()
    except sqlite3.OperationalError:
        rows = []
    found = [Path(r[0]) for r in rows]
    found += [Path(p.model_dir).expanduser() for p in settings.pipelines.values() if isinstance(p, TrainPipeline)]
    return found


def _read(folder: Path) -> ModelProbabilities | None:
    try:
        metrics = json.loads((folder / "metrics.json").read_text())
        labels = metrics.get("labels") or {}
        with (folder / PREDICTIONS).open(newline="") as fh:
            by_hash = _probabilities(csv.reader(fh))
    except (OSError, ValueError, AttributeError, csv.Error) as exc:
        log.debug("no usable predictions in %s: %s", folder, exc)
        return None
    return ModelProbabilities(folder, labels.get("positive"), labels.get("negative"), by_hash)


def _probabilities(rows: Iterator[list[str]]) -> dict[str, float]:
    """``content_hash`` -> the calibrated out-of-fold probability, else the raw one, by column
    position (read once per read of the manifest: a dict per row would cost a second at 100k)."""
    header = next(rows, [])
    where = {name: k for k, name in enumerate(header)}
    if "content_hash" not in where:
        return {}
    h = where["content_hash"]
    columns = [where[c] for c in ("calibrated_oof_probability", "oof_probability") if c in where]
    by_hash: dict[str, float] = {}
    for row in rows:
        value = next((row[c] for c in columns if c < len(row) and row[c]), None)
        if value and h < len(row) and row[h]:
            by_hash[row[h]] = float(value)
    return by_hash


def latest_probabilities(db: sqlite3.Connection, settings: Settings) -> ModelProbabilities:
    """The newest readable model's probabilities (empty when there is none)."""
    for folder in _candidates(db, settings):
        got = _read(folder)
        if got is not None:
            return got
    return ModelProbabilities()


def mislabeled_count(predictions_csv: Path, positive: str) -> int:
    """Training images whose label the out-of-fold model contradicts (|label - p| > 0.5)."""
    count = 0
    with predictions_csv.open(newline="") as fh:
        for row in csv.DictReader(fh):
            p = float(row.get("calibrated_oof_probability") or row["oof_probability"])
            count += abs((1.0 if row["label"] == positive else 0.0) - p) > 0.5
    return count
