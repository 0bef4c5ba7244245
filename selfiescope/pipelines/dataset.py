"""The feature table: stored images (from the manifest) -> features (cached) -> X, y, groups.

The pieces are separate functions so another compute engine (Dask) can reuse them:
:func:`load_rows` lists the dataset, :func:`extract_features` computes the features of
one decoded image, :func:`build_feature_table` does the whole job locally with a
process pool (dlib holds the GIL, so threads would not use the second core) and the
manifest's ``features`` table as cache.

Cache key: content hash, group name and :func:`cache_version`, which combines the
extractor's ``version``, its non-default options and the face annotations (a new face
detector changes the box, and so the features, of the same bytes).
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import json
import logging
import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..core.components import FeatureExtractor, Step
from ..core.events import ImageEvent, Origin, Reject
from ..core.manifest import Manifest
from ..core.plugins import Registry
from ..core.settings import Settings, SettingsError, TrainPipeline
from .groups import near_duplicate_groups
from .normalize import cache_suffix

log = logging.getLogger("selfiescope.dataset")
NAN = float("nan")
Progress = Callable[[int, int], None]


class DatasetError(Exception):
    """The dataset cannot be used for training (too few images, a missing label); phrased for the user."""


@dataclass
class DatasetRow:
    content_hash: str
    id: str | None
    label: str
    job: str
    path: Path
    box: list[int] | None
    face_area: float | None
    n_faces: int
    phash: str | None


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

    def __iter__(self):  # X, y, groups, rows = build_feature_table(...)
        return iter((self.X, self.y, self.groups, self.rows))


def face_dict(box: list[int] | None, face_area: float | None, n_faces: int, exif: bytes | None) -> dict[str, Any]:
    """The ``face`` argument of :meth:`FeatureExtractor.extract` (see the ``selfiescope_features`` hookspec)."""
    return {"box": list(box) if box else None, "face_area": face_area, "n_faces": int(n_faces or 0), "exif": exif}


def event_face_dict(event: ImageEvent, exif: bytes | None) -> dict[str, Any]:
    """The same dict for an event fresh from the chain (as :meth:`Manifest.record` stores it)."""
    face = event.largest_face
    return face_dict(face.as_list() if face else None, event.face_area, len(event.faces), exif)


def _resolve(location: str | None, origin_path: str | None, root: Path) -> Path | None:
    for candidate in (location, origin_path):
        if candidate:
            path = Path(candidate)
            return path if path.is_absolute() else root / path
    return None


def load_rows(manifest: Manifest, labels: Sequence[str], root: Path) -> list[DatasetRow]:
    """Accepted images with one of ``labels``, in a stable order (first seen)."""
    marks = ",".join("?" * len(labels))
    rows = manifest.query(
        f"SELECT content_hash, id, label, job, location, origin_path, face_box, face_area, n_faces, phash"
        f" FROM images WHERE decision='accepted' AND label IN ({marks}) ORDER BY first_seen, content_hash",
        tuple(labels),
    )
    out = []
    for r in rows:
        path = _resolve(r["location"], r["origin_path"], root)
        if path is None:
            continue
        out.append(DatasetRow(
            r["content_hash"], r["id"], r["label"], r["job"] or "", path,
            json.loads(r["face_box"]) if r["face_box"] else None,
            r["face_area"], r["n_faces"] or 0, r["phash"],
        ))
    return out


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


# --- one image, in a worker process -----------------------------------------------------

@dataclass
class Task:
    content_hash: str
    path: Path
    face: dict[str, Any]  # without exif: the worker reads it from the file
    groups: list[str]  # names of the groups to compute (the others are cached)
    normalize: tuple[int, int] | None = None  # (side, JPEG quality): re-encode before features


_worker_state: dict[str, Any] = {}
# Starting a process and loading dlib's models there costs seconds (benchmarks/bench_features.py):
# fewer images than this are computed in this process.
MIN_POOL_TASKS = 200


def _init_pool_worker(decode_cls: type[Step], decode_options: dict[str, Any], extractors: list[FeatureExtractor]) -> None:
    import cv2

    cv2.setNumThreads(1)  # one process per core already; OpenCV's own threads would only contend
    _init_worker(decode_cls, decode_options, extractors)


def _init_worker(decode_cls: type[Step], decode_options: dict[str, Any], extractors: list[FeatureExtractor]) -> None:
    _worker_state["decode"] = decode_cls(decode_cls.Options.model_validate(decode_options), None)
    _worker_state["extractors"] = {e.name: e for e in extractors}


def decode_with_step(step: Step, data: bytes, label: str = "") -> ImageEvent:
    """Decode bytes with the chain's ``decode`` step, exactly as collection did. Raises Reject."""
    event = ImageEvent(origin=Origin(source="dataset"), label=label, data=data)
    result = step.process(event)
    if inspect.isawaitable(result):
        asyncio.run(result)
    if event.image is None:
        raise Reject("not_decoded", f"step {step.name!r} set no image")
    return event


