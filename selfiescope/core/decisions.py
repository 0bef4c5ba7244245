"""The one place that settles an image: record its outcome, count it, tell the observers.

Every executor (the local engine, the Dask client, the pytest runner for plugin authors)
calls :meth:`Decisions.settle` once per image (through one :class:`Decisions` per run, or the
module's :func:`settle`), so the three outcomes mean the same everywhere:

- ``accepted``: the image passed the chain (and is stored when the chain stores);
- ``rejected``: a step decided against it (a :class:`Reject`); final, kept in the manifest;
- ``failed``: something broke (a write, a read, a plugin bug). Not a decision: the
  manifest's ``failures`` table keeps it, the run ends with errors (exit 1), and running
  the same command again retries the image.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import TYPE_CHECKING

from .components import Job
from .context import is_fatal
from .events import Decision, ImageEvent
from .likeness import DEFAULT_MAX_DISTANCE, DEFAULT_MAX_PIXELS, ForgottenLikeness, load_likeness
from .privacy import forget_reason, forgotten

if TYPE_CHECKING:  # pragma: no cover
    from .context import RunContext

log = logging.getLogger("selfiescope.engine")
LIKENESS_SERVICE = "privacy.likeness"
_LIKENESS_LOCK = threading.Lock()


class Decisions:
    """One run's gate and settling, bound to the run once: an executor makes one per run and
    calls it for every image (the module's functions do the same for a single call)."""

    def __init__(self, run: "RunContext") -> None:
        self.run = run

    async def settle(self, event: ImageEvent, job: str) -> None:
        """Record ``event``'s outcome in the manifest, count it under ``job`` and fire the hooks."""
        run = self.run
        if event.decision is Decision.PENDING:  # the chain ran to its end
            event.decision = Decision.ACCEPTED
        record = asyncio.get_running_loop().run_in_executor(run.executor, run.manifest.record, event, run.run_id)
        try:
            await asyncio.shield(record)
        except asyncio.CancelledError:
            # The thread records the image anyway: wait for it, so that what the manifest holds
            # was also counted and seen by the observers (dedup commits its hashes there), then stop.
            try:
                await record
            except Exception:  # noqa: BLE001 - not recorded: nothing to tell
                raise asyncio.CancelledError from None
            self._count_and_notify(event, job)
            raise
        except Exception as exc:  # noqa: BLE001 - a manifest problem is this image's failure, not the run's end
            if is_fatal(exc):  # a full disk: the run ends with one line, not one per image
                run.halt(exc)
                return
            log.error("cannot record %s in the manifest: %s: %s", event.describe(), type(exc).__name__, exc)
            event.fail("manifest", "record_failed", f"{type(exc).__name__}: {exc}")
        self._count_and_notify(event, job)

    def _count_and_notify(self, event: ImageEvent, job: str) -> None:
        run = self.run
        run.stats.count(job, event.decision.value, event.reject_code, event.size, event.reject_reason,
                        stored=event.location is not None)
        if event.decision is Decision.FAILED and run.halted is None:  # a halted run says why in one line
            log.warning("%s failed in %s: %s", event.describe(), event.rejected_by, event.reject_reason)
        self._notify(event)

    def _notify(self, event: ImageEvent) -> None:
        """Fire the observer hook of ``event``'s outcome; an observer's bug is a run error, not the run's end."""
        run = self.run
        hook = {
            Decision.ACCEPTED: run.hook.selfiescope_image_accepted,
            Decision.REJECTED: run.hook.selfiescope_image_rejected,
            Decision.FAILED: run.hook.selfiescope_image_failed,
        }[event.decision]
        try:
            hook(event=event, run=run)
        except Exception as exc:  # noqa: BLE001 - an observer's bug must not stop the run
            if is_fatal(exc):
                run.halt(exc)
                return
            log.error("a plugin's %s hook failed on %s: %s: %s", event.decision.value, event.describe(),
                      type(exc).__name__, exc)
            run.stats.errors.append(f"an observer plugin failed on {event.describe()}: {type(exc).__name__}: {exc}")

    async def admit(self, event: ImageEvent, job: str) -> bool:
        """The privacy gate before the chain (every executor calls it): pseudonymise the event's
        owner and drop its caption; False for an image or post that ``forget`` removed, which is
        then counted as rejected (``forgotten``) and never recorded, so it leaves no trace.

        Forgotten means: the same bytes, post or owner (exact tombstones), or the same photo as
        dedup sees it (a perceptual tombstone within dedup's distance, mirrored copies included).
        The perceptual check decodes the image a second time, small, and only on a dataset that
        has forgotten something."""
        run = self.run
        loop = asyncio.get_running_loop()
        gone = await loop.run_in_executor(run.executor, forgotten, event, run.manifest,
                                          run.settings.privacy.store_captions)
        if not gone:
            likeness = await loop.run_in_executor(run.executor, self._likeness)
            if len(likeness):
                gone = await loop.run_in_executor(run.executor, likeness.matches_event, event, _max_pixels(run))
        if not gone:
            return True
        event.reject(*forget_reason())
        run.stats.count(job, "rejected", event.reject_code, event.size)
        self._notify(event)
        return False

    def _likeness(self) -> ForgottenLikeness:
        """The run's opened perceptual tombstones (opened once: only ``forget`` adds tombstones,
        and it holds the root's lock, so none appear during a run)."""
        run = self.run

        def load() -> ForgottenLikeness:
            distance = _chain_option(run, "max_distance", DEFAULT_MAX_DISTANCE, at_least_default=False)
            return load_likeness(run.manifest, distance)

        with _LIKENESS_LOCK:
            return run.service(LIKENESS_SERVICE, load)

    # --- what earlier runs already did (the resume checks every executor and source share) ---
    async def already_stored(self, content_hash: str) -> bool:
        """Whether these bytes were stored by a run before this one: a source skips them, so a
        rerun resumes where the last run stopped (whatever executor runs the chain)."""
        run = self.run
        return await asyncio.get_running_loop().run_in_executor(
            run.executor, run.manifest.is_stored, content_hash, run.run_id
        )

    async def stored_for_job(self, job: Job) -> int:
        """Images already stored for ``job``: its limit counts them, so a rerun finishes the job."""
        run = self.run
        return await asyncio.get_running_loop().run_in_executor(
            run.executor, run.manifest.stored_count, job.source, job.target, job.label
        )


def _chain_option(run: "RunContext", key: str, default: int, *, at_least_default: bool) -> int:
    """The largest integer option ``key`` of the chain's steps (``default`` when none has it):
    the gate's distance is dedup's ``max_distance`` and its size limit the decoder's
    ``max_pixels``, read from settings without naming the steps (core names no plugin)."""
    values = []
    for name in getattr(run.pipeline, "chain", None) or []:
        value = run.options_for(name).get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            values.append(value)
    if at_least_default or not values:
        values.append(default)
    return max(values)


def _max_pixels(run: "RunContext") -> int:
    return _chain_option(run, "max_pixels", DEFAULT_MAX_PIXELS, at_least_default=True)


async def settle(run: "RunContext", event: ImageEvent, job: str) -> None:
    """:meth:`Decisions.settle` for one image of ``run``."""
    await Decisions(run).settle(event, job)


async def admit(run: "RunContext", event: ImageEvent, job: str) -> bool:
    """:meth:`Decisions.admit` for one image of ``run``."""
    return await Decisions(run).admit(event, job)


async def already_stored(run: "RunContext", content_hash: str) -> bool:
    """Whether these bytes were stored by a run before this one: a source skips them, so a
    rerun resumes where the last run stopped (whatever executor runs the chain)."""
    return await Decisions(run).already_stored(content_hash)


async def stored_for_job(run: "RunContext", job: Job) -> int:
    """:meth:`Decisions.stored_for_job` for ``run``."""
    return await Decisions(run).stored_for_job(job)
