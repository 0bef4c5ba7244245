"""A job's "(N images kept)" count is only printed once every image of the job has its
outcome: a source that announces its own end ("feed done") while images are still in the
chain gets a count "so far", never a final-looking one that is short."""

from __future__ import annotations

import asyncio
import io
import re
from collections.abc import AsyncIterator

from rich.console import Console
from test_run_reports import Burst, Plugin, Settle

from selfiescope import hookimpl
from selfiescope.core.app import App
from selfiescope.core.components import Job
from selfiescope.core.events import ImageEvent
from selfiescope.core.settings import ScrapePipeline, settings_from_dict
from selfiescope.pipelines.collecting.collect import collect


class Announcing(Burst):
    """Like instagram's source: says its feed is done as soon as it has yielded the last post."""

    name = "announcing"

    async def events(self, job: Job) -> AsyncIterator[ImageEvent]:
        async for event in super().events(job):
            yield event
        self.run.stats.set_state(job.target, f"feed done: {self.options.count} posts found")


class AnnouncingPlugin(Plugin):
    @hookimpl
    def selfiescope_sources(self):
        return [Announcing]

    @hookimpl
    def selfiescope_steps(self):
        return [Settle]


def test_only_a_settled_job_prints_images_kept(tmp_path, monkeypatch):
    import selfiescope.cli.collect as cli_collect

    out = io.StringIO()
    monkeypatch.setattr(cli_collect, "console", Console(file=out, width=200, force_terminal=False))
    observer = cli_collect.ProgressObserver(cli_collect._progress(False), plain=True)
    settings = settings_from_dict({"storage": {"root": str(tmp_path / "data")}, "engine": {"workers": 4, "queue_size": 16}})
    pipeline = ScrapePipeline(kind="scrape", source="announcing", urls=["a", "b"], label="selfie", chain=["settle"],
                              options={"announcing": {"count": 40}})
    pipeline._report_only = True  # a test step that stores nothing
    stats = asyncio.run(collect(App.create(settings, plugins=[AnnouncingPlugin(), observer]), "t", pipeline=pipeline))
    lines = out.getvalue().splitlines()
    kept_lines = [line for line in lines if "images kept" in line]
    assert sorted(line.split(":")[0] for line in kept_lines) == ["a", "b"], lines  # one final line per job
    for line in kept_lines:
        job, kept = line.split(":")[0], int(re.search(r"\((\d+) images kept\)", line).group(1))
        assert "done" in line and kept == stats.per_job[job]["accepted"] == 40, lines
    assert any("feed done" in line for line in lines)
    assert all("images kept" not in line for line in lines if "feed done" in line), lines
