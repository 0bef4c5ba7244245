"""The Dask executor of the collect pipeline (``import``, ``scrape``, ``clean``).

The chain is split in two by what its steps declare. Its leading ``worker_safe`` steps
(``[compute] worker_steps`` may name a shorter list) run on the workers, in batches, with
the same step classes and :func:`~selfiescope.core.engine.run_chain` as the local engine;
the workers also run the ``precompute`` of the remaining steps (dedup's hashes). Each
worker sends back a small record per image (hashes, size, face boxes, decision), never
pixels. The remaining steps and every manifest write run on the client, one result at a
time and in input order: SQLite keeps a single writer, dedup sees images in the same order
as a one-worker local run, and a batch that a dead worker leaves behind is recomputed by
Dask and still recorded once.

A source with ``remote_items`` (the folder source, on a shared filesystem) sends paths and
applies its own filters, such as the resume skip, on the client; any other source sends
the bytes it downloaded along with the task. Start, finish and cancel are
:mod:`.lifecycle`'s, as for the local engine.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib
import logging
import threading
import time
import types
from collections import deque
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...core.app import App
from ...core.components import Job, Source, Step, job_events
from ...core.compute import dask_client, worker_count
from ...core.context import RunContext
from ...core.decisions import admit, settle, stored_for_job
from ...core.engine import run_chain
from ...core.events import Decision, FaceBox, ImageEvent, Origin
from ...core.manifest import plain_notes
from ...core.privacy import scrub_origin
from ...core.plugins import Registry
from ...core.settings import ScrapePipeline, Settings
from ...core.stats import RunStats
from ...core.text import printable
from ...core.work import WorkItem
from .lifecycle import run_collect

if TYPE_CHECKING:  # pragma: no cover
    from distributed import Client

log = logging.getLogger("selfiescope.dask")


# --- what travels to and from the workers (WorkItem: selfiescope.core.work) --------------
@dataclass
class ChainResult:
    """What a worker learnt about one image (no pixels)."""

    origin: Origin
    label: str
    content_hash: str
    size: int
    format: str | None
    width: int | None
    height: int | None
    phash: str | None
    phash_centre: str | None
    phash_mirror: str | None
    phash_mirror_centre: str | None
    faces: list[list[int]]
    face_area: float | None
    face_detector: str | None
    decision: str
    rejected_by: str | None
    reject_code: str | None
    reject_reason: str | None
    notes: dict[str, Any]

    @classmethod
    def of(cls, event: ImageEvent) -> "ChainResult":
        return cls(
            event.origin, event.label, event.content_hash, event.size, event.format, event.width,
            event.height, event.phash, event.phash_centre, event.phash_mirror, event.phash_mirror_centre,
            [f.as_list() for f in event.faces], event.face_area,
            event.face_detector, event.decision.value, event.rejected_by, event.reject_code, event.reject_reason,
            plain_notes(event.notes),
        )

    def to_event(self, data: bytes | None) -> ImageEvent:
        """Rebuild the event on the client; ``data`` None when only the record is needed."""
        if data is None:
            event: ImageEvent = _RecordedEvent(origin=self.origin, label=self.label, data=b"",
                                               content_hash=self.content_hash, recorded_size=self.size)
        else:
            event = ImageEvent(origin=self.origin, label=self.label, data=data, content_hash=self.content_hash)
        event.format, event.width, event.height = self.format, self.width, self.height
        event.phash, event.face_area, event.face_detector = self.phash, self.face_area, self.face_detector
        event.phash_centre, event.phash_mirror, event.phash_mirror_centre = (
            self.phash_centre, self.phash_mirror, self.phash_mirror_centre)
        event.faces = [FaceBox(*box) for box in self.faces]
        event.notes.update(self.notes)
        if self.decision == Decision.REJECTED.value:
            event.reject(self.rejected_by or "worker", self.reject_code or "error", self.reject_reason or "")
        elif self.decision == Decision.FAILED.value:
            event.fail(self.rejected_by or "worker", self.reject_code or "error", self.reject_reason or "")
        return event


@dataclass
class _RecordedEvent(ImageEvent):
    """An event whose bytes stayed on the worker: its size is the one the worker measured."""

    recorded_size: int = 0

    @property
    def size(self) -> int:
        return self.recorded_size


@dataclass(frozen=True)
class ChainSpec:
    """Everything a worker needs to rebuild the worker half of a run's chain."""

    settings_json: str
    pipeline_json: str
    pipeline_name: str
    steps: tuple[str, ...]
    precompute: tuple[str, ...] = ()  # client steps whose ``precompute`` runs on the workers
    plugins: tuple[str, ...] = ()  # the app's plugin modules, registered on the workers too
    entrypoints: bool | None = None  # the app's choice: load installed plugins (None: unless the environment says not)

    @property
    def key(self) -> str:
        blob = "\0".join([self.settings_json, self.pipeline_json, self.pipeline_name, *self.steps,
                          "|", *self.precompute, "|", *self.plugins, "|", repr(self.entrypoints)])
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


