"""One collect run's lifecycle, whatever executes the chain.

A run is: check settings against the loaded plugins, start (the root's lock, the
manifest, the run record, storage opened, an interrupted ``forget`` completed), open the
source and the steps that run in this process, execute the jobs, then finish or cancel
(close what was opened, record the status and stats, fire ``selfiescope_run_finished``,
refresh the dataset card, release the lock). Each image is admitted, settled and checked
against earlier runs by :mod:`selfiescope.core.decisions`, which every executor calls.

Executors are chosen by ``[compute] engine`` through :data:`EXECUTORS`: ``local`` (the
asyncio engine in this process) and ``dask`` (the chain's worker-safe head on a Dask
cluster). An executor module imports this one, never the other way round: the mapping
names them by import path, resolved when a run asks for one.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Protocol

from ...core.app import App
from ...core.components import Component, Job, Source, Step
from ...core.compute import load_target
from ...core.context import RunContext, default_threads
from ...core.intents import drop_settled, sweep
from ...core.manifest import Manifest
from ...core.plugins import Registry
from ...core.checks import check_components, check_paths
from ...core.settings import ScrapePipeline, Settings, SettingsError
from ...core.stats import RunStats
from ...exits import os_error
from ..dataset_care.card import refresh_card
from ..dataset_care.forget import complete_pending, pending_count

log = logging.getLogger("selfiescope.collect")

OpenComponent = Callable[[str, str], Awaitable[Component]]


class Executor(Protocol):
    """Runs a collect run's jobs. Made per run as ``cls(app)``; entered
    (``async with``) around the run, for what it holds longer than the run (a Dask client)."""

    async def __aenter__(self) -> "Executor": ...

    async def __aexit__(self, *exc: object) -> None: ...

    def steps_here(self, registry: Registry, chain: Sequence[str]) -> list[str]:
        """The chain steps this process opens and runs (the rest run elsewhere)."""
        ...

    async def execute(self, run: RunContext, source: Source, steps: list[Step], jobs: list[Job]) -> None: ...


# ``[compute] engine`` -> the executor class, by import path (no import cycle, Dask optional).
EXECUTORS: dict[str, str | type] = {
    "local": "selfiescope.core.engine:LocalExecutor",
    "dask": "selfiescope.pipelines.collecting.dask_collect:DaskExecutor",
}


def executor_class(engine: str) -> type:
    try:
        target = EXECUTORS[engine]
    except KeyError:
        raise SettingsError([f"compute.engine: no executor {engine!r} (known: {', '.join(sorted(EXECUTORS))})"]) from None
    return load_target(target)


def prepare(app: App, adhoc: tuple[str, ScrapePipeline] | None = None) -> None:
    """Check every name and option the app's settings use (plus an ad-hoc pipeline) against
    its plugins."""
    if problems := check_components(app.settings, app.registry, adhoc):
        raise SettingsError(problems)


def collect_pipeline(settings: Settings, name: str) -> ScrapePipeline:
    p = settings.pipeline(name)
    if not isinstance(p, ScrapePipeline):
        raise SettingsError([f"pipelines.{name}.kind: {p.kind!r} is not a scrape/import pipeline"])
    return p


def resolve(
    app: App,
    pipeline_name: str,
    pipeline: ScrapePipeline | None,
    together: list[ScrapePipeline] | None,
) -> tuple[ScrapePipeline, list[ScrapePipeline]]:
    """Check settings against the loaded plugins and find the pipelines to run."""
    prepare(app, (pipeline_name, pipeline) if pipeline else None)
    if pipeline is None:
        pipeline = collect_pipeline(app.settings, pipeline_name)
    pipelines = [pipeline, *(together or [])]
    for other in pipelines[1:]:
        if (other.source, other.chain) != (pipeline.source, pipeline.chain):
            raise SettingsError([f"pipelines run together need the same source and chain ({pipeline_name})"])
    return pipeline, pipelines


@asynccontextmanager
async def managed_run(
    app: App, pipeline_name: str, pipeline: ScrapePipeline
) -> AsyncIterator[tuple[RunContext, OpenComponent]]:
    """Start, finish and cancel: manifest, thread pool, storage, the run record and its
    status, closing what was opened (also when cancelled), the hooks."""
    settings = app.settings
    if problems := check_paths(settings):
        raise SettingsError(problems)
    lock = await asyncio.to_thread(app.root_lock().acquire)
    try:
        manifest = Manifest.at_root(settings.storage.root)
    except BaseException:
        lock.release()
        raise
    executor = ThreadPoolExecutor(max_workers=default_threads(settings), thread_name_prefix="selfiescope")
    run = app.run_context(pipeline_name, pipeline, manifest, executor=executor)
    try:  # a full disk can refuse even the run's record: then close and unlock before saying so
        if n := manifest.mark_interrupted():
            log.info("%d earlier run(s) ended without finishing (killed); marked interrupted", n)
        run.run_id = manifest.start_run(pipeline_name, run.settings_hash())
    except BaseException:
        executor.shutdown(wait=False)
        manifest.close()
        lock.release()
        raise
    opened: list[Component] = []

    async def open_component(kind: str, name: str) -> Component:
        comp = run.component(kind, name)
        await comp.open()
        opened.append(comp)
        return comp

    try:
        run.storage = await open_component("storage", settings.storage.backend)
        try:
            await sweep(manifest, run.storage)  # writes a killed run never recorded
        except Exception as exc:  # noqa: BLE001 - the intents stay for the next run; collecting can go on
            log.warning("could not remove a killed run's unrecorded writes yet: %s: %s", type(exc).__name__, exc)
        if pending_count(manifest):  # an interrupted `forget`: finish it before collecting anything
            await complete_pending(manifest, run.storage)
        yield run, open_component
        if run.halted is not None:
            raise run.halted
        run.stats.status = "finished" if run.stats.ok else "finished_with_errors"
    except (asyncio.CancelledError, KeyboardInterrupt):
        run.stats.status = "cancelled"
        raise
    except BaseException:
        run.stats.status = "failed"
        raise
    finally:
        for comp in reversed(opened):
            try:
                await comp.close()
            except Exception as exc:  # closing must not mask the run's outcome
                log.warning("closing %s failed: %s", comp.name, exc)
        for closer in reversed(run.closers):
            try:
                res = closer()
                if asyncio.iscoroutine(res):
                    await res
            except Exception as exc:
                log.warning("closing a service failed: %s", exc)
        run.stats.finished = time.monotonic()
        try:
            _finish_record(manifest, run)
            run.hook.selfiescope_run_finished(run=run, stats=run.stats)
        finally:  # a failing observer or manifest still leaves the root closed and unlocked
            executor.shutdown(wait=True)  # queued manifest writes finish: files and manifest agree
            try:
                if run.halted is None:  # a full disk would only add a warning to the run's one line
                    refresh_card(app, manifest)
            finally:
                manifest.close()
                lock.release()


def _finish_record(manifest: Manifest, run: RunContext) -> None:
    """Record the run's end. On a full disk the run's outcome (and its one line) is what the
    user needs: the record is left ``running``, and the next run marks it interrupted."""
    try:
        drop_settled(manifest)
        manifest.finish_run(run.run_id, run.stats.status, run.stats.as_dict())
    except OSError as exc:
        log.debug("could not record the end of run %s: %s", run.run_id, exc)
        run.stats.errors.append(f"could not record the run's end: {os_error(exc)[1]}")


async def run_collect(
    app: App,
    pipeline_name: str,
    *,
    executor: Executor | None = None,
    pipeline: ScrapePipeline | None = None,
    together: list[ScrapePipeline] | None = None,
) -> RunStats:
    """Run a scrape/import pipeline with ``executor`` (default: the one ``[compute] engine`` names)."""
    pipeline, pipelines = resolve(app, pipeline_name, pipeline, together)
    if executor is None:
        executor = executor_class(app.settings.compute.engine)(app)
    async with executor:
        async with managed_run(app, pipeline_name, pipeline) as (run, open_component):
            source = await open_component("sources", pipeline.source)
            steps = [await open_component("steps", name) for name in executor.steps_here(app.registry, pipeline.chain)]
            run.hook.selfiescope_run_started(run=run)
            jobs = [job for p in pipelines for job in source.jobs(p)]
            await executor.execute(run, source, steps, jobs)  # type: ignore[arg-type]
    return run.stats
