"""A job's stall clock, and what a job has found so far."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


class Stalled(Exception):
    def __init__(self, waiting_on: str) -> None:
        super().__init__(waiting_on)
        self.waiting_on = waiting_on


class Watchdog:
    """A job's stall clock: the time since its last new post, not counting time the job was
    paused on purpose (the engine not taking events yet, a 429's wait)."""

    def __init__(self, stall_s: float) -> None:
        self.stall_s = stall_s
        self.last = time.monotonic()
        self.waiting_on = "starting"

    def progress(self) -> None:
        self.last = time.monotonic()

    def remaining(self) -> float:
        return self.stall_s - (time.monotonic() - self.last)

    async def paused(self, awaitable: Awaitable[T]) -> T:
        """Await without the time counting towards a stall."""
        started = time.monotonic()
        try:
            return await awaitable
        finally:
            self.last += time.monotonic() - started

    async def run(self, what: str, awaitable: Awaitable[T]) -> T:
        """Await for at most what is left of the stall time; :class:`Stalled` after that."""
        from playwright.async_api import TimeoutError as PlaywrightTimeout

        self.waiting_on = what
        try:
            return await asyncio.wait_for(awaitable, max(0.05, self.remaining()))
        except (TimeoutError, PlaywrightTimeout):
            raise Stalled(what) from None


class JobRun:
    """What one job has found so far (for its end-of-job verdict)."""

    def __init__(self, tag: str) -> None:
        self.tag = tag
        self.seen: set[str] = set()  # posts found in the feed (new or already stored)
        self.failed: dict[str, str] = {}  # post -> why its download failed (not marked: a rerun retries it)
        self.retry: list = []  # posts listed but not tried yet when the site was checked (a reload)
        self.unreachable: str | None = None  # a download found the host out of reach: check the site
        self.rate_reloads = 0
        self.stall_reloaded = False
        self.empty_reloaded = False
