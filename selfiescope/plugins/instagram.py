"""The ``instagram`` source: the posts of hashtags, through a real browser.

Each hashtag is a job in its own browser context. The job opens
``{base_url}/explore/tags/{tag}/``, closes pop-ups by role and accessible name,
scrolls until the feed stops growing (or the engine's limit is reached), and reads
posts from the JSON the page loads (id, shortcode, sizes, caption, owner, time) and
from the DOM for the rest, always taking the largest image. Images are downloaded
through the context's request API, so the session's cookies apply. A post's id is
its shortcode (the id in its URL, which the DOM and the JSON both give); the numeric
``pk`` is kept in ``origin.extra``. Posts in the manifest are skipped (resume).

Credentials come from ``SELFIESCOPE_INSTAGRAM_USERNAME`` / ``..._PASSWORD`` or from a
session saved by ``selfiescope login``; they are never logged or stored anywhere else.
A login wall without credentials, a challenge, or a two-factor prompt stops the
source with a message saying what to do, rather than retrying into a ban.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import re
from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urljoin, urlparse

from pydantic import Field

from ..core.browser import Lease, browser_pool, leased_events, load_session, save_session, session_path
from ..core.components import Job, Options, Source
from ..core.events import ImageEvent, Origin
from ..core.hookspecs import hookimpl
from ..core.web import (
    DownloadError, TokenBucket, click_dialog_buttons, fetch_image, largest_from_srcset,
    parse_retry_after, scroll_and_wait,
)

log = logging.getLogger("selfiescope.instagram")

USERNAME_ENV = "SELFIESCOPE_INSTAGRAM_USERNAME"
PASSWORD_ENV = "SELFIESCOPE_INSTAGRAM_PASSWORD"

# Buttons that close a pop-up while granting the least: decline optional cookies, "not now".
DISMISS_BUTTONS: dict[str, list[str]] = {
    "en": ["Decline optional cookies", "Only allow essential cookies", "Not now", "Not Now", "Cancel"],
    "fr": ["Refuser les cookies optionnels", "Autoriser uniquement les cookies essentiels", "Plus tard",
           "Pas maintenant"],
    "de": ["Optionale Cookies ablehnen", "Nur erforderliche Cookies erlauben", "Jetzt nicht", "Später"],
    "es": ["Rechazar cookies opcionales", "Permitir solo cookies necesarias", "Ahora no"],
    "it": ["Rifiuta cookie facoltativi", "Consenti solo i cookie essenziali", "Non ora"],
    "pt": ["Recusar cookies opcionais", "Permitir somente cookies essenciais", "Agora não", "Agora nao"],
}
CHALLENGE_PATHS = ("/challenge", "/checkpoint", "/accounts/suspended")
SHORTCODE = re.compile(r"/(?:p|reel)/([A-Za-z0-9_-]+)")
_DOM_POSTS = """() => {
  const out = [];
  for (const a of document.querySelectorAll('a[href*="/p/"], a[href*="/reel/"]')) {
    if (a.dataset.ssSeen) continue;
    const img = a.querySelector('img');
    if (!img) continue;
    a.dataset.ssSeen = '1';
    out.push({href: a.getAttribute('href'), src: img.getAttribute('src'),
              srcset: img.getAttribute('srcset'), alt: img.getAttribute('alt')});
  }
  return out;
}"""


class SourceStopped(RuntimeError):
    """The site asks for a person (login, challenge, long rate limit): stop, say what to do."""


class InstagramOptions(Options):
    base_url: str = "https://www.instagram.com"
    login: bool = Field(True, description="log in with the environment's credentials at a login wall")
    scroll_pause_s: float = Field(2.0, gt=0, description="longest wait for the feed to grow after a scroll")
    max_idle_scrolls: int = Field(3, ge=1, description="scrolls without growth before the feed counts as ended")
    requests_per_minute: float = Field(60.0, gt=0, description="per-account budget, kept across runs")
    burst: float | None = Field(None, gt=0, description="requests allowed back to back (default: a tenth of a minute's)")
    jitter_s: float = Field(0.5, ge=0, description="random extra wait per request")
    max_image_bytes: int = Field(20 * 1024 * 1024, gt=0)
    retries: int = Field(3, ge=0, description="retries of a download after a 5xx or a timeout")
    backoff_s: float = Field(1.0, ge=0)
    max_retry_after_s: float = Field(900.0, ge=0, description="a longer 429 wait stops the source instead")
    max_restarts: int = Field(2, ge=0, description="browser relaunches per job after a crash")
    languages: list[str] = Field(list(DISMISS_BUTTONS), description="languages of pop-up buttons to close")
    block_page_images: bool = Field(True, description="the page need not render images: they are downloaded")
    stall_s: float = Field(60.0, gt=0, description="no new post for this long: reload the tag page once, then fail the job")


@dataclass
class Post:
    shortcode: str
    image_url: str
    width: int | None = None
    height: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def post_from_media(media: dict[str, Any]) -> Post | None:
    """A post from one ``media`` object of Instagram's JSON (largest candidate)."""
    code = media.get("code") or media.get("shortcode")
    candidates = (media.get("image_versions2") or {}).get("candidates") or []
    if not code or not candidates:
        return None
    best = max(candidates, key=lambda c: (c.get("width") or 0) * (c.get("height") or 0))
    caption = media.get("caption") or {}
    user = media.get("user") or media.get("owner") or {}
    extra = {
        "pk": str(media.get("pk") or media.get("id") or "").split("_")[0] or None,
        "caption": caption.get("text") if isinstance(caption, dict) else caption,
        "owner": user.get("username"),
        "taken_at": media.get("taken_at"),
        "width": media.get("original_width") or best.get("width"),
        "height": media.get("original_height") or best.get("height"),
    }
    return Post(code, best["url"], best.get("width"), best.get("height"), extra)


