"""The collect pipeline (``import``, ``scrape``, ``clean``) with the CPU work on a Dask cluster.

The chain is split in two. Its leading pure steps (``[compute] worker_steps``, by default
``decode`` and ``face_area``) run on the workers, in batches, with the same step classes
and :func:`~selfiescope.core.engine.run_chain` as the local engine; the workers also compute
the perceptual hash. Each worker sends back a small record per image (hashes, size, face
boxes, decision), never pixels. The remaining steps (``dedup``, ``store``) and every
manifest write run on the client, one result at a time and in input order: SQLite keeps a
single writer, dedup sees images in the same order as a one-worker local run, and a batch
that a dead worker leaves behind is recomputed by Dask and still recorded once.

A folder source on a shared filesystem sends paths (workers read the files); any other
source sends the bytes it downloaded along with the task.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib
import json
import logging
import threading
import time
import types
from collections import deque
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core.components import Job, Source, Step
from ..core.compute import dask_client, worker_count
from ..core.context import RunContext
from ..core.decisions import settle
from ..core.engine import run_chain
from ..core.events import Decision, FaceBox, ImageEvent, Origin
from ..core.manifest import Manifest
from ..core.plugins import Registry, load_registry
from ..core.settings import ScrapePipeline, Settings
from ..core.stats import RunStats
from ..core.text import printable
from .collect import managed_run, resolve

if TYPE_CHECKING:  # pragma: no cover
    from distributed import Client

log = logging.getLogger("selfiescope.dask")


# --- what travels to and from the workers ------------------------------------------------
@dataclass
class WorkItem:
    """One image to process: a path the workers can read, or the bytes themselves."""

    origin: Origin
    label: str
    path: str | None = None
    data: bytes | None = None
    max_bytes: int | None = None
    notes: dict[str, Any] = field(default_factory=dict)  # what the source noted (JSON-safe part)

    def load(self) -> ImageEvent:
        notes: dict[str, Any] = dict(self.notes)
        if self.data is not None:
            data = self.data
        else:
            assert self.path is not None
            path = Path(self.path)
            try:
                size = path.stat().st_size
                if self.max_bytes is not None and size > self.max_bytes:
                    data, notes["oversize"] = b"", size  # decode rejects it; the reason says why
                else:
                    data = path.read_bytes()
            except OSError as exc:
                event = ImageEvent(origin=self.origin, label=self.label, data=b"")
                event.reject("read", "unreadable", f"cannot read {self.path}: {exc.strerror or exc}")
                return event
        event = ImageEvent(origin=self.origin, label=self.label, data=data)
        event.notes.update(notes)
        return event


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
    faces: list[list[int]]
    face_area: float | None
    decision: str
    rejected_by: str | None
    reject_code: str | None
    reject_reason: str | None
    notes: dict[str, Any]

    @classmethod
    def of(cls, event: ImageEvent) -> "ChainResult":
        return cls(
            event.origin, event.label, event.content_hash, event.size, event.format, event.width,
            event.height, event.phash, [f.as_list() for f in event.faces], event.face_area,
            event.decision.value, event.rejected_by, event.reject_code, event.reject_reason,
            _plain(event.notes),
        )

    def to_event(self, data: bytes | None) -> ImageEvent:
        """Rebuild the event on the client; ``data`` None when only the record is needed."""
        if data is None:
            event: ImageEvent = _RecordedEvent(origin=self.origin, label=self.label, data=b"",
                                               content_hash=self.content_hash, recorded_size=self.size)
        else:
            event = ImageEvent(origin=self.origin, label=self.label, data=data, content_hash=self.content_hash)
        event.format, event.width, event.height = self.format, self.width, self.height
        event.phash, event.face_area = self.phash, self.face_area
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


def _plain(notes: dict[str, Any]) -> dict[str, Any]:
    """Notes that survive JSON (what a worker may send back)."""
    out = {}
    for k, v in notes.items():
        try:
            json.dumps(v)
        except (TypeError, ValueError):
            continue
        out[k] = v
    return out


@dataclass(frozen=True)
class ChainSpec:
    """Everything a worker needs to rebuild the worker half of a run's chain."""

    settings_json: str
    pipeline_json: str
    pipeline_name: str
    steps: tuple[str, ...]
    phash: bool
    plugins: tuple[str, ...] = ()  # extra plugin modules to register on the workers

    @property
    def key(self) -> str:
        blob = "\0".join([self.settings_json, self.pipeline_json, self.pipeline_name, *self.steps,
                          str(self.phash), *self.plugins])
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


# --- the worker side ---------------------------------------------------------------------
class WorkerChain:
    """The worker half of the chain, built once per worker thread and reused for every batch.

    Steps get a :class:`RunContext` without a manifest or storage: only pure steps run here.
    """

    def __init__(self, spec: ChainSpec, registry: Registry | None = None) -> None:
        settings = Settings.model_validate_json(spec.settings_json)
        pipeline = ScrapePipeline.model_validate_json(spec.pipeline_json)
        self.spec = spec
        self.loop = asyncio.new_event_loop()
        if registry is None:
            registry = load_registry([importlib.import_module(name) for name in spec.plugins])
        self.run = RunContext(settings, registry, spec.pipeline_name, pipeline, manifest=None)  # type: ignore[arg-type]
        self.steps: list[Step] = [self.run.component("steps", name) for name in spec.steps]
        for step in self.steps:
            self.loop.run_until_complete(step.open())

    def process(self, items: Sequence[WorkItem]) -> list[ChainResult]:
        results = []
        for item in items:
            event = item.load()
            if event.decision is not Decision.REJECTED:
                self.loop.run_until_complete(run_chain(event, self.steps, self.run))
            if self.spec.phash and event.decision is Decision.ACCEPTED and event.phash is None and event.image is not None:
                dedup_hashes(event)
            event.image = None
            results.append(ChainResult.of(event))
        return results