# --- the worker side ---------------------------------------------------------------------
class WorkerChain:
    """The worker half of the chain, built once per worker thread and reused for every batch.

    Steps get a :class:`RunContext` without a manifest or storage: only pure steps run here.
    """

    def __init__(self, spec: ChainSpec) -> None:
        settings = Settings.model_validate_json(spec.settings_json)
        pipeline = ScrapePipeline.model_validate_json(spec.pipeline_json)
        self.spec = spec
        self.loop = asyncio.new_event_loop()
        # The worker's own application: the client's settings and plugins, [plugins] disable included.
        app = App.create(settings, plugins=[importlib.import_module(name) for name in spec.plugins],
                         entrypoints=spec.entrypoints)
        self.run = app.run_context(spec.pipeline_name, pipeline, manifest=None)  # type: ignore[arg-type]
        self.steps: list[Step] = [self.run.component("steps", name) for name in spec.steps]
        for step in self.steps:
            self.loop.run_until_complete(step.open())
        # Never opened: precompute is pure and needs no manifest (Step.precompute's contract).
        self.ahead: list[Step] = [self.run.component("steps", name) for name in spec.precompute]

    def process(self, items: Sequence[WorkItem]) -> list[ChainResult]:
        results = []
        for item in items:
            event = item.load()
            if event.decision not in (Decision.REJECTED, Decision.FAILED):
                self.loop.run_until_complete(run_chain(event, self.steps, self.run))
            if event.decision is Decision.ACCEPTED and event.image is not None:
                self._precompute(event)
            event.image = None
            results.append(ChainResult.of(event))
        return results

    def _precompute(self, event: ImageEvent) -> None:
        for step in self.ahead:
            try:
                step.precompute(event)
            except Exception as exc:  # a plugin bug: this image's failure, as in run_chain
                event.fail(step.name, "error", f"{type(exc).__name__}: {exc}")
                return


_local = threading.local()


def run_batch(spec: ChainSpec, items: Sequence[WorkItem]) -> list[ChainResult]:
    """The task Dask runs: the worker steps over one batch of images."""
    chains: dict[str, WorkerChain] = _local.__dict__.setdefault("chains", {})
    chain = chains.get(spec.key)
    if chain is None:
        chain = chains[spec.key] = WorkerChain(spec)
    return chain.process(items)


# --- the client side ---------------------------------------------------------------------
def split_chain(
    chain: Sequence[str], steps: dict[str, type[Step]], worker_steps: Iterable[str] | None = None
) -> tuple[list[str], list[str]]:
    """The longest leading run of ``worker_safe`` steps goes to the workers, the rest stays
    here. ``worker_steps`` (``[compute] worker_steps``) narrows the worker-safe steps to those
    it names (checked against the capability by the settings check)."""
    allowed = None if worker_steps is None else set(worker_steps)
    n = 0
    while n < len(chain) and steps[chain[n]].worker_safe and (allowed is None or chain[n] in allowed):
        n += 1
    return list(chain[:n]), list(chain[n:])


@dataclass
class _Batch:
    job: Job
    items: list[WorkItem]
    future: Any = None


@dataclass
class _JobProgress:
    job: Job
    accepted: int = 0
    skipped_over_limit: int = 0
    outstanding: int = 0  # batches sent and not yet finished
    produced: bool = False  # the source has no more items for this job

    def full(self) -> bool:
        return self.job.limit is not None and self.accepted >= self.job.limit