def find_medias(data: Any) -> list[dict[str, Any]]:
    """Every object that looks like a post (has ``image_versions2``), wherever it is nested."""
    found: list[dict[str, Any]] = []
    stack = [data]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if "image_versions2" in node:
                found.append(node)
                continue
            stack.extend(reversed(list(node.values())))
        elif isinstance(node, list):
            stack.extend(reversed(node))
    return found


class FeedReader:
    """Collects posts from one tag page: JSON responses as they arrive, and the DOM."""

    def __init__(self, page: Any, base_url: str) -> None:
        self.page = page
        self.base_url = base_url
        self.json_posts: dict[str, Post] = {}
        self.more_available: bool | None = None
        self.retry_after: float | None = None
        self.login_lost = False
        self.challenged = False
        self._tasks: set[asyncio.Task[None]] = set()
        page.on("response", self._on_response)

    def _on_response(self, response: Any) -> None:
        if "/api/" in response.url or "/graphql" in response.url:
            task = asyncio.ensure_future(self._read(response))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _read(self, response: Any) -> None:
        if response.status == 429:
            self.retry_after = parse_retry_after(await response.header_value("retry-after"), 30.0)
            return
        try:
            data = await response.json()
        except Exception:  # noqa: BLE001 - not JSON, or the page went away
            data = None
        message = data.get("message") if isinstance(data, dict) else None
        if response.status in (401, 403) or message == "login_required":
            self.login_lost = True
        if message in ("checkpoint_required", "challenge_required"):
            self.challenged = True
        if response.status != 200 or data is None:
            return
        for media in find_medias(data):
            if (post := post_from_media(media)) is not None:
                self.json_posts.setdefault(post.shortcode, post)
        if isinstance(data, dict) and "more_available" in data:
            self.more_available = bool(data["more_available"])

    async def settle(self) -> None:
        """Wait until the responses seen so far are read."""
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def new_posts(self) -> tuple[list[Post], bool]:
        """Posts not returned before (the DOM's order, JSON data wherever the page loaded it),
        and whether they include the feed's last page."""
        await self.settle()
        ended = self.more_available is False  # before awaiting again: later JSON is still harvested below
        posts: list[Post] = []
        for item in await self.page.evaluate(_DOM_POSTS):
            match = SHORTCODE.search(item.get("href") or "")
            if not match:
                continue
            code = match.group(1)
            if code in self.json_posts:
                posts.append(self.json_posts.pop(code))
                continue
            url, width = largest_from_srcset(item.get("srcset"), item.get("src"))
            if url:
                posts.append(Post(code, urljoin(self.base_url + "/", url), width, None, {"alt": item.get("alt")}))
        posts.extend(self.json_posts.values())  # loaded but not (yet) in the DOM
        self.json_posts.clear()
        return posts, ended


