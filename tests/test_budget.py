"""The request budget under many concurrent takers, on a virtual clock (no real waiting)."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import random
import uuid
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from selfiescope.core.web import TokenBucket
from selfiescope.core.manifest import Manifest


class VirtualTime:
    """A clock that jumps to the next sleeper's wake-up once every task is blocked."""

    def __init__(self) -> None:
        self.now = 1000.0
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self.now + max(0.0, seconds), next(self._seq), future))
        await future

    async def run(self, coros: list) -> list:  # noqa: ANN001 - coroutines
        tasks = [asyncio.ensure_future(c) for c in coros]
        while not all(t.done() for t in tasks):
            for _ in range(20):  # let every task run until it blocks on a sleep
                await asyncio.sleep(0)
            if self._sleepers:
                wake, _, future = heapq.heappop(self._sleepers)
                self.now = max(self.now, wake)
                future.set_result(None)
        return [t.result() for t in tasks]


def request_times(tmp_path: Path, *, per_minute: float, burst: float, jitter_s: float, takers: int,
                  each: int, seed: int = 0) -> tuple[list[float], float]:
    """When each of ``takers * each`` requests went out (virtual seconds from the start)."""
    manifest = Manifest.at_root(tmp_path)  # shared by the examples: each takes a fresh key
    vt = VirtualTime()
    bucket = TokenBucket(manifest, uuid.uuid4().hex, per_minute, burst=burst, jitter_s=jitter_s,
                         clock=vt.clock, sleep=vt.sleep, rng=random.Random(seed))
    start = vt.now
    times: list[float] = []

    async def taker() -> None:
        for _ in range(each):
            await bucket.take()
            times.append(vt.now - start)

    try:
        asyncio.run(vt.run([taker() for _ in range(takers)]))
    finally:
        manifest.close()
    return sorted(times), bucket.waited_s


def test_jitter_does_not_lower_the_rate_of_concurrent_takers(tmp_path: Path) -> None:
    # 10 requests/s shared by 8 jobs, 0.5 s of jitter: holding a lock while sleeping the jitter
    # made it about 4/s whatever the budget.
    rate = 10.0
    for jitter in (0.0, 0.5):
        times, _ = request_times(tmp_path, per_minute=rate * 60, burst=1, jitter_s=jitter, takers=8, each=50)
        achieved = (len(times) - 1) / times[-1]
        assert 0.9 * rate <= achieved <= rate * 1.01, (jitter, achieved)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(per_minute=st.floats(30, 6000), burst=st.integers(1, 10), jitter_s=st.floats(0, 2),
       takers=st.integers(1, 12), seed=st.integers(0, 1000))
def test_any_window_stays_within_the_budget_and_the_whole_run_near_it(
    tmp_path: Path, per_minute: float, burst: int, jitter_s: float, takers: int, seed: int,
) -> None:
    rate = per_minute / 60
    each = 30
    times, _ = request_times(tmp_path, per_minute=per_minute, burst=burst, jitter_s=jitter_s, takers=takers,
                             each=each, seed=seed)
    n = len(times)
    # within the budget: a request's slot is at most one slot length (and jitter_s) before it, so
    # any window of length W holds at most burst + (W + jitter) * rate requests
    jitter = min(jitter_s, 1 / rate)
    for i in range(n):
        for j in range(i, n):
            window = times[j] - times[i]
            assert j - i + 1 <= burst + (window + jitter) * rate + 1e-6
    # and not far below it: the last request goes out by the time the budget allows it, plus jitter
    assert times[-1] <= max(0.0, (n - burst) / rate) + jitter + 1e-6


def test_a_429_while_others_wait_moves_their_slots_after_the_wait(tmp_path: Path) -> None:
    manifest = Manifest.at_root(tmp_path)
    vt = VirtualTime()
    bucket = TokenBucket(manifest, "p", 60, burst=1, clock=vt.clock, sleep=vt.sleep)
    start = vt.now
    went: list[float] = []

    async def taker() -> None:
        await bucket.take()
        went.append(vt.now - start)

    async def scenario() -> None:
        await vt.run([taker(), taker(), taker(), penalize_soon()])

    async def penalize_soon() -> None:
        await vt.sleep(0.5)  # the first request went out; two wait for their slots at 1 s and 2 s
        bucket.penalize(10)

    try:
        asyncio.run(scenario())
    finally:
        manifest.close()
    assert went[0] == 0
    assert all(t >= 10.5 for t in went[1:]), went  # none goes out during the 429's wait
    assert went[2] - went[1] >= 1.0 - 1e-9  # and they keep to the budget after it