_local = threading.local()


def run_batch(spec: ChainSpec, items: Sequence[WorkItem]) -> list[ChainResult]:
    """The task Dask runs: the worker steps over one batch of images."""
    chains: dict[str, WorkerChain] = _local.__dict__.setdefault("chains", {})
    chain = chains.get(spec.key)
    if chain is None:
        chain = chains[spec.key] = WorkerChain(spec)
    return chain.process(items)


def dedup_hashes(event: ImageEvent) -> None:
    """The perceptual hashes dedup uses, computed where the pixels are (dedup then only looks
    them up): ``event.phash`` and ``event.notes["phash_centre"]``."""
    from ..plugins.dedup import annotate_phashes

    annotate_phashes(event)


# --- the client side ---------------------------------------------------------------------
def split_chain(chain: Sequence[str], worker_steps: Iterable[str]) -> tuple[list[str], list[str]]:
    """The longest leading run of worker-safe steps goes to the workers, the rest stays here."""
    allowed = set(worker_steps)
    n = 0
    while n < len(chain) and chain[n] in allowed:
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
        list_files = getattr(self.source, "list_files", None)
        if self.source.name == "folder" and list_files is not None:
            files = await asyncio.to_thread(list_files, Path(job.target).expanduser())
            max_bytes = getattr(self.source.options, "max_bytes", None)
            for path in files:
                origin = Origin(source=self.source.name, job=job.target, path=str(path))
                yield WorkItem(origin, job.label, path=str(path), max_bytes=max_bytes)
            return
        async for event in self.source.events(job):  # downloads happen here; bytes travel with the task
            yield WorkItem(event.origin, event.label, data=event.data, notes=_plain(event.notes))

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
                        yield _Batch(job, batch)
                        batch = []
            finally:
                await items.aclose()  # a source stopped at its limit closes its browser pages now
            if batch and not state.full():
                yield _Batch(job, batch)

    @staticmethod
    def _key(job: Job) -> str:
        return f"{job.source}:{job.target}"

    async def execute(self, jobs: Sequence[Job]) -> None:
        loop = asyncio.get_running_loop()
        for job in jobs:
            state = self.progress[self._key(job)] = _JobProgress(job)
            state.accepted = await loop.run_in_executor(
                self.run.executor, self.run.manifest.stored_count, job.source, job.target, job.label
            )
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
        loop = asyncio.get_running_loop()
        state = self.progress[self._key(batch.job)]
        for item, result in zip(batch.items, results):
            if state.full():
                state.skipped_over_limit += 1
                continue
            event = await self._client_event(item, result)
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


def make_spec(settings: Settings, pipeline_name: str, pipeline: ScrapePipeline, worker_steps: Sequence[str],
              client_steps: Sequence[str], extra_plugins: Sequence[Any] = ()) -> ChainSpec:
    """Extra plugins that are importable modules are registered on the workers too."""
    return ChainSpec(
        settings_json=settings.model_dump_json(),
        pipeline_json=pipeline.model_dump_json(),
        pipeline_name=pipeline_name,
        steps=tuple(worker_steps),
        phash="dedup" in client_steps,
        plugins=tuple(p.__name__ for p in extra_plugins if isinstance(p, types.ModuleType)),
    )


async def collect_on_dask(
    settings: Settings,
    pipeline_name: str,
    *,
    registry: Registry | None = None,
    extra_plugins: list[Any] | None = None,
    pipeline: ScrapePipeline | None = None,
    together: list[ScrapePipeline] | None = None,
    client: "Client | None" = None,
) -> RunStats:
    """Like :func:`~selfiescope.pipelines.collect.collect`, with the worker steps on Dask.

    ``client`` is an already connected :class:`distributed.Client`; without one, a client
    is made from ``[compute]`` (and a LocalCluster started when ``scheduler = "local"``).
    """
    if client is None:
        cm = dask_client(settings.compute)
        own_client = await asyncio.to_thread(cm.__enter__)
        try:
            return await collect_on_dask(settings, pipeline_name, registry=registry, extra_plugins=extra_plugins,
                                         pipeline=pipeline, together=together, client=own_client)
        finally:
            await asyncio.to_thread(cm.__exit__, None, None, None)

    registry, pipeline, pipelines = resolve(settings, pipeline_name, registry, extra_plugins, pipeline, together)
    worker_names, client_names = split_chain(pipeline.chain, settings.compute.worker_steps)
    async with managed_run(settings, registry, pipeline_name, pipeline) as (run, open_component):
        source = await open_component("sources", pipeline.source)
        client_steps = [await open_component("steps", name) for name in client_names]
        run.hook.selfiescope_run_started(run=run)
        spec = make_spec(settings, pipeline_name, pipeline, worker_names, client_names, extra_plugins or ())
        collector = DaskCollector(
            run, client, source, spec, client_steps,
            batch_size=settings.compute.batch_size,
            window=2 * worker_count(client),
        )
        log.info("dask run %s: workers run %s, the client runs %s", run.run_id, worker_names, client_names)
        try:
            await collector.execute([job for p in pipelines for job in source.jobs(p)])
        finally:
            run.stats.extra["dask"] = {
                "scheduler": client.scheduler.address, "workers": len(client.nthreads()),
                "batches_run_on_client": collector.fallbacks, "client_s": round(collector.client_seconds, 3),
            }
    return run.stats
