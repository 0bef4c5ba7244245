"""The collect pipeline (kinds ``scrape`` and ``import``): source -> chain -> storage.

The run's lifecycle lives in :mod:`.lifecycle`; ``[compute] engine`` picks the executor
(the local asyncio engine, or Dask: :mod:`.dask_collect`).
"""

from __future__ import annotations

from ...core.app import App
from ...core.settings import ScrapePipeline
from ...core.stats import RunStats
from .lifecycle import collect_pipeline, managed_run, prepare, resolve, run_collect

__all__ = ["collect", "collect_pipeline", "managed_run", "prepare", "resolve"]


async def collect(
    app: App,
    pipeline_name: str,
    *,
    pipeline: ScrapePipeline | None = None,
    together: list[ScrapePipeline] | None = None,
) -> RunStats:
    """Run a scrape/import pipeline to the end (or its limits) and return its stats.

    ``pipeline`` may be given directly (the CLI's ``import`` and ``scrape`` commands
    build one on the fly); otherwise it is ``app.settings.pipelines[pipeline_name]``.
    ``together`` adds the jobs of more pipelines with the same source and chain (other
    hashtags, other labels) to the same run: one browser, one dedup index, so the same
    photo met under a selfie tag and a portrait tag at once is caught as a conflict.
    ``[compute] engine`` chooses the executor (:data:`.lifecycle.EXECUTORS`).
    """
    return await run_collect(app, pipeline_name, pipeline=pipeline, together=together)
