"""A job's stall clock, what a job has found so far, and how a job ends."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable
from typing import TypeVar

from ...api import SiteError
from .outcomes import PageOutcome, empty

T = TypeVar("T")
log = logging.getLogger("selfiescope.instagram")
NOT_RECORDED = "not in the recording"  # a replay's reason for a download its recording does not hold


class SourceStopped(SiteError, RuntimeError):
    """The site asks for a person (login, challenge, long rate limit): stop, say what to do."""


class JobFailed(SiteError, RuntimeError):
    """One hashtag could not be finished; the message says why and what to do. Other jobs go on."""


class TagPageRateLimited(SiteError):
    """The tag page answered 429 with a wait the source honours: reload it once the wait is over."""

    def __init__(self, shown: PageOutcome) -> None:
        super().__init__(shown.what)
        self.shown = shown


class Stalled(SiteError):
    def __init__(self, waiting_on: str, after_s: float | None = None) -> None:
        super().__init__(waiting_on)
        self.waiting_on = waiting_on
        self.after_s = after_s  # the stall clock when it ran out: what the user is told, not later cleanup


class Watchdog:
    """A job's stall clock: the time since its last new post, not counting time the job was
    paused on purpose (the engine not taking events yet, a 429's wait).

    A clock made ``idle=True`` starts paused: it counts only the time spent inside
    :meth:`counting` (the image-download clock counts time spent downloading, never the time
    the feed takes between downloads)."""

    def __init__(self, stall_s: float, *, idle: bool = False) -> None:
        self.stall_s = stall_s
        self.last = time.monotonic()
        self.waiting_on = "starting"
        self._pauses = 0
        self._paused_at = self.last
        if idle:
            self._pause()

    def progress(self) -> None:
        self.last = time.monotonic()
        if self._pauses:
            self._paused_at = self.last

    def remaining(self) -> float:
        now = self._paused_at if self._pauses else time.monotonic()
        return self.stall_s - (now - self.last)

    def elapsed(self) -> float:
        """How long the clock has run since the last progress."""
        return self.stall_s - self.remaining()

    def _pause(self) -> None:
        if self._pauses == 0:
            self._paused_at = time.monotonic()
        self._pauses += 1

    def _resume(self) -> None:
        self._pauses -= 1
        if self._pauses == 0:
            self.last += time.monotonic() - self._paused_at

    async def paused(self, awaitable: Awaitable[T]) -> T:
        """Await without the time counting towards a stall."""
        self._pause()
        try:
            return await awaitable
        finally:
            self._resume()

    async def counting(self, what: str, awaitable: Awaitable[T]) -> T:
        """:meth:`run` on a clock made ``idle``: the time in here counts, the time outside does not."""
        self._resume()
        try:
            return await self.run(what, awaitable)
        finally:
            self._pause()

    async def run(self, what: str, awaitable: Awaitable[T]) -> T:
        """Await for at most what is left of the stall time; :class:`Stalled` after that. Time
        ``awaitable`` spends in :meth:`paused` (a budget or 429 wait inside a download) does not count."""
        from playwright.async_api import TimeoutError as PlaywrightTimeout

        self.waiting_on = what
        task = asyncio.ensure_future(awaitable)
        try:
            while True:
                slice_s = self.remaining() if not self._pauses else max(0.5, self.remaining())
                done, _ = await asyncio.wait({task}, timeout=max(0.05, slice_s))
                if done:
                    try:
                        return task.result()
                    except (TimeoutError, PlaywrightTimeout):
                        raise Stalled(what, self.elapsed()) from None
                if self.remaining() <= 0 and not self._pauses:
                    raise Stalled(what, self.elapsed())
        finally:
            if not task.done():
                task.cancel()
                try:
                    await task
                except BaseException:  # noqa: BLE001 - cancelled on purpose; its own error is moot now
                    pass


class JobRun:
    """What one job has found so far (for its end-of-job verdict)."""

    def __init__(self, tag: str) -> None:
        self.tag = tag
        self.seen: set[str] = set()  # posts found in the feed and handled (new or already stored)
        self.pending: dict[str, object] = {}  # posts found, not yet handled (the source's own dict)
        self.failed: dict[str, str] = {}  # post -> why its download failed (not marked: a rerun retries it)
        self.unreachable: str | None = None  # a download found the host out of reach: check the site
        self.media_host: str | None = None  # the host of the last image asked for (never its signed URL)
        self.images = Watchdog(60.0, idle=True)  # the time downloads waited since the last image arrived
        self.images_checked = False  # the tag page was reloaded for an unreachable image host since the last image
        self.rate_reloads = 0
        self.stall_reloaded = False
        self.empty_reloaded = False

    @property
    def found(self) -> int:
        """Posts found so far, handled or not (a page that hung half-way still showed some)."""
        return len(self.seen | set(self.pending))

    def after_stall(self, stall: Stalled, waited: float) -> str:
        """No new post for ``stall_s``: the job's state while its tag page is reloaded (once);
        :class:`JobFailed` when it already was."""
        self.unreachable = None
        if self.stall_reloaded:
            raise JobFailed(
                f"#{self.tag}: stalled: no new post for {waited:.0f} s while waiting on {stall.waiting_on}, "
                f"also after reloading the tag page ({self.found} posts found). Rerun to resume; "
                "if it keeps stalling, run `selfiescope doctor` or raise plugins.instagram.stall_s"
            ) from None
        self.stall_reloaded = True
        log.warning("#%s: no new post for %.0f s; waiting on %s. Reloading the tag page (posts "
                    "already seen are skipped)", self.tag, waited, stall.waiting_on)
        return f"stalled on {stall.waiting_on}; reloading"

    def verdict(self) -> str:
        """The job's final state when it found posts and fetched every one it could; else :class:`JobFailed`."""
        if not self.seen:
            raise JobFailed(f"#{self.tag}: no posts found: {empty().message()}")
        if self.failed:
            reasons = Counter(self.failed.values()).most_common(2)
            why = "; ".join(f"{n} x {r}" for r, n in reasons)
            unrecorded = sum(1 for r in self.failed.values() if NOT_RECORDED in r)
            # a replay answers only from its recording: running it again fetches nothing more
            todo = ("they are not in the recording, so replaying again cannot fetch them: record this hashtag "
                    "again (or scrape it live) to get them" if unrecorded == len(self.failed)
                    else "they are not marked done: rerun to retry them" + (
                        f" ({unrecorded} of them are not in the recording: record this hashtag again for those)"
                        if unrecorded else ""))
            raise JobFailed(f"#{self.tag}: {len(self.failed)} of {len(self.seen)} posts could not be downloaded "
                            f"({why}); {todo}")
        return f"feed done: {len(self.seen)} posts found"
