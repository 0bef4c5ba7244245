"""The asyncio engine: sources -> bounded queue -> workers -> chain -> manifest.

The engine only moves events between named components. Sources run one task per job
and ``await queue.put`` (so a slow chain pauses them: memory stays flat); workers take
events, run the chain steps in the order settings give (synchronous steps in a thread
pool, off the loop) and record each decision in the manifest. A per-job limit counts
images already stored for that job, so rerunning a command after a crash finishes the
job instead of starting over.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .components import Job, Source, Step, job_events
from .context import RunContext
from .decisions import Decisions
from .events import Decision, ImageEvent, Reject
from .text import printable, redact_text

log = logging.getLogger("selfiescope.engine")
_DONE = object()


@dataclass
class _JobState:
    job: Job
    accepted: int = 0
    inflight: int = 0
    cond: asyncio.Condition | None = None

    def full(self) -> bool:
        return self.job.limit is not None and self.accepted >= self.job.limit

    def saturated(self) -> bool:
        return self.job.limit is not None and self.accepted + self.inflight >= self.job.limit


async def run_chain(event: ImageEvent, steps: Sequence[Step], run: RunContext) -> ImageEvent:
    """Run one event through ``steps``.

    A :class:`Reject` is a decision (``rejected``); any other exception is a failure
    (``failed``: the image is retried by a rerun and the run ends with errors). Either
    stops the chain for this image; the run goes on. An event that arrives failed (a
    source could not read it) skips the chain.
    """
    loop = asyncio.get_running_loop()
    for step in steps:
        if event.decision in (Decision.REJECTED, Decision.FAILED):
            return event
        try:
            if inspect.iscoroutinefunction(step.process):
                await step.process(event)
            else:
                await loop.run_in_executor(run.executor, step.process, event)
        except Reject as rej:
            event.reject(step.name, rej.code, rej.reason)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a broken write or a plugin bug must not stop the run
            code = getattr(exc, "code", None) or "error"
            event.fail(step.name, code if isinstance(code, str) else "error", f"{type(exc).__name__}: {exc}")
    if event.decision is Decision.PENDING:
        event.decision = Decision.ACCEPTED
    return event


class Engine:
    def __init__(self, run: RunContext, source: Source, steps: Sequence[Step], jobs: Sequence[Job]) -> None:
        self.run = run
        self.decisions = Decisions(run)
        self.source = source
        self.steps = list(steps)
        self.jobs = list(jobs)
        self.queue: asyncio.Queue[object] = asyncio.Queue(maxsize=run.settings.engine.queue_size)
        self.states = {self._key(j): _JobState(j) for j in self.jobs}

    @staticmethod
    def _key(job: Job) -> str:
        return f"{job.source}:{job.target}"

    async def _produce(self, state: _JobState) -> None:
        assert state.cond is not None
        if state.full():
            return
        agen = job_events(self.source, state.job)
        try:
            async for event in agen:
                if self.run.halted is not None:
                    break
                async with state.cond:
                    while state.saturated() and not state.full():
                        await state.cond.wait()
                    if state.full():
                        break
                    state.inflight += 1
                await self.queue.put((state, event))
                self.run.stats.queue_peak = max(self.run.stats.queue_peak, self.queue.qsize())
        finally:
            aclose = getattr(agen, "aclose", None)
            if aclose is not None:
                await aclose()

    async def _run_job(self, state: _JobState) -> None:
        """The job's source, then its final state ("done" or "failed") once every image it
        queued has settled: the counts shown with that state are the job's real ones."""
        assert state.cond is not None
        failure: Exception | None = None
        try:
            await self._produce(state)
        except Exception as exc:  # noqa: BLE001 - one job's failure is reported; the others go on
            failure = exc
        async with state.cond:
            await state.cond.wait_for(lambda: state.inflight == 0)  # workers run until every job ends
        if failure is not None:
            self._job_failed(state, failure)
        else:
            self.run.stats.set_state(state.job.target, "done", settled=True)

    def _job_failed(self, state: _JobState, exc: BaseException) -> None:
        self.run.stats.set_state(state.job.target, "failed", settled=True)
        log.error("source %s failed on %s: %s", state.job.source, redact_text(printable(state.job.target)),
                  redact_text(printable(exc)))
        self.run.stats.per_job.setdefault(state.job.target, Counter())["job_failed"] += 1
        self.run.stats.errors.append(f"{state.job.source} {printable(state.job.target)}: {printable(exc)}")

    async def _work(self) -> None:
        while True:
            item = await self.queue.get()
            try:
                if item is _DONE:
                    return
                state, event = item  # type: ignore[misc]
                ok = False
                try:
                    if self.run.halted is not None:
                        pass  # left for the rerun: nothing of it was written
                    elif await self.decisions.admit(event, state.job.target):
                        await run_chain(event, self.steps, self.run)
                        await self.decisions.settle(event, state.job.target)
                    ok = event.decision is Decision.ACCEPTED
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001 - never lose a worker: the queue would stall
                    log.exception("unexpected error on %s", event.describe())
                    self.run.stats.errors.append(f"{event.describe()}: {type(exc).__name__}: {exc}")
                finally:
                    async with state.cond:
                        state.inflight -= 1
                        state.accepted += ok
                        state.cond.notify_all()
                event.image = None  # free the decoded pixels early
            finally:
                self.queue.task_done()

    async def execute(self) -> None:
        """Run every job to completion (or its limit). Cancellation stops cleanly."""
        for state in self.states.values():
            state.cond = asyncio.Condition()
            state.accepted = await self.decisions.stored_for_job(state.job)
        n_workers = self.run.settings.engine.workers
        workers = [asyncio.create_task(self._work(), name=f"worker-{i}") for i in range(n_workers)]
        producers = [asyncio.create_task(self._run_job(s), name=f"job-{k}") for k, s in self.states.items()]
        try:
            results = await asyncio.gather(*producers, return_exceptions=True)
            for state, res in zip(self.states.values(), results):
                if isinstance(res, asyncio.CancelledError):
                    raise res
                if isinstance(res, BaseException):  # escaped _run_job: not an Exception
                    self._job_failed(state, res)
            for _ in workers:
                await self.queue.put(_DONE)
            await asyncio.gather(*workers)
        except asyncio.CancelledError:
            for t in producers:
                t.cancel()
            # Let in-flight images finish their step so nothing is left half-written.
            for t in workers:
                t.cancel()
            await asyncio.gather(*producers, *workers, return_exceptions=True)
            raise


class LocalExecutor:
    """``[compute] engine = "local"``: every step in this process, on the asyncio engine."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __aenter__(self) -> "LocalExecutor":
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    def steps_here(self, registry: Any, chain: Sequence[str]) -> list[str]:
        return list(chain)

    async def execute(self, run: RunContext, source: Source, steps: list[Step], jobs: list[Job]) -> None:
        await Engine(run, source, steps, jobs).execute()
