"""What every web source needs: a persisted request budget, downloads that retry the
right failures, and reading ``srcset``. Sources (Instagram, gallery, third-party) build on it."""

from __future__ import annotations

import asyncio
import logging
import random
import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:  # pragma: no cover
    from .manifest import Manifest

log = logging.getLogger("selfiescope.web")


class RateLimited(Exception):
    def __init__(self, retry_after_s: float) -> None:
        super().__init__(f"rate limited; retry after {retry_after_s:.0f} s")
        self.retry_after_s = retry_after_s


class DownloadError(Exception):
    """A download that failed for good (after retries, or not worth retrying)."""

    def __init__(self, url: str, reason: str, *, transient: bool) -> None:
        super().__init__(f"{reason}: {url}")
        self.url = url
        self.reason = reason
        self.transient = transient  # worth trying again on a later run


class TokenBucket:
    """A request budget: ``per_minute`` tokens refilled continuously, up to ``burst``.

    The level is saved in the manifest's ``budgets`` table under ``key`` (one per
    account and site), so restarting a run does not restart the budget. A 429 is
    honoured with :meth:`penalize`, which every job sharing the bucket then waits out.
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
        self._lock = asyncio.Lock()
        self._tokens, self._updated = self._load()
        self._saved_at = float("-inf")

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
        """Save the level now (a run's end)."""
        self._save()

    def _refill(self) -> None:
        now = self.clock()
        self._tokens = min(self.burst, self._tokens + max(0.0, now - self._updated) * self.rate)
        self._updated = now

    @property
    def tokens(self) -> float:
        self._refill()
        return self._tokens

    async def take(self) -> float:
        """Wait for a token (plus jitter); returns the seconds waited."""
        async with self._lock:
            self._refill()
            wait = 0.0 if self._tokens >= 1 else (1 - self._tokens) / self.rate
            if self.jitter_s:
                wait += self.rng.uniform(0, self.jitter_s)
            if wait > 0:
                await self.sleep(wait)
                self._refill()
            self._tokens -= 1
            if self._updated - self._saved_at >= 1.0:  # persist at most once a second
                self._save()
            self.waited_s += wait
            return wait

    def penalize(self, seconds: float) -> None:
        """Make the next request wait at least ``seconds`` (a 429's Retry-After)."""
        self._refill()
        self._tokens = min(self._tokens, 1 - seconds * self.rate)
        self._save()


def parse_retry_after(value: str | None, default: float = 30.0) -> float:
    if not value:
        return default
    try:
        return max(0.0, float(value))
    except ValueError:
        from email.utils import parsedate_to_datetime

        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return default


def largest_from_srcset(srcset: str | None, fallback: str | None = None) -> tuple[str | None, int | None]:
    """The URL of the widest candidate in a ``srcset`` (``"a.jpg 150w, b.jpg 1080w"``)."""
    best: tuple[float, str] | None = None
    for part in (srcset or "").split(","):
        bits = part.strip().split()
        if not bits:
            continue
        size = 1.0
        if len(bits) > 1:
            try:
                size = float(bits[1][:-1]) if bits[1][-1] in "wx" else float(bits[1])
            except (ValueError, IndexError):
                size = 1.0
        if best is None or size > best[0]:
            best = (size, bits[0])
    if best is None:
        return fallback, None
    return best[1], int(best[0]) if best[0] > 10 else None


@dataclass
class Fetched:
    data: bytes
    content_type: str
    attempts: int


async def fetch_image(request: Any, url: str, *, bucket: TokenBucket | None, max_bytes: int, retries: int = 3,
                      backoff_s: float = 1.0, timeout_s: float = 30.0,
                      sleep: Callable[[float], Any] = asyncio.sleep) -> Fetched:
    """GET an image through a Playwright request context (so the browser's cookies apply).

    5xx, 408 and timeouts are retried with exponential backoff; a 429 waits its
    Retry-After (through the shared bucket); anything not ``image/*`` or larger than
    ``max_bytes`` fails at once.
    """
    from playwright.async_api import Error as PlaywrightError

    attempt = 0
    while True:
        attempt += 1
        if bucket is not None:
            await bucket.take()
        problem: str
        try:
            resp = await request.get(url, timeout=timeout_s * 1000, fail_on_status_code=False)
        except PlaywrightError as exc:
            text = str(exc).lower()
            if ("closed" in text or "disposed" in text) and "timeout" not in text:
                raise  # the browser or context went away: the caller recovers
            problem = "timeout" if "timeout" in text else f"network error ({str(exc).splitlines()[0]})"
        else:
            status = resp.status
            if status == 429:
                wait = parse_retry_after(resp.headers.get("retry-after"))
                log.warning("429 on a download; waiting %.0f s as asked", wait)
                if bucket is not None:
                    bucket.penalize(wait)
                else:
                    await sleep(wait)
                problem = "HTTP 429"
            elif status >= 500 or status == 408:
                problem = f"HTTP {status}"
            elif status >= 400:
                raise DownloadError(url, f"HTTP {status}", transient=False)
            else:
                ctype = resp.headers.get("content-type", "").split(";")[0].strip().lower()
                if not ctype.startswith("image/"):
                    raise DownloadError(url, f"not an image (content-type {ctype or 'missing'})", transient=False)
                length = resp.headers.get("content-length")
                if length and length.isdigit() and int(length) > max_bytes:
                    raise DownloadError(url, f"too large ({int(length)} bytes > {max_bytes})", transient=False)
                data = await resp.body()
                if len(data) > max_bytes:
                    raise DownloadError(url, f"too large ({len(data)} bytes > {max_bytes})", transient=False)
                await resp.dispose()
                return Fetched(data, ctype, attempt)
        if attempt > retries:
            raise DownloadError(url, f"{problem} after {attempt} attempts", transient=True)
        if not problem.startswith("HTTP 429"):
            delay = backoff_s * 2 ** (attempt - 1) * (1 + random.random() * 0.25)
            log.info("download %s failed (%s); retry %d in %.1f s", url, problem, attempt, delay)
            await sleep(delay)


# --- pages ---------------------------------------------------------------------------------
_HEIGHT = "() => document.documentElement.scrollHeight"
_SCROLL = """() => {
  window.scrollTo(0, document.documentElement.scrollHeight);
  window.dispatchEvent(new Event('scroll'));
}"""


async def scroll_and_wait(page: Any, pause_s: float) -> bool:
    """Scroll to the bottom; True as soon as the page grows, False if it did not within ``pause_s``."""
    from playwright.async_api import TimeoutError as PlaywrightTimeout

    before = await page.evaluate(_HEIGHT)
    await page.evaluate(_SCROLL)
    try:
        await page.wait_for_function(
            "h => document.documentElement.scrollHeight > h", arg=before,
            timeout=pause_s * 1000, polling=100,
        )
    except PlaywrightTimeout:
        return False
    return True


async def click_dialog_buttons(page: Any, names: list[str], rounds: int = 5) -> list[str]:
    """Close pop-ups: click buttons inside ``role=dialog`` whose accessible name is one of ``names``.

    Roles and accessible names are what a site keeps stable for screen readers;
    generated class names change with every deploy (and with the language).
    """
    if not names:
        return []
    pattern = re.compile("^(" + "|".join(re.escape(n) for n in names) + ")$", re.IGNORECASE)
    buttons = page.get_by_role("dialog").get_by_role("button", name=pattern)
    clicked: list[str] = []
    for _ in range(rounds):
        if not await buttons.count():
            break
        button = buttons.last  # stacked pop-ups: the one on top comes last in the document
        name = (await button.inner_text()).strip()
        await button.click(timeout=10_000)
        clicked.append(name)
        await page.wait_for_timeout(50)
    dialogs = page.get_by_role("dialog")
    if await dialogs.count():
        for label in await dialogs.evaluate_all("ds => ds.map(d => d.getAttribute('aria-label') || d.innerText.slice(0, 60))"):
            if label not in _unclosable:
                _unclosable.add(label)
                log.warning("a pop-up with no button I know how to press: %r (add its button's name)", label)
    return clicked


_unclosable: set[str] = set()