class InstagramSource(Source):
    name = "instagram"
    Options = InstagramOptions

    def __init__(self, options: InstagramOptions, run: Any) -> None:
        super().__init__(options, run)
        self.options: InstagramOptions = options
        self.base_url = options.base_url.rstrip("/")
        self._state: dict[str, Any] | None = None
        self._login_lock = asyncio.Lock()
        self._yielded: set[str] = set()
        self._stop_reason: str | None = None
        self.bucket: TokenBucket | None = None

    async def open(self) -> None:
        self.pool = browser_pool(self.run)
        self._session_file = session_path(self.run.settings.browser)
        self._state = await asyncio.to_thread(load_session, self._session_file)
        username = os.environ.get(USERNAME_ENV) or ""
        account = hashlib.sha256(username.encode()).hexdigest()[:12] if username else "anonymous"
        self.bucket = TokenBucket(
            self.run.manifest, f"instagram:{account}@{urlparse(self.base_url).netloc}",
            self.options.requests_per_minute, burst=self.options.burst, jitter_s=self.options.jitter_s,
        )

    async def close(self) -> None:
        if self.bucket is not None:
            self.bucket.flush()

    def _dismiss_names(self) -> list[str]:
        return [n for lang in self.options.languages for n in DISMISS_BUTTONS.get(lang, [])]

    async def events(self, job: Job) -> AsyncIterator[ImageEvent]:
        block = ["image"] if self.options.block_page_images else []
        events = leased_events(
            self.pool, lambda lease: self._scrape(lease, job), storage_state=lambda: self._state,
            block=block, max_restarts=self.options.max_restarts, what=f"#{job.target}",
        )
        async with aclosing(events):  # the engine may stop early (limit): close the page at once
            async for event in events:
                yield event

    # --- one hashtag -----------------------------------------------------------------------
    async def _scrape(self, lease: Lease, job: Job) -> AsyncIterator[ImageEvent]:
        assert self.bucket is not None
        tag = job.target
        url = f"{self.base_url}/explore/tags/{quote(tag)}/"
        page = await lease.page()
        feed = FeedReader(page, self.base_url)
        await self._open_tag(lease, url, tag)
        idle = 0
        while True:
            self._check_stop()
            await click_dialog_buttons(page, self._dismiss_names())
            posts, ended = await feed.new_posts()
            for post in posts:
                event = await self._fetch_post(lease, post, job)
                if event is not None:
                    yield event
            if feed.login_lost:
                raise self._stop(f"#{tag}: the session ended mid-feed (login required); "
                                 "run `selfiescope login` or set the credential variables, then rerun")
            if feed.challenged or self._path(page.url).startswith(CHALLENGE_PATHS):
                raise self._stop(self._challenge_message())
            if ended:
                log.info("#%s: end of the feed", tag)
                return
            if feed.retry_after is not None:
                wait, feed.retry_after = feed.retry_after, None
                if wait > self.options.max_retry_after_s:
                    raise self._stop(f"#{tag}: Instagram asks to wait {wait:.0f} s (HTTP 429); stopping "
                                     "instead of hammering. Rerun later to resume.")
                log.warning("#%s: HTTP 429; waiting %.0f s as asked", tag, wait)
                self.bucket.penalize(wait)
                idle = 0
            await self.bucket.take()
            if await scroll_and_wait(page, self.options.scroll_pause_s):
                idle = 0
                continue
            await feed.settle()
            if feed.retry_after is None and feed.more_available is not False:
                idle += 1
                if idle >= self.options.max_idle_scrolls:
                    log.info("#%s: the feed stopped growing", tag)
                    return

    async def _open_tag(self, lease: Lease, url: str, tag: str) -> None:
        assert self.bucket is not None
        for attempt in range(2):
            await self.bucket.take()
            response = await lease.goto(url)
            page = await lease.page()
            path = self._path(page.url)
            if path.startswith(CHALLENGE_PATHS):
                raise self._stop(self._challenge_message())
            if path.startswith("/accounts/login"):
                if attempt == 0 and await self._log_in(lease):
                    continue
                raise self._stop(
                    f"#{tag}: Instagram shows a login wall. Set {USERNAME_ENV} and {PASSWORD_ENV}, "
                    "or run `selfiescope login` once to save a session."
                )
            if response is not None and response.status == 404:
                raise LookupError(f"#{tag}: no such hashtag ({url} answered 404)")
            await click_dialog_buttons(page, self._dismiss_names())
            return

    async def _log_in(self, lease: Lease) -> bool:
        """Log this context in (once for the whole source); False when there is no way to."""
        async with self._login_lock:
            if self._state is not None and self._state is not lease.storage_state:
                # another job logged in since this context was made: use its session
                await lease.context.add_cookies(self._state.get("cookies", []))
                lease.storage_state = self._state
                return True
            username, password = os.environ.get(USERNAME_ENV), os.environ.get(PASSWORD_ENV)
            if not (self.options.login and username and password):
                return False
            page = await lease.page()
            outcome = await submit_login(page, self.base_url, username, password, self._dismiss_names())
            if outcome == "two_factor":
                raise self._stop("Instagram asks for a security code: run `selfiescope login` once to pass "
                                 "it and save a session, then rerun")
            if outcome == "challenge":
                raise self._stop(self._challenge_message())
            if outcome != "ok":
                raise self._stop(f"login failed: {outcome}")
            state = await lease.context.storage_state()
            await asyncio.to_thread(save_session, self._session_file, state)
            self._state = lease.storage_state = state
            log.info("logged in; session saved to %s", self._session_file)
            return True

    # --- one post --------------------------------------------------------------------------
    async def _fetch_post(self, lease: Lease, post: Post, job: Job) -> ImageEvent | None:
        if post.shortcode in self._yielded:
            return None
        if await asyncio.to_thread(self.run.manifest.post_seen, self.name, post.shortcode):
            self._yielded.add(post.shortcode)
            return None
        try:
            fetched = await fetch_image(
                lease.request, post.image_url, bucket=self.bucket, max_bytes=self.options.max_image_bytes,
                retries=self.options.retries, backoff_s=self.options.backoff_s,
                timeout_s=self.run.settings.browser.timeout_s,
            )
        except DownloadError as exc:
            if not exc.transient:  # retrying will not help: do not come back to it
                self._yielded.add(post.shortcode)
                await asyncio.to_thread(self.run.manifest.mark_post, self.name, post.shortcode, job.target, job.label)
            log.warning("#%s: post %s skipped: %s", job.target, post.shortcode, exc)
            self.run.stats.count(job.target, "rejected", "download", 0)
            return None
        self._yielded.add(post.shortcode)
        origin = Origin(
            source=self.name, job=job.target, post_id=post.shortcode,
            post_url=f"{self.base_url}/p/{post.shortcode}/", image_url=post.image_url,
            extra={**post.extra, "image_width": post.width, "content_type": fetched.content_type},
        )
        return ImageEvent(origin=origin, label=job.label, data=fetched.data)

    # --- stopping --------------------------------------------------------------------------
    def _stop(self, reason: str) -> SourceStopped:
        self._stop_reason = self._stop_reason or reason
        log.error("instagram: %s", reason)
        return SourceStopped(reason)

    def _check_stop(self) -> None:
        if self._stop_reason:
            raise SourceStopped(self._stop_reason)

    def _challenge_message(self) -> str:
        return ("Instagram shows a challenge (\"help us confirm it's you\"); stopping this source. "
                "Run `selfiescope login` to pass it in a browser window, then rerun.")

    @staticmethod
    def _path(url: str) -> str:
        return urlparse(url).path