@dataclass
class DaskCollector:
    """Feeds batches to the cluster and applies the client half of the chain in input order."""

    run: RunContext
    client: "Client"
    source: Source
    spec: ChainSpec
    client_steps: list[Step]
    batch_size: int
    window: int
    progress: dict[str, _JobProgress] = field(default_factory=dict)
    fallbacks: int = 0
    client_seconds: float = 0.0  # time spent in the client half of the chain and the manifest

    async def items(self, job: Job) -> AsyncIterator[WorkItem]:
        remote = self.source.remote_items(job)
        if remote is not None:  # the source lists and filters; the workers load the bytes
            try:
                async for item in remote:
                    scrub_origin(item.origin, self.run.manifest.keyring, self.run.settings.privacy.store_captions)
                    yield item
            finally:
                await remote.aclose()  # type: ignore[attr-defined]
            return
        async for event in job_events(self.source, job):  # downloads happen here; bytes travel with the task
            # Owners are pseudonymised before the bytes leave for a worker (the client's gate re-checks).
            scrub_origin(event.origin, self.run.manifest.keyring, self.run.settings.privacy.store_captions)
            if event.decision is Decision.FAILED and event.rejected_by:  # the source could not read it
                yield WorkItem(event.origin, event.label, failure=(event.rejected_by, event.reject_code or "error",
                                                                   event.reject_reason or ""))
                continue
            yield WorkItem(event.origin, event.label, data=event.data, notes=plain_notes(event.notes),
                           content_hash=event.content_hash)

    async def batches(self, jobs: Sequence[Job]) -> AsyncIterator[_Batch]:
        for job in jobs:
            state = self.progress[self._key(job)]
            batch: list[WorkItem] = []
            items = self.items(job)
            try:
                async for item in items:
                    if state.full():
                        break
                    batch.append(item)
                    if len(batch) >= self.batch_size:
                        state.outstanding += 1
                        yield _Batch(job, batch)
                        batch = []
            finally:
                await items.aclose()  # a source stopped at its limit closes its browser pages now
            if batch and not state.full():
                state.outstanding += 1
                yield _Batch(job, batch)
            state.produced = True
            self._settle_job(state)

    def _settle_job(self, state: _JobProgress) -> None:
        """The job's final state, once its source ended and every batch it sent has finished:
        the counts shown with it are then the job's real ones."""
        if state.produced and state.outstanding == 0:
            self.run.stats.set_state(state.job.target, "done", settled=True)

    @staticmethod
    def _key(job: Job) -> str:
        return f"{job.source}:{job.target}"

    async def execute(self, jobs: Sequence[Job]) -> None:
        for job in jobs:
            state = self.progress[self._key(job)] = _JobProgress(job)
            state.accepted = await stored_for_job(self.run, job)
        pending: deque[_Batch] = deque()
        source = self.batches(jobs)
        exhausted = False
        try:
            while True:
                while not exhausted and len(pending) < self.window:
                    try:
                        batch = await source.__anext__()
                    except StopAsyncIteration:
                        exhausted = True
                        break
                    batch.future = self.client.submit(run_batch, self.spec, batch.items, pure=False, retries=2)
                    pending.append(batch)
                if not pending:
                    return
                batch = pending.popleft()
                results = await self._results(batch)
                started = time.perf_counter()
                await self._finish(batch, results)
                self.client_seconds += time.perf_counter() - started
                state = self.progress[self._key(batch.job)]
                state.outstanding -= 1
                self._settle_job(state)
        finally:  # cancelled or failed: nothing more to compute; what was recorded stays recorded
            for left in pending:
                left.future.cancel()
            await source.aclose()

    async def _results(self, batch: _Batch) -> list[ChainResult]:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(None, batch.future.result)
        except asyncio.CancelledError:
            batch.future.cancel()
            raise
        except Exception as exc:  # the cluster gave up on it (e.g. it killed workers repeatedly)
            log.warning("a batch of %d images failed on the cluster (%s: %s); running it here",
                        len(batch.items), type(exc).__name__, exc)
            self.fallbacks += 1
            return await loop.run_in_executor(self.run.executor, run_batch, self.spec, batch.items)

    async def _finish(self, batch: _Batch, results: list[ChainResult]) -> None:
        state = self.progress[self._key(batch.job)]
        for item, result in zip(batch.items, results):
            if state.full():
                state.skipped_over_limit += 1
                continue
            event = await self._client_event(item, result)
            if await admit(self.run, event, batch.job.target):
                if event.decision not in (Decision.REJECTED, Decision.FAILED):
                    event.decision = Decision.PENDING
                    await run_chain(event, self.client_steps, self.run)
                await settle(self.run, event, batch.job.target)
            state.accepted += event.decision is Decision.ACCEPTED

    async def _client_event(self, item: WorkItem, result: ChainResult) -> ImageEvent:
        needs_bytes = result.decision not in (Decision.REJECTED.value, Decision.FAILED.value) and self.client_steps
        if not needs_bytes:
            return result.to_event(None)
        if item.data is not None:
            return result.to_event(item.data)
        assert item.path is not None
        try:
            data = await asyncio.to_thread(Path(item.path).read_bytes)
        except OSError as exc:
            event = result.to_event(None)
            event.fail("read", "read_failed", f"cannot read {printable(item.path)} again: {exc.strerror or exc}")
            return event
        if hashlib.sha256(data).hexdigest() != result.content_hash:
            event = result.to_event(None)
            event.fail("read", "read_failed", f"{printable(item.path)} changed while it was being processed; run again")
            return event
        return result.to_event(data)


