"""Features of one image, in a worker process: the tasks :func:`.dataset.build_feature_table` sends.

A task carries the stored bytes (the parent reads them through the storage backend, see
:mod:`.dataset`), the face collection found and the feature groups still missing from the
cache. A worker decodes the bytes with the step that provides ``"image"``, computes the
person descriptor on the picture as decoded when the CV groups need it
(:data:`.leak_inputs.PERSON`), normalizes when asked (finding the face again in the square
with predict's own chain, :func:`chain_faces`), and runs the extractors. :func:`run_tasks`
runs them here or on a process pool; ``dask_train.feature_runner`` on a cluster.
"""

from __future__ import annotations

import asyncio
import inspect
import multiprocessing
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from ...core.components import FeatureExtractor, Step, StoredImage
from ...core.events import FaceBox, ImageEvent, Origin, Reject
from ..dataset_care.stored import StoredReader
from .leak_inputs import PERSON
from .normalize import Recipe, faces_steps, normalize_image, square_event

NAN = float("nan")


@dataclass
class Task:
    content_hash: str
    stored: StoredImage  # where the backend keeps the bytes (read by the parent, see the module docstring)
    face: dict[str, Any]  # without exif: the decoding step puts it on the event
    groups: list[str]  # names of the groups to compute (the others are cached)
    normalize: Recipe | None = None  # normalize before features (the pipeline's normalize = true)
    person: str | None = None  # the extractor whose values, as decoded, are kept for the person groups
    data: bytes | None = None  # the stored bytes, filled in just before the task is sent
    error: str | None = None  # why the bytes could not be read (the row is dropped with it)


Fetch = Callable[[Iterable[Task]], Iterator[Task]]  # fills Task.data, reading ahead


def reader_fetch(reader: StoredReader, ahead: int) -> Fetch:
    """Fill tasks' bytes through the storage backend, ``ahead`` reads in flight."""
    def fetch(tasks: Iterable[Task]) -> Iterator[Task]:
        for task, data, error in reader.prefetch(tasks, lambda t: t.stored, ahead):
            yield replace(task, data=data, error=error)
    return fetch


_worker_state: dict[str, Any] = {}
# Starting a process and loading dlib's models there costs seconds (benchmarks/bench_features.py):
# fewer images than this are computed in this process.
MIN_POOL_TASKS = 200

# The steps a worker sets up, as (class, options): the first decodes the stored bytes; with
# normalize, all of them (predict's chain: the image and its faces) find the face in the square.
StepSpecs = Sequence[tuple[type[Step], dict[str, Any]]]


def _init_pool_worker(steps: StepSpecs, extractors: list[FeatureExtractor]) -> None:
    import cv2

    cv2.setNumThreads(1)  # one process per core already; OpenCV's own threads would only contend
    _init_worker(steps, extractors)


def _init_worker(steps: StepSpecs, extractors: list[FeatureExtractor]) -> None:
    made = [cls(cls.Options.model_validate(options), None) for cls, options in steps]
    _worker_state["image_step"] = made[0]
    _worker_state["square_faces"] = chain_faces(made)
    _worker_state["extractors"] = {e.name: e for e in extractors}


def run_step(step: Step, event: ImageEvent) -> None:
    """One step on one event, outside a run's event loop. Raises Reject."""
    result = step.process(event)
    if inspect.isawaitable(result):
        asyncio.run(result)


def decode_with_step(step: Step, data: bytes, label: str = "") -> ImageEvent:
    """Decode bytes with the step that provides ``"image"``, exactly as collection did. Raises Reject."""
    event = ImageEvent(origin=Origin(source="dataset"), label=label, data=data)
    run_step(step, event)
    if event.image is None:
        raise Reject("not_decoded", f"step {step.name!r} set no image")
    return event


def chain_faces(steps: Sequence[Step]) -> Callable[[bytes, np.ndarray], list[FaceBox]]:
    """The face steps of ``steps`` (predict's chain) on a normalized square: the faces found,
    also when the step then turned the picture away (too small a share, under the threshold)."""
    finders = faces_steps(steps)

    def find(data: bytes, pixels: np.ndarray) -> list[FaceBox]:
        event = square_event(data, pixels)
        for step in finders:
            try:
                run_step(step, event)
            except Reject:
                break
        return event.faces
    return find


def _run_task(task: Task) -> tuple[str, dict[str, dict[str, float]] | None, str | None]:
    """-> (content hash, {group: features}, error). Never raises: a bad file must not stop training."""
    if task.data is None:
        return task.content_hash, None, task.error or "the stored bytes were not read"
    try:
        event = decode_with_step(_worker_state["image_step"], task.data)
        face = {**task.face, "exif": event.exif}
        image = event.image
        out = {}
        if task.person:  # on the picture as collected, before any normalize: the person, not the frame
            extractor = _worker_state["extractors"][task.person]
            values = extractor.extract(image, face)
            out[PERSON] = {k: float(values.get(k, NAN)) for k in extractor.feature_names()}
        if task.normalize and task.groups:
            image, face = normalize_image(image, face, task.normalize, find_faces=_worker_state["square_faces"])
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
    steps: StepSpecs,
    extractors: list[FeatureExtractor],
    workers: int,
    on_result: Callable[[str, dict[str, dict[str, float]] | None, str | None], None],
    fetch: Fetch | None = None,
) -> None:
    """Run tasks on ``workers`` processes (in this process for one worker or few images).

    ``steps``: the step that decodes the stored bytes, then (for normalize) the rest of
    predict's chain. ``fetch`` fills each task's bytes as it is sent (None: the tasks carry
    them already).

    Processes are spawned, not forked (the caller may hold threads and locks): a script
    that trains must guard its entry point with ``if __name__ == "__main__":``.
    """
    init_args = (steps, extractors)
    filled = fetch(tasks) if fetch else iter(tasks)
    if workers <= 1 or len(tasks) < MIN_POOL_TASKS:
        saved = dict(_worker_state)
        _init_worker(*init_args)
        try:
            for task in filled:
                on_result(*_run_task(task))
        finally:
            _worker_state.clear()
            _worker_state.update(saved)
        return
    ctx = multiprocessing.get_context("spawn")  # no fork: the parent may hold threads and locks
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_pool_worker, initargs=init_args) as pool:
        pending: set[Future] = set()
        for task in filled:  # keep a bounded number of tasks in flight
            pending.add(pool.submit(_run_task, task))
            if len(pending) >= workers * 4:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    on_result(*fut.result())
        for fut in pending:
            on_result(*fut.result())