# --- downloads and the budget: a 429's wait is capped and paused, a host out of reach fails at once ---
class Answer:
    def __init__(self, status: int, headers: dict[str, str]) -> None:
        self.status, self.headers = status, headers


class Requests:
    """A request API whose answers are scripted: an Answer, or an exception to raise."""

    def __init__(self, *answers: object) -> None:
        self.answers = list(answers)
        self.calls = 0

    async def get(self, url: str, **kwargs: object) -> Answer:
        self.calls += 1
        answer = self.answers.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return answer  # type: ignore[return-value]


async def test_a_429_on_a_download_waits_inside_the_cap_and_stops_beyond_it() -> None:


    from selfiescope.core.web import DownloadError, RateLimited, fetch_image

    slept: list[float] = []
    paused: list[str] = []
    heard: list[float] = []

    async def sleep(s: float) -> None:
        slept.append(s)

    async def waiting(awaitable):  # noqa: ANN001, ANN202 - a stall clock's pause
        paused.append("paused")
        return await awaitable

    with pytest.raises(RateLimited) as exc:
        await fetch_image(Requests(Answer(429, {"retry-after": "3600"})), "https://cdn.test/a.jpg?sig=S", bucket=None,
                          max_bytes=10, sleep=sleep, max_retry_after_s=900, waiting=waiting, on_429=heard.append)
    assert exc.value.retry_after_s == 3600 and slept == [] and heard == []
    with pytest.raises(DownloadError, match="HTTP 404"):
        await fetch_image(Requests(Answer(429, {"retry-after": "7"}), Answer(404, {})), "https://cdn.test/a.jpg",
                          bucket=None, max_bytes=10, sleep=sleep, max_retry_after_s=900, waiting=waiting,
                          on_429=heard.append)
    assert slept == [7.0] and paused == ["paused"] and heard == [7.0]


async def test_a_host_out_of_reach_fails_at_once_without_backoff() -> None:

    from playwright.async_api import Error as PlaywrightError

    from selfiescope.core.web import DownloadError, fetch_image, unreachable_reason

    slept: list[float] = []

    async def sleep(s: float) -> None:
        slept.append(s)

    for raw, why in (("APIRequestContext.get: connect ECONNREFUSED 127.0.0.1:9\nCall log:", "connection refused"),
                     ("APIRequestContext.get: getaddrinfo ENOTFOUND cdn.invalid\nCall log:", "no such host in DNS")):
        requests = Requests(PlaywrightError(raw))
        with pytest.raises(DownloadError) as exc:
            await fetch_image(requests, "https://cdn.invalid/a.jpg?sig=S", bucket=None, max_bytes=10, retries=3,
                              sleep=sleep)
        assert exc.value.unreachable and exc.value.transient and exc.value.reason == why
        assert requests.calls == 1 and slept == [] and "sig=S" not in str(exc.value)
    assert unreachable_reason("Page.goto: net::ERR_NAME_NOT_RESOLVED at https://x.invalid/") == "no such host in DNS"
    assert unreachable_reason("Page.goto: net::ERR_CONNECTION_REFUSED at http://127.0.0.1:9/") == "connection refused"
    assert unreachable_reason("Timeout 30000ms exceeded") is None


def test_slots_of_requests_cancelled_while_waiting_are_given_back_but_a_429_is_kept(tmp_path: Path) -> None:
    manifest = Manifest.at_root(tmp_path)
    vt = VirtualTime()
    bucket = TokenBucket(manifest, "c", 60, burst=1, clock=vt.clock, sleep=vt.sleep)

    async def scenario() -> None:
        await bucket.take()  # the burst: goes at once
        waiting = [asyncio.ensure_future(bucket.take()) for _ in range(5)]  # slots 1 s .. 5 s ahead
        for _ in range(5):
            await asyncio.sleep(0)
        for task in waiting:  # the run stops (Ctrl-C, a limit reached)
            task.cancel()
        await asyncio.gather(*waiting, return_exceptions=True)

    try:
        asyncio.run(scenario())
        bucket.flush()
        again = TokenBucket(manifest, "c", 60, burst=1, clock=vt.clock, sleep=vt.sleep)
        assert again.tokens == pytest.approx(0.0)  # the one request sent is counted, the five never sent are not
        again.penalize(30)
        again.flush()
        assert TokenBucket(manifest, "c", 60, burst=1, clock=vt.clock, sleep=vt.sleep).tokens == pytest.approx(-29.0)
    finally:
        manifest.close()