def _run_task(task: Task) -> tuple[str, dict[str, dict[str, float]] | None, str | None]:
    """-> (content hash, {group: features}, error). Never raises: a bad file must not stop training."""
    from ..plugins.features import exif_block

    try:
        data = task.path.read_bytes()
        event = decode_with_step(_worker_state["decode"], data)
        face = {**task.face, "exif": exif_block(data)}
        image = event.image
        if task.normalize:
            from .normalize import normalize_image

            image, face = normalize_image(image, face, *task.normalize)
        out = {}
        for name in task.groups:
            extractor = _worker_state["extractors"][name]
            values = extractor.extract(image, face)
            out[name] = {k: float(values.get(k, NAN)) for k in extractor.feature_names()}
        return task.content_hash, out, None
    except Reject as rej:
        return task.content_hash, None, f"{rej.code}: {rej.reason}"
    except Exception as exc:  # noqa: BLE001 - reported per image, the rest goes on
        return task.content_hash, None, f"{type(exc).__name__}: {exc}"


def run_tasks(
    tasks: list[Task],
    decode: tuple[type[Step], dict[str, Any]],
    extractors: list[FeatureExtractor],
    workers: int,
    on_result: Callable[[str, dict[str, dict[str, float]] | None, str | None], None],
) -> None:
    """Run tasks on ``workers`` processes (in this process for one worker or few images).

    Processes are spawned, not forked (the caller may hold threads and locks): a script
    that trains must guard its entry point with ``if __name__ == "__main__":``.
    """
    init_args = (decode[0], decode[1], extractors)
    if workers <= 1 or len(tasks) < MIN_POOL_TASKS:
        saved = dict(_worker_state)
        _init_worker(*init_args)
        try:
            for task in tasks:
                on_result(*_run_task(task))
        finally:
            _worker_state.clear()
            _worker_state.update(saved)
        return
    ctx = multiprocessing.get_context("spawn")  # no fork: the parent may hold threads and locks
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_pool_worker, initargs=init_args) as pool:
        pending: set[Future] = set()
        todo = iter(tasks)
        for task in todo:  # keep a bounded number of tasks in flight
            pending.add(pool.submit(_run_task, task))
            if len(pending) >= workers * 4:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    on_result(*fut.result())
        for fut in pending:
            on_result(*fut.result())


def default_workers(pipeline: TrainPipeline) -> int:
    return pipeline.workers or os.cpu_count() or 1


def build_feature_table(
    settings: Settings,
    pipeline: TrainPipeline,
    registry: Registry,
    *,
    manifest: Manifest | None = None,
    progress: Progress | None = None,
    runner: Callable[..., None] | None = None,
) -> FeatureTable:
    """Every accepted image with a wanted label -> features (from cache or computed) -> arrays.

    ``runner`` replaces :func:`run_tasks` (same arguments), e.g. to compute on a Dask cluster.
    """
    root = Path(pipeline.dataset_root or settings.storage.root)
    if not (root / "manifest.sqlite").exists():
        raise DatasetError(f"no dataset at {root}: {root / 'manifest.sqlite'} does not exist (collect images first)")
    own = manifest is None
    manifest = manifest or Manifest.at_root(root)
    try:
        return _build(settings, pipeline, registry, manifest, root, progress, runner or run_tasks)
    finally:
        if own:
            manifest.close()


def _build(
    settings: Settings, pipeline: TrainPipeline, registry: Registry, manifest: Manifest, root: Path,
    progress: Progress | None,
    runner: Callable[..., None] = run_tasks,
) -> FeatureTable:
    if "decode" not in registry.steps:
        raise SettingsError(["the 'decode' step is not installed; training decodes stored images with it"])
    extractors = make_extractors(registry, settings, pipeline)
    rows = load_rows(manifest, pipeline.labels, root)
    features: dict[str, dict[str, dict[str, float]]] = {r.content_hash: {} for r in rows}
    normalize = (pipeline.normalize_side, pipeline.normalize_quality) if pipeline.normalize else None
    suffix = cache_suffix(*normalize) if normalize else ""
    versions = {r.content_hash: {e.name: cache_version(e, face_dict(r.box, r.face_area, r.n_faces, None)) + suffix
                                 for e in extractors} for r in rows}
    marks = ",".join("?" * len(extractors))
    wanted = {(h, name, v) for h, vs in versions.items() for name, v in vs.items()}
    for rec in manifest.query(
        f"SELECT content_hash, extractor, version, data FROM features WHERE extractor IN ({marks})",
        tuple(e.name for e in extractors),
    ):
        key = (rec["content_hash"], rec["extractor"], rec["version"])
        if key in wanted:
            features[key[0]][key[1]] = json.loads(rec["data"])
    tasks = []
    for r in rows:
        missing = [e.name for e in extractors if e.name not in features[r.content_hash]]
        if missing:
            tasks.append(Task(r.content_hash, r.path, face_dict(r.box, r.face_area, r.n_faces, None), missing, normalize))
    failed: dict[str, str] = {}
    batch: list[tuple[str, str, str, str]] = []
    done = 0

    def flush() -> None:
        if batch:
            manifest.executemany(
                "INSERT OR REPLACE INTO features(content_hash, extractor, version, data) VALUES (?,?,?,?)", batch
            )
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
                batch.append((content_hash, name, versions[content_hash][name], json.dumps(values)))
            if len(batch) >= 256:
                flush()
        if progress:
            progress(done, len(tasks))

    decode_cls = registry.steps["decode"]
    decode_opts = settings.component_options("decode")
    try:
        runner(tasks, (decode_cls, decode_opts), extractors, default_workers(pipeline), on_result)
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
    groups = near_duplicate_groups([r.phash for r in kept], pipeline.group_distance)
    return FeatureTable(X, y, groups, kept, columns, computed=len(tasks) - len(failed), cached=len(rows) - len(tasks), failed=failed)
