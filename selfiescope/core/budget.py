"""A persisted request budget shared by every job of a source (one per account and site).

Concurrent jobs each reserve the next free slot and then wait for it on their own, so
one job's wait never holds up another's reservation: the budget's rate is reached
whatever the number of jobs. Jitter moves a request the budget held back by a random
offset after its slot (at most ``jitter_s``, and never more than one slot's length): the
requests the budget paces do not come on a metronome, and the rate is not lowered.
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:  # pragma: no cover
    from .manifest import Manifest


class TokenBucket:
    """A request budget: ``per_minute`` tokens refilled continuously, up to ``burst``.

    The level is saved in the manifest's ``budgets`` table under ``key`` (one per
    account and site), so restarting a run does not restart the budget. A 429 is
    honoured with :meth:`penalize`, which every job sharing the bucket then waits out,
    including those already waiting for a slot.

    Invariant: over any stretch of time ``T``, at most ``burst + T * per_minute / 60``
    slots are handed out; a request starts at its slot plus at most ``min(jitter_s, 60 / per_minute)``.
    """

    def __init__(self, manifest: "Manifest", key: str, per_minute: float, *, burst: float | None = None,
                 jitter_s: float = 0.0, clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], Any] = asyncio.sleep, rng: random.Random | None = None) -> None:
        self.manifest = manifest
        self.key = key
        self.rate = per_minute / 60.0
        self.burst = burst if burst is not None else max(1.0, per_minute / 6.0)
        self.jitter_s = jitter_s
        self.clock = clock
        self.sleep = sleep
        self.rng = rng or random.Random()
        self.waited_s = 0.0
        self._tokens, self._updated = self._load()
        self._saved_at = float("-inf")
        self._penalties = 0  # bumped by every 429: slots reserved before it are reserved again
        self._unused = 0  # slots of requests cancelled while they waited

    def _load(self) -> tuple[float, float]:
        rows = self.manifest.query("SELECT tokens, updated FROM budgets WHERE key=?", (self.key,))
        if rows:
            return float(rows[0]["tokens"]), float(rows[0]["updated"])
        return self.burst, self.clock()

    def _save(self) -> None:
        self._saved_at = self._updated
        self.manifest.execute(
            "INSERT INTO budgets(key, tokens, updated) VALUES (?,?,?) "
            "ON CONFLICT(key) DO UPDATE SET tokens=excluded.tokens, updated=excluded.updated",
            (self.key, self._tokens, self._updated),
        )

    def flush(self) -> None:
        """Save the level now (a run's end), giving back the slots of requests cancelled while
        they waited: a stopped run does not make the next one wait for requests never sent."""
        self._refill()
        self._tokens = min(self.burst, self._tokens + self._unused)
        self._unused = 0
        self._save()

    def _refill(self) -> None:
        now = self.clock()
        self._tokens = min(self.burst, self._tokens + max(0.0, now - self._updated) * self.rate)
        self._updated = now

    @property
    def tokens(self) -> float:
        """The level now; negative while slots are reserved ahead of time."""
        self._refill()
        return self._tokens

    def _reserve(self) -> float:
        """Take the next slot (no await: nothing can interleave); the seconds until it comes."""
        self._refill()
        wait = 0.0 if self._tokens >= 1 else (1 - self._tokens) / self.rate
        self._tokens -= 1
        if wait > 0 or self._updated - self._saved_at >= 1.0:
            # a level in deficit is always saved (a restart must not refill a budget in use);
            # otherwise at most once a second
            self._save()
        return wait

    async def take(self) -> float:
        """Wait for this request's slot (plus jitter); returns the seconds waited."""
        started = self.clock()
        waited_for_slot = False
        while True:
            penalties = self._penalties
            wait = self._reserve()
            if wait > 0:
                waited_for_slot = True
                try:
                    await self.sleep(wait)
                except asyncio.CancelledError:
                    if penalties == self._penalties:  # (a 429 already voided the slot)
                        self._unused += 1  # reserved, never used: given back when the level is saved
                    raise
            if penalties == self._penalties:
                break
            # A 429 came while this request waited: its slot was cancelled; take one after the wait.
        if self.jitter_s and waited_for_slot:
            # Only a request the budget held back is paced by it: one that found a token went when
            # its job got there (its own latency spreads it), and delaying it would lower the rate.
            await self.sleep(self.rng.uniform(0, min(self.jitter_s, 1 / self.rate)))
        waited = max(0.0, self.clock() - started)
        self.waited_s += waited
        return waited

    def penalize(self, seconds: float) -> None:
        """Make the next request wait at least ``seconds`` (a 429's Retry-After); requests
        already waiting for a slot take a new one after that."""
        self._refill()
        self._tokens = min(self._tokens, 1 - seconds * self.rate)
        self._penalties += 1
        self._save()