async def submit_login(page: Any, base_url: str, username: str, password: str,
                       dismiss: list[str]) -> str:
    """Fill and send the login form. Returns ``ok``, ``two_factor``, ``challenge`` or a reason.

    Errors are re-raised without the call details, which could quote the password.
    """
    from playwright.async_api import Error as PlaywrightError

    try:
        await page.goto(f"{base_url}/accounts/login/", wait_until="domcontentloaded")
        await click_dialog_buttons(page, dismiss)
        await page.locator("input[name=username]").fill(username)
        await page.locator("input[name=password]").fill(password)
        async with page.expect_navigation(wait_until="domcontentloaded"):
            await page.locator("input[name=password]").press("Enter")
    except PlaywrightError as exc:
        first = str(exc).splitlines()[0].replace(password, "***").replace(username, "***")
        raise PlaywrightError(f"login form: {first}") from None
    return await login_outcome(page, dismiss)


async def login_outcome(page: Any, dismiss: list[str]) -> str:
    path = urlparse(page.url).path
    if "two_factor" in path:
        return "two_factor"
    if path.startswith(CHALLENGE_PATHS):
        return "challenge"
    if path.startswith("/accounts/login"):
        text = await page.locator("body").inner_text()
        if "incorrect" in text.lower():
            return "the site rejected the username or password"
        return "still on the login page"
    await click_dialog_buttons(page, dismiss)
    cookies = await page.context.cookies()
    if not any(c["name"] == "sessionid" and c["value"] for c in cookies):
        return "no session cookie after logging in"
    return "ok"


@hookimpl
def selfiescope_sources():
    return [InstagramSource]
