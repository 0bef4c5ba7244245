"""The feature table: stored images (from the manifest) -> features (cached) -> X, y, groups.

The pieces are separate functions so another compute engine (Dask) can reuse them:
:func:`load_rows` lists the dataset, :func:`extract_features` computes the features of
one decoded image, :func:`build_feature_table` does the whole job locally with a
process pool (:mod:`.feature_tasks`) (dlib holds the GIL, so threads would not use the second core) and the
manifest's ``features`` table as cache (:meth:`Manifest.get_features`/``put_features``).

Images are read through the storage backend (:class:`~.stored.StoredReader`), in this
process, and their bytes travel to the worker with the task: a worker never opens a
storage backend. The backend may hold credentials, connections and a configured client
that need not (and for a cluster should not) exist on every worker; reading is I/O that
the parent overlaps with the workers' CPU work by reading ahead a bounded window, so
memory stays bounded too. Images are decoded by the installed step that *provides*
``"image"`` (``Step.provides``), never by a step's name.

Cache key: content hash, group name and :func:`cache_version`, which combines the
extractor's ``version``, its non-default options and the face annotations (a new face
detector changes the box, and so the features, of the same bytes).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ...core.app import App
from ...core.errors import RunFailed
from ...core.components import FeatureExtractor, StoredImage, steps_providing
from ...core.events import ImageEvent
from ...core.manifest import Manifest
from ...core.plugins import Registry
from ...core.settings import Settings, SettingsError, TrainPipeline
from .baselines import FACTS_VERSION, FileFacts, file_facts
from .leak_inputs import (LIKENESS, LIKENESS_VERSION, PERSON, image_hashes, person_extractor, row_hashes,
                          table_grouping)
from .feature_tasks import Task, reader_fetch, run_tasks
from .normalize import Recipe
from ..dataset_care.reviewed import label_sql, trainable_sql
from ..dataset_care.stored import StoredReader

log = logging.getLogger("selfiescope.dataset")
NAN = float("nan")
Progress = Callable[[int, int], None]


class DatasetError(RunFailed):
    """The dataset cannot be used for training (too few images, a missing label); phrased for the user."""


@dataclass
class DatasetRow:
    content_hash: str
    id: str | None
    label: str
    job: str
    location: str  # the storage backend's own string: read it with the backend, never open it as a path
    box: list[int] | None
    face_area: float | None
    n_faces: int
    phash: str | None
    collected_label: str | None = None  # the label it was stored under, when a review changed it
    post: str | None = None  # "source:post_id": photos of one post share a CV group
    owner: str | None = None  # the manifest's pseudonymised owner: one account's photos share a CV group

    @property
    def stored(self) -> StoredImage:
        return StoredImage(self.id or self.content_hash[:16], self.collected_label or self.label, self.location,
                           self.content_hash)


@dataclass
class FeatureTable:
    """``X`` (n, d) float64 with ``columns`` "group.feature"; ``y`` 1 = positive label; ``groups`` dedup clusters."""

    X: np.ndarray
    y: np.ndarray
    groups: np.ndarray
    rows: list[DatasetRow]
    columns: list[str]
    computed: int = 0  # images whose features were (partly) computed in this call
    cached: int = 0  # images served entirely from the cache
    failed: dict[str, str] = field(default_factory=dict)  # content hash -> reason (row dropped)
    facts: list[FileFacts] = field(default_factory=list)  # header facts per row (the confounder baselines)
    grouping: dict[str, Any] = field(default_factory=dict)  # what ``groups`` joined (leak_groups.Grouping.summary)
    extractors: list[FeatureExtractor] = field(default_factory=list)  # what computed ``columns``
    image_step: str = ""  # the step that decoded the images for them
    predict_steps: list[str] = field(default_factory=list)  # the chain that gives predict the same inputs

    def __iter__(self):  # X, y, groups, rows = build_feature_table(...)
        return iter((self.X, self.y, self.groups, self.rows))


def face_dict(box: list[int] | None, face_area: float | None, n_faces: int, exif: bytes | None) -> dict[str, Any]:
    """The ``face`` argument of :meth:`FeatureExtractor.extract` (see the ``selfiescope_features`` hookspec)."""
    return {"box": list(box) if box else None, "face_area": face_area, "n_faces": int(n_faces or 0), "exif": exif}


def event_face_dict(event: ImageEvent, exif: bytes | None) -> dict[str, Any]:
    """The same dict for an event fresh from the chain (as :meth:`Manifest.record` stores it)."""
    face = event.largest_face
    return face_dict(face.as_list() if face else None, event.face_area, len(event.faces), exif)


def load_rows(manifest: Manifest, labels: Sequence[str]) -> list[DatasetRow]:
    """Stored images (accepted, with a location) whose label, as reviewed, is one of ``labels``,
    leaving out those a review excluded; in a stable order (first seen)."""
    marks = ",".join("?" * len(labels))
    label = label_sql(manifest)
    have = {row[1] for row in manifest.execute("PRAGMA table_info(images)").fetchall()}
    owner = "owner" if "owner" in have else "NULL AS owner"  # a manifest from before owners were kept
    rows = manifest.query(
        f"SELECT content_hash, id, {label} AS effective, label, job, location, face_box, face_area, n_faces, phash,"
        f" source, post_id, {owner}"
        f" FROM images WHERE decision='accepted' AND location IS NOT NULL AND {label} IN ({marks})"
        f" AND {trainable_sql(manifest)} ORDER BY first_seen, content_hash",
        tuple(labels),
    )
    return [DatasetRow(
        r["content_hash"], r["id"], r["effective"], r["job"] or "", r["location"],
        json.loads(r["face_box"]) if r["face_box"] else None,
        r["face_area"], r["n_faces"] or 0, r["phash"], r["label"] if r["label"] != r["effective"] else None,
        f"{r['source']}:{r['post_id']}" if r["post_id"] else None, r["owner"] or None,
    ) for r in rows]


def preferred_steps(settings: Settings) -> list[str]:
    """The steps of the configured collect chains, in order: when several installed steps
    provide an annotation, the one collection used is preferred."""
    out: list[str] = []
    for p in settings.pipelines.values():
        for name in getattr(p, "chain", None) or []:
            if name not in out:
                out.append(name)
    return out


def image_step(registry: Registry, settings: Settings) -> str:
    """The installed step that decodes stored bytes for training: it provides ``"image"``
    (and, preferably, ``"exif"``: the raw EXIF block the features read)."""
    preferred = preferred_steps(settings)
    candidates = [n for n in steps_providing(registry.steps, "image", preferred) if not registry.steps[n].requires]
    if not candidates:
        raise SettingsError(["no installed chain step provides 'image' (decodes images); training needs one"])
    pool = [n for n in candidates if n in preferred] or candidates  # what collection used comes first
    with_exif = [n for n in pool if "exif" in registry.steps[n].provides]
    return (with_exif or pool)[0]


def extractor_options(extractor: FeatureExtractor) -> dict[str, Any]:
    return extractor.options.model_dump(mode="json", exclude_defaults=True)


def cache_version(extractor: FeatureExtractor, face: dict[str, Any]) -> str:
    parts = [extractor.version]
    if opts := extractor_options(extractor):
        parts.append(hashlib.sha256(json.dumps(opts, sort_keys=True).encode()).hexdigest()[:8])
    key = json.dumps([face.get("box"), face.get("n_faces"), round(face.get("face_area") or 0.0, 6)])
    parts.append(hashlib.sha256(key.encode()).hexdigest()[:10])
    return "+".join(parts)


def make_extractors(registry: Registry, settings: Settings, pipeline: TrainPipeline) -> list[FeatureExtractor]:
    extractors = []
    for group in pipeline.features:
        if group not in registry.features:
            known = ", ".join(sorted(registry.features)) or "none"
            raise SettingsError([f"unknown feature group {group!r} (available: {known})"])
        cls = registry.features[group]
        extractors.append(cls(cls.Options.model_validate(settings.component_options(group, pipeline))))
    return extractors


def columns_of(extractors: Sequence[FeatureExtractor]) -> list[str]:
    return [f"{e.name}.{f}" for e in extractors for f in e.feature_names()]


def extract_features(image_rgb: np.ndarray, face: dict[str, Any], groups: Sequence[FeatureExtractor]) -> dict[str, float]:
    """All features of one image as ``{"group.feature": value}``. A group that fails raises."""
    out: dict[str, float] = {}
    for extractor in groups:
        values = extractor.extract(image_rgb, face)
        out.update({f"{extractor.name}.{k}": float(values.get(k, NAN)) for k in extractor.feature_names()})
    return out


def default_workers(pipeline: TrainPipeline) -> int:
    return pipeline.workers or os.cpu_count() or 1


def require_dataset(root: Path) -> Path:
    """``root``, where a dataset's manifest must be before anything opens a backend on it."""
    if not (root / "manifest.sqlite").exists():
        raise DatasetError(f"no dataset at {root}: {root / 'manifest.sqlite'} does not exist (collect images first)")
    return root