def make_spec(app: App, pipeline_name: str, pipeline: ScrapePipeline, worker_steps: Sequence[str],
              client_steps: Sequence[str]) -> ChainSpec:
    """The client steps with a ``precompute`` have it run on the workers. The app's plugin
    objects that are importable modules are registered on the workers too."""
    return ChainSpec(
        settings_json=app.settings.model_dump_json(),
        pipeline_json=pipeline.model_dump_json(),
        pipeline_name=pipeline_name,
        steps=tuple(worker_steps),
        precompute=tuple(name for name in client_steps if app.registry.steps[name].has_precompute()),
        plugins=tuple(p.__name__ for p in app.plugins if isinstance(p, types.ModuleType)),
        entrypoints=app.entrypoints,
    )


class DaskExecutor:
    """``[compute] engine = "dask"``: the chain's worker-safe head on a Dask cluster.

    ``client`` is an already connected :class:`distributed.Client`; without one, a client
    is made from ``[compute]`` when the run starts (and a LocalCluster started when
    ``scheduler = "local"``), and closed when it ends.
    """

    def __init__(self, app: App, client: "Client | None" = None) -> None:
        self.app = app
        self.settings = app.settings
        self.client = client
        self._own: Any = None
        self.worker_names: list[str] = []

    async def __aenter__(self) -> "DaskExecutor":
        if self.client is None:
            self._own = dask_client(self.settings.compute)
            self.client = await asyncio.to_thread(self._own.__enter__)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._own is not None:
            own, self._own, self.client = self._own, None, None
            await asyncio.to_thread(own.__exit__, None, None, None)

    def steps_here(self, registry: Registry, chain: Sequence[str]) -> list[str]:
        self.worker_names, client_names = split_chain(chain, registry.steps, self.settings.compute.worker_steps)
        return client_names

    async def execute(self, run: RunContext, source: Source, steps: list[Step], jobs: list[Job]) -> None:
        assert self.client is not None and isinstance(run.pipeline, ScrapePipeline)
        spec = make_spec(run.app, run.pipeline_name, run.pipeline, self.worker_names, [s.name for s in steps])
        collector = DaskCollector(run, self.client, source, spec, steps, batch_size=run.settings.compute.batch_size,
                                  window=2 * worker_count(self.client))
        log.info("dask run %s: workers run %s (precompute %s), the client runs %s", run.run_id,
                 self.worker_names, list(spec.precompute), [s.name for s in steps])
        try:
            await collector.execute(jobs)
        finally:
            run.stats.extra["dask"] = {
                "scheduler": self.client.scheduler.address, "workers": len(self.client.nthreads()),
                "batches_run_on_client": collector.fallbacks, "client_s": round(collector.client_seconds, 3),
            }


async def collect_on_dask(
    app: App,
    pipeline_name: str,
    *,
    pipeline: ScrapePipeline | None = None,
    together: list[ScrapePipeline] | None = None,
    client: "Client | None" = None,
) -> RunStats:
    """Like :func:`~selfiescope.pipelines.collecting.collect.collect`, on Dask whatever ``[compute] engine`` says."""
    executor = DaskExecutor(app, client=client)
    return await run_collect(app, pipeline_name, executor=executor, pipeline=pipeline, together=together)
