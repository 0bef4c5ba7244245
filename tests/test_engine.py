"""The engine and plugin system, with test-local plugins (no browser, no face detection)."""

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator

import pytest

from selfiescope.core.app import App
from selfiescope import hookimpl
from selfiescope.core.components import Job, Options, Source, Step
from selfiescope.core.events import ImageEvent, Origin, Reject
from selfiescope.core.manifest import Manifest
from selfiescope.core.plugins import build_registry
from selfiescope.core.settings import ScrapePipeline, settings_from_dict
from selfiescope.pipelines.collecting.collect import collect


class CounterOptions(Options):
    count: int = 50
    delay_s: float = 0.0


class CountingSource(Source):
    """Yields ``count`` distinct events per job, and remembers how many it produced."""

    name = "counting"
    Options = CounterOptions
    produced = 0

    async def events(self, job: Job) -> AsyncIterator[ImageEvent]:
        for i in range(self.options.count):
            type(self).produced += 1
            await asyncio.sleep(self.options.delay_s)
            data = f"{job.target}-{i}".encode()
            yield ImageEvent(origin=Origin(source=self.name, job=job.target, post_id=f"{job.target}-{i}"),
                             label=job.label, data=data)


class Trail(Step):
    """Appends its name to event.notes['trail'] (to check ordering)."""

    name = "trail_a"

    def process(self, event: ImageEvent) -> None:
        event.notes.setdefault("trail", []).append(self.name)


class TrailB(Trail):
    name = "trail_b"


class SlowOptions(Options):
    delay_s: float = 0.01


class Slow(Step):
    name = "slow"
    Options = SlowOptions
    in_chain = 0
    peak = 0
    lock = threading.Lock()

    def process(self, event: ImageEvent) -> None:
        with self.lock:
            type(self).in_chain += 1
            type(self).peak = max(type(self).peak, type(self).in_chain)
        time.sleep(self.options.delay_s)
        with self.lock:
            type(self).in_chain -= 1


class Picky(Step):
    """Raises a bug on every 3rd image, rejects every 5th."""

    name = "picky"

    def process(self, event: ImageEvent) -> None:
        n = int(event.origin.post_id.rsplit("-", 1)[1])
        if n % 3 == 0:
            raise ZeroDivisionError("plugin bug")
        if n % 5 == 0:
            raise Reject("multiple_of_five", f"image {n} is a multiple of 5")


class Record(Step):
    name = "record"
    seen: list[str] = []

    async def process(self, event: ImageEvent) -> None:
        event.notes["final_trail"] = list(event.notes.get("trail", []))
        type(self).seen.append(event.origin.post_id)


class TestPlugin:
    @hookimpl
    def selfiescope_sources(self):
        return [CountingSource]

    @hookimpl
    def selfiescope_steps(self):
        return [Trail, TrailB, Slow, Picky, Record]


class Observer:
    def __init__(self):
        self.accepted, self.rejected, self.failed, self.started, self.finished = [], [], [], 0, None

    @hookimpl
    def selfiescope_run_started(self, run):
        self.started += 1

    @hookimpl
    def selfiescope_image_accepted(self, event, run):
        self.accepted.append(event)

    @hookimpl
    def selfiescope_image_rejected(self, event, run):
        self.rejected.append(event)

    @hookimpl
    def selfiescope_image_failed(self, event, run):
        self.failed.append(event)

    @hookimpl
    def selfiescope_run_finished(self, run, stats):
        self.finished = stats


def settings_for(tmp_path, **engine):
    return settings_from_dict({"storage": {"root": str(tmp_path / "data")}, "engine": engine})


def pipeline(chain, targets=("a",), limit=None, options=None):
    p = ScrapePipeline(kind="scrape", source="counting", urls=list(targets), label="selfie",
                       chain=chain, limit=limit, options=options or {})
    p._report_only = True  # the engine's mechanics, with test steps that store nothing
    return p


def run(tmp_path, chain, observer=None, engine=None, **kw):
    settings = settings_for(tmp_path, **(engine or {}))
    extra = [TestPlugin()] + ([observer] if observer else [])
    return asyncio.run(collect(App.create(settings, plugins=extra), "t", pipeline=pipeline(chain, **kw))), settings


def test_builtins_are_registered_like_third_party_plugins():
    pm = build_registry(entrypoints=False).pm
    names = [name for name, _ in pm.list_name_plugin()]
    assert "selfiescope.plugins.folder" in names
    assert build_registry(entrypoints=False).sources["folder"].__module__ == "selfiescope.plugins.folder"


def test_chain_runs_in_the_order_settings_give(tmp_path):
    Record.seen = []
    obs = Observer()
    run(tmp_path, ["trail_b", "trail_a", "record"], obs, options={"counting": {"count": 5}})
    assert [e.notes["final_trail"] for e in obs.accepted] == [["trail_b", "trail_a"]] * 5
    obs2 = Observer()
    run(tmp_path / "2", ["trail_a", "trail_b", "record"], obs2, options={"counting": {"count": 5}})
    assert {tuple(e.notes["final_trail"]) for e in obs2.accepted} == {("trail_a", "trail_b")}