def build_feature_table(
    app: App,
    pipeline: TrainPipeline,
    *,
    reader: StoredReader | None = None,
    manifest: Manifest | None = None,
    progress: Progress | None = None,
    runner: Callable[..., None] | None = None,
) -> FeatureTable:
    """Every accepted image with a wanted label -> features (from cache or computed) -> arrays.

    ``reader`` reads the stored images: a command that reads them again later (training's
    counterfactual and report) opens one for the whole command and passes it; without one,
    a reader is opened for this table alone. ``runner`` replaces :func:`run_tasks` (same
    arguments), e.g. to compute on a Dask cluster.
    """
    root = require_dataset(Path(pipeline.dataset_root or app.settings.storage.root))  # the manifest's folder
    own = manifest is None
    manifest = manifest or Manifest.at_root(root)
    try:
        if reader is not None:
            return _build(app, pipeline, manifest, reader, progress, runner or run_tasks)
        with StoredReader(app, root) as own_reader:
            return _build(app, pipeline, manifest, own_reader, progress, runner or run_tasks)
    finally:
        if own:
            manifest.close()


FACTS = "~file_facts"  # the feature cache's name for header facts (no feature group can be named so)
READ_AHEAD = 16  # images read from storage ahead of the workers (bounded memory, hidden latency)


