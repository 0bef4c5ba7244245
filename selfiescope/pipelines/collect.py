"""The collect pipeline (kinds ``scrape`` and ``import``): source -> chain -> storage."""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from ..core.components import Component
from ..core.context import RunContext, default_threads
from ..core.engine import Engine
from ..core.lock import RootLock
from ..core.manifest import Manifest
from ..core.plugins import Registry, load_registry
from ..core.settings import (
    ScrapePipeline, Settings, SettingsError, check_components, check_paths, check_pipeline,
)
from ..core.stats import RunStats

log = logging.getLogger("selfiescope.collect")


def prepare(
    settings: Settings,
    registry: Registry | None = None,
    extra_plugins: list[Any] | None = None,
    adhoc: tuple[str, ScrapePipeline] | None = None,
) -> Registry:
    """Load plugins and check every name and option settings use (plus an ad-hoc pipeline)."""
    registry = registry or load_registry(extra_plugins)
    problems = check_components(settings, registry)
    if adhoc is not None:
        problems += check_pipeline(settings, registry, *adhoc)
    if problems:
        raise SettingsError(problems)
    return registry


def collect_pipeline(settings: Settings, name: str) -> ScrapePipeline:
    p = settings.pipeline(name)
    if not isinstance(p, ScrapePipeline):
        raise SettingsError([f"pipelines.{name}.kind: {p.kind!r} is not a scrape/import pipeline"])
    return p


def resolve(
    settings: Settings,
    pipeline_name: str,
    registry: Registry | None,
    extra_plugins: list[Any] | None,
    pipeline: ScrapePipeline | None,
    together: list[ScrapePipeline] | None,
) -> tuple[Registry, ScrapePipeline, list[ScrapePipeline]]:
    """Check settings against the loaded plugins and find the pipelines to run."""
    registry = prepare(settings, registry, extra_plugins, (pipeline_name, pipeline) if pipeline else None)
    if pipeline is None:
        pipeline = collect_pipeline(settings, pipeline_name)
    pipelines = [pipeline, *(together or [])]
    for other in pipelines[1:]:
        if (other.source, other.chain) != (pipeline.source, pipeline.chain):
            raise SettingsError([f"pipelines run together need the same source and chain ({pipeline_name})"])
    return registry, pipeline, pipelines


OpenComponent = Callable[[str, str], Awaitable[Component]]


@asynccontextmanager
async def managed_run(
    settings: Settings, registry: Registry, pipeline_name: str, pipeline: ScrapePipeline
) -> AsyncIterator[tuple[RunContext, OpenComponent]]:
    """One run's lifecycle, for every engine: manifest, thread pool, storage, the run
    record and its status, closing what was opened (also when cancelled), the hooks."""
    if problems := check_paths(settings):
        raise SettingsError(problems)
    wait_s = settings.storage.lock_timeout_s if settings.storage.wait_for_lock else 0.0
    lock = await asyncio.to_thread(RootLock(settings.storage.root, wait_s=wait_s).acquire)
    try:
        manifest = Manifest.at_root(settings.storage.root)
    except BaseException:
        lock.release()
        raise
    executor = ThreadPoolExecutor(max_workers=default_threads(settings), thread_name_prefix="selfiescope")
    run = RunContext(settings, registry, pipeline_name, pipeline, manifest, executor=executor)
    if n := manifest.mark_interrupted():
        log.info("%d earlier run(s) ended without finishing (killed); marked interrupted", n)
    run.run_id = manifest.start_run(pipeline_name, run.settings_hash())
    opened: list[Component] = []

    async def open_component(kind: str, name: str) -> Component:
        comp = run.component(kind, name)
        await comp.open()
        opened.append(comp)
        return comp

    try:
        run.storage = await open_component("storage", settings.storage.backend)
        yield run, open_component
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
        manifest.finish_run(run.run_id, run.stats.status, run.stats.as_dict())
        run.hook.selfiescope_run_finished(run=run, stats=run.stats)
        executor.shutdown(wait=True)  # queued manifest writes finish: files and manifest agree
        manifest.close()
        lock.release()


async def collect(
    settings: Settings,
    pipeline_name: str,
    *,
    registry: Registry | None = None,
    extra_plugins: list[Any] | None = None,
    pipeline: ScrapePipeline | None = None,
    together: list[ScrapePipeline] | None = None,
) -> RunStats:
    """Run a scrape/import pipeline to the end (or its limits) and return its stats.

    ``pipeline`` may be given directly (the CLI's ``import`` and ``scrape`` commands
    build one on the fly); otherwise it is ``settings.pipelines[pipeline_name]``.
    ``together`` adds the jobs of more pipelines with the same source and chain (other
    hashtags, other labels) to the same run: one browser, one dedup index, so the same
    photo met under a selfie tag and a portrait tag at once is caught as a conflict.
    With ``[compute] engine = "dask"`` the run goes to :mod:`.dask_collect`.
    """
    if settings.compute.engine == "dask":
        from .dask_collect import collect_on_dask

        return await collect_on_dask(settings, pipeline_name, registry=registry, extra_plugins=extra_plugins,
                                     pipeline=pipeline, together=together)
    registry, pipeline, pipelines = resolve(settings, pipeline_name, registry, extra_plugins, pipeline, together)
    async with managed_run(settings, registry, pipeline_name, pipeline) as (run, open_component):
        source = await open_component("sources", pipeline.source)
        steps = [await open_component("steps", name) for name in pipeline.chain]
        run.hook.selfiescope_run_started(run=run)
        jobs = [job for p in pipelines for job in source.jobs(p)]
        await Engine(run, source, steps, jobs).execute()
    return run.stats