def test_a_plugin_that_raises_fails_that_image_and_the_run_goes_on(tmp_path):
    """A plugin's exception is a failure, not a decision: the image is not marked rejected (a
    rerun retries it), the run goes on and ends with errors."""
    obs = Observer()
    stats, settings = run(tmp_path, ["picky", "record"], obs, options={"counting": {"count": 30}})
    assert stats.seen == 30
    errors = obs.failed
    fives = [e for e in obs.rejected if e.reject_code == "multiple_of_five"]
    assert len(errors) == 10 and all(e.reject_reason == "ZeroDivisionError: plugin bug" for e in errors)
    assert all(e.rejected_by == "picky" and e.reject_code == "error" for e in errors)
    assert len(fives) == 4  # 5, 10, 20, 25 (0, 15 are multiples of 3 too)
    assert stats.accepted == 16 and "final_trail" not in errors[0].notes  # rest of chain skipped
    assert stats.failed == 10 and stats.error_lines() == ["10 images failed (error): ZeroDivisionError: plugin bug"]
    m = Manifest.at_root(settings.storage.root)
    assert not m.query("SELECT 1 FROM images WHERE reason LIKE 'ZeroDivisionError%'")
    assert m.query("SELECT COUNT(*) FROM failures WHERE step='picky'")[0][0] == 10
    assert obs.started == 1 and obs.finished is stats and stats.status == "finished_with_errors"


def test_backpressure_keeps_the_queue_bounded(tmp_path):
    CountingSource.produced = 0
    Slow.peak = 0
    obs = Observer()
    engine = {"queue_size": 4, "workers": 2}
    stats, _ = run(tmp_path, ["slow"], obs, engine=engine, options={"counting": {"count": 400}, "slow": {"delay_s": 0.002}})
    assert stats.seen == 400 and stats.accepted == 400
    assert stats.queue_peak <= 4
    assert Slow.peak <= 2


def test_backpressure_pauses_the_source(tmp_path):
    """While the chain is stuck, the source is not drained beyond queue + workers."""
    CountingSource.produced = 0
    settings = settings_for(tmp_path, queue_size=3, workers=2)
    gate = threading.Event()

    class Stuck(Step):
        name = "stuck"

        def process(self, event):
            gate.wait(10)

    class P:
        @hookimpl
        def selfiescope_steps(self):
            return [Stuck]

    async def main():
        task = asyncio.create_task(collect(App.create(settings, plugins=[TestPlugin(), P()]), "t", pipeline=pipeline(["stuck"], options={"counting": {"count": 1000}})))
        await asyncio.sleep(0.5)
        produced_while_stuck = CountingSource.produced
        gate.set()
        stats = await task
        return produced_while_stuck, stats

    produced_while_stuck, stats = asyncio.run(main())
    # 2 in the workers + 3 in the queue + 1 waiting in put()
    assert produced_while_stuck <= 2 + 3 + 1
    assert stats.accepted == 1000


def test_limit_is_exact_and_counts_only_what_is_stored(tmp_path):
    obs = Observer()
    stats, settings = run(tmp_path, ["record"], obs, targets=("a", "b"), limit=7, options={"counting": {"count": 50}})
    assert stats.per_job["a"]["accepted"] == 7 and stats.per_job["b"]["accepted"] == 7
    # this chain stores nothing, so nothing counts as done: a rerun does the job again
    stats2, _ = run(tmp_path, ["record"], Observer(), targets=("a", "b"), limit=7, options={"counting": {"count": 50}})
    assert stats2.per_job["a"]["accepted"] == 7 and stats2.per_job["b"]["accepted"] == 7
    m = Manifest.at_root(settings.storage.root)
    try:  # as if a storing step had stored five of job a: the rerun tops it up to the limit
        m.execute("UPDATE images SET location='x' WHERE rowid IN (SELECT rowid FROM images WHERE job='a' LIMIT 5)")
    finally:
        m.close()
    stats3, _ = run(tmp_path, ["record"], Observer(), targets=("a",), limit=7, options={"counting": {"count": 50}})
    assert stats3.per_job["a"]["accepted"] == 2


def test_cancellation_is_clean_and_saves_what_was_done(tmp_path):
    settings = settings_for(tmp_path, queue_size=4, workers=2)
    obs = Observer()

    async def main():
        task = asyncio.create_task(collect(App.create(settings, plugins=[TestPlugin(), obs]), "t", pipeline=pipeline(["slow", "record"], options={
            "counting": {"count": 10_000}, "slow": {"delay_s": 0.005}})))
        await asyncio.sleep(1.0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    m = Manifest.at_root(settings.storage.root)
    (run_row,) = m.query("SELECT status, stats FROM runs")
    assert run_row["status"] == "cancelled"
    stored = m.query("SELECT COUNT(*) n FROM images WHERE decision='accepted'")[0]["n"]
    assert 0 < stored < 10_000
    assert stored == len(obs.accepted)  # every image reported accepted is in the manifest
    assert obs.finished is not None and obs.finished.status == "cancelled"


def test_trace_env_var_logs_hook_calls(monkeypatch, caplog):
    monkeypatch.setenv("SELFIESCOPE_TRACE_PLUGINS", "1")
    with caplog.at_level(logging.WARNING, logger="selfiescope.trace"):
        build_registry(entrypoints=False)
    assert any("hook selfiescope_sources" in r.getMessage() for r in caplog.records)