def _build(
    app: App, pipeline: TrainPipeline, manifest: Manifest, reader: StoredReader,
    progress: Progress | None,
    runner: Callable[..., None] = run_tasks,
) -> FeatureTable:
    settings, registry = app.settings, app.registry
    decode_name = image_step(registry, settings)
    extractors = make_extractors(registry, settings, pipeline)
    rows = load_rows(manifest, pipeline.labels)
    features: dict[str, dict[str, dict[str, float]]] = {r.content_hash: {} for r in rows}
    normalize = Recipe(pipeline.normalize_side, pipeline.normalize_quality) if pipeline.normalize else None
    suffix = normalize.cache_suffix() if normalize else ""
    versions = {r.content_hash: {e.name: cache_version(e, face_dict(r.box, r.face_area, r.n_faces, None)) + suffix
                                 for e in extractors} for r in rows}
    person = person_extractor(registry, pipeline)  # the descriptor for the person groups alone, if needed
    if person:  # computed on the picture as decoded: normalize does not change it
        for r in rows:
            versions[r.content_hash][PERSON] = cache_version(person, face_dict(r.box, r.face_area, r.n_faces, None))
    cached = manifest.get_features([(h, name, v) for h, vs in versions.items() for name, v in vs.items()]
                                   + [(r.content_hash, FACTS, FACTS_VERSION) for r in rows]
                                   + [(r.content_hash, LIKENESS, LIKENESS_VERSION) for r in rows])
    facts: dict[str, FileFacts] = {}
    likeness: dict[str, dict[str, int]] = {}  # the near-copy link's hashes, from the stored images
    for (content_hash, name, _version), values in cached.items():
        if name == FACTS:
            facts[content_hash] = FileFacts(**values)
        elif name == LIKENESS:
            likeness[content_hash] = values
        else:
            features[content_hash][name] = values
    tasks = []
    for r in rows:
        missing = [e.name for e in extractors if e.name not in features[r.content_hash]]
        unknown = person.name if person and PERSON not in features[r.content_hash] else None
        if missing or unknown:
            tasks.append(Task(r.content_hash, r.stored, face_dict(r.box, r.face_area, r.n_faces, None), missing,
                              normalize, person=unknown))
    failed: dict[str, str] = {}
    batch: list[tuple[str, str, str, dict[str, float]]] = []
    done = 0

    def flush() -> None:
        manifest.put_features(batch)
        batch.clear()

    def on_result(content_hash: str, result: dict[str, dict[str, float]] | None, error: str | None) -> None:
        nonlocal done
        done += 1
        if result is None:
            failed[content_hash] = error or "unknown error"
            log.warning("features of %s failed: %s", content_hash[:12], error)
        else:
            for name, values in result.items():
                features[content_hash][name] = values
                batch.append((content_hash, name, versions[content_hash][name], values))
            if len(batch) >= 256:
                flush()
        if progress:
            progress(done, len(tasks))

    chain = predict_chain(registry, settings, decode_name, faces=any(r.face_area is not None for r in rows))
    # the decoding step; with normalize, predict's chain after it finds the face in each square
    names = [decode_name, *(n for n in chain if n != decode_name)] if normalize else [decode_name]
    specs = [(registry.steps[n], settings.component_options(n)) for n in names]
    def note_facts(task: Task) -> Task:  # header facts and hashes come from the bytes read for the features
        if task.data is not None:
            note_read(task.content_hash, task.data)
        return task

    def note_read(content_hash: str, data: bytes) -> None:
        if content_hash not in facts:
            facts[content_hash] = file_facts(data)
            batch.append((content_hash, FACTS, FACTS_VERSION, vars(facts[content_hash])))
        # bytes that do not decode are hashed again next time (a restored file then counts)
        if content_hash not in likeness and (hashes := image_hashes(data)):
            likeness[content_hash] = hashes
            batch.append((content_hash, LIKENESS, LIKENESS_VERSION, hashes))

    in_tasks = {t.content_hash for t in tasks}
    facts_only = [r for r in rows if (r.content_hash not in facts or r.content_hash not in likeness)
                  and r.content_hash not in in_tasks]
    try:
        if tasks or facts_only:
            fetch = reader_fetch(reader, READ_AHEAD)
            for row, data, _error in reader.prefetch(facts_only, lambda r: r.stored, READ_AHEAD):
                if data is not None:  # a cache from before facts or hashes were cached: read once more
                    note_read(row.content_hash, data)
            runner(tasks, specs, [*extractors, *([person] if person else [])], default_workers(pipeline), on_result,
                   fetch=lambda todo: map(note_facts, fetch(todo)))
    finally:
        flush()
    columns = columns_of(extractors)
    kept = [r for r in rows if r.content_hash not in failed]
    X = np.full((len(kept), len(columns)), np.nan)
    for i, r in enumerate(kept):
        values = features[r.content_hash]
        X[i] = [values.get(c.split(".", 1)[0], {}).get(c.split(".", 1)[1], NAN) for c in columns]
    positive = pipeline.labels[0]
    y = np.array([1 if r.label == positive else 0 for r in kept], dtype=np.int64)
    grouping = table_grouping(X, columns, kept, pipeline, y,
                              hashes=[row_hashes(likeness.get(r.content_hash), r.phash) for r in kept],
                              persons=[features[r.content_hash].get(PERSON) for r in kept] if person else None)
    return FeatureTable(X, y, grouping.ids, kept, columns, computed=len(tasks) - len(failed),
                        cached=len(rows) - len(tasks), failed=failed,
                        facts=[facts.get(r.content_hash) or FileFacts() for r in kept], grouping=grouping.summary,
                        extractors=extractors, image_step=decode_name,
                        predict_steps=chain)


def predict_chain(registry: Registry, settings: Settings, first: str, faces: bool = True) -> list[str]:
    """The steps predict runs before the features: what provides the decoded image (``first``,
    the step that decoded the table's images) and, when collection found faces (``faces``),
    its faces (the collect chains' own steps preferred). A dataset collected without a face
    step gives a chain without one: predict then sees every picture as training did, instead
    of refusing those without a face. Saved by name in the model's schema, so a model keeps
    the steps it was trained with."""
    from ...core.components import chain_providing

    try:
        return chain_providing(registry.steps, ["image", "faces"] if faces else ["image"],
                               [first, *preferred_steps(settings)])
    except LookupError as exc:
        raise SettingsError([f"{exc}: predict needs the image and its faces like collection had them"]) from None

