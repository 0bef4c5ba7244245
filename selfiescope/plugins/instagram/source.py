"""The ``instagram`` source: the posts of hashtags, through a real browser.

Each hashtag is a job in its own browser context. The job opens
``{base_url}/explore/tags/{tag}/``, closes pop-ups by role and accessible name,
scrolls until the feed ends (or the engine's limit is reached), and reads posts from
the feed JSON the page loads and from the DOM, always taking the largest image.
Images are downloaded through the context's request API, so the session's cookies
apply; an expired signed URL is refreshed from the post's page. A post's id is its
shortcode; the numeric ``pk`` is kept in ``origin.extra``. Posts in the manifest are
skipped (resume); a post is marked done only when it is stored or gone for good.

Nothing waits without a deadline, and no job ends quietly: a job with no new post for
``stall_s`` reloads its tag page once (skipping what it has seen), then, if still no new
post comes, fails saying what it waited on; after a 429 the feed is reloaded once the wait is over; a job that
found no post, or could not download some, ends with an error that says what to do.
Each job's state goes to ``run.stats`` (the CLI shows it).

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
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any
from urllib.parse import quote, urlparse

from pydantic import Field

from ...core.secrets import credential
from ...core.browser import Lease, browser_pool, leased_events, load_session, save_session, session_path
from ...core.components import Job, Options, Source
from ...core.events import ImageEvent, Origin
from ...core.proxy import proxy_problem
from ...core.web import (DownloadError, RateLimited, SiteUnreachable, TokenBucket, click_dialog_buttons, fetch_image,
                         scroll_and_wait, settle_failed_download, within)
from .feed import FeedReader, Post, image_url_from_post_page, is_feed_url
from .incremental import Incremental
from .login import CHALLENGE_PATHS, submit_login
from .watchdog import JobRun, Stalled, Watchdog

log = logging.getLogger("selfiescope.instagram")

USERNAME_ENV = "SELFIESCOPE_INSTAGRAM_USERNAME"
PASSWORD_ENV = "SELFIESCOPE_INSTAGRAM_PASSWORD"

# Buttons known to close a pop-up while granting the least. Unknown dialogs are handled by
# core.web's decline / close patterns; this list only goes first.
DISMISS_BUTTONS: dict[str, list[str]] = {
    "en": ["Decline optional cookies", "Only allow essential cookies", "Not now", "Not Now", "Cancel"],
    "fr": ["Refuser les cookies optionnels", "Autoriser uniquement les cookies essentiels", "Plus tard",
           "Pas maintenant"],
    "de": ["Optionale Cookies ablehnen", "Nur erforderliche Cookies erlauben", "Jetzt nicht", "Später"],
    "es": ["Rechazar cookies opcionales", "Permitir solo cookies necesarias", "Ahora no"],
    "it": ["Rifiuta cookie facoltativi", "Consenti solo i cookie essenziali", "Non ora"],
    "pt": ["Recusar cookies opcionais", "Permitir somente cookies essenciais", "Agora não", "Agora nao"],
}


def dismiss_names(languages: list[str]) -> list[str]:
    """The known pop-up buttons of ``languages``, pressed first (:data:`DISMISS_BUTTONS`)."""
    return [n for lang in languages for n in DISMISS_BUTTONS.get(lang, [])]


MAX_RATE_RELOADS = 5  # reloads after 429s per job before it gives up


class SourceStopped(RuntimeError):
    """The site asks for a person (login, challenge, long rate limit): stop, say what to do."""


class JobFailed(RuntimeError):
    """One hashtag could not be finished; the message says why and what to do. Other jobs go on."""


class InstagramOptions(Options):
    base_url: str = "https://www.instagram.com"
    login: bool = Field(True, description="log in with the environment's credentials at a login wall")
    scroll_pause_s: float = Field(2.0, gt=0, description="longest wait for the feed to grow after a scroll")
    max_idle_scrolls: int = Field(3, ge=1, description="scrolls without growth before the feed counts as ended")
    requests_per_minute: float = Field(60.0, gt=0, description="per-account budget, kept across runs")
    burst: float | None = Field(None, gt=0, description="requests allowed back to back (default: a tenth of a minute's)")
    jitter_s: float = Field(0.5, ge=0, description="random delay, within its slot, of a request the budget held back (at most this)")
    max_image_bytes: int = Field(20 * 1024 * 1024, gt=0)
    retries: int = Field(3, ge=0, description="retries of a download after a 5xx or a timeout")
    backoff_s: float = Field(1.0, ge=0)
    max_retry_after_s: float = Field(900.0, ge=0, description="a longer 429 wait stops the source instead")
    max_restarts: int = Field(2, ge=0, description="browser relaunches per job after a crash")
    languages: list[str] = Field(list(DISMISS_BUTTONS), description="languages of pop-up buttons to close")
    block_page_images: bool = Field(True, description="the page loads no images, videos or fonts: the feed's JSON says "
                                                      "what to download")
    stall_s: float = Field(60.0, gt=0, description="no new post for this long: reload the tag page once, then fail the job")


async def fresh_image_url(request: Any, base_url: str, shortcode: str, timeout_s: float) -> str | None:
    """Re-read a post's page for a freshly signed image URL (None when there is none)."""
    try:
        resp = await within(timeout_s + 5, request.get(
            f"{base_url}/p/{shortcode}/", timeout=timeout_s * 1000, fail_on_status_code=False),
            "reading a post page")
        if resp.status != 200:
            return None
        text = await within(timeout_s, resp.text(), "reading a post page")
    except Exception as exc:  # noqa: BLE001 - no fresh URL: the post is reported, not lost
        log.info("post page of %s unreadable: %s", shortcode, str(exc).splitlines()[0])
        return None
    return image_url_from_post_page(text, base_url)


class InstagramSource(Source):
    name = "instagram"
    Options = InstagramOptions

    url_option = "base_url"
    web = True
    incremental = True  # honours a job's stop_after_known and since (.incremental)
    credential_env = (USERNAME_ENV, PASSWORD_ENV)
    replay_options = {"requests_per_minute": 60000.0, "jitter_s": 0.0}  # a replay crosses no network

    @classmethod
    def known_biases(cls, options: Options) -> list[str]:
        return ["Hashtag feeds show what the site ranks first (popular, recent posts): who is pictured reflects "
                "who posts under those tags, not any population.",
                "Labels come from hashtags chosen by the posters."]

    def __init__(self, options: InstagramOptions, run: Any) -> None:
        super().__init__(options, run)
        self.options: InstagramOptions = options
        self.base_url = options.base_url.rstrip("/")
        self._state: dict[str, Any] | None = None
        self._login_lock = asyncio.Lock()
        self._yielded: set[str] = set()
        self._stop_reason: str | None = None
        self.bucket: TokenBucket | None = None

    @property
    def timeout_s(self) -> float:
        return self.run.settings.browser.timeout_s

    async def open(self) -> None:
        self.pool = browser_pool(self.run)
        self._session_file = session_path(self.run.settings.browser)
        self._state = await asyncio.to_thread(load_session, self._session_file)
        username = credential(USERNAME_ENV) or ""
        account = hashlib.sha256(username.encode()).hexdigest()[:12] if username else "anonymous"
        self.bucket = TokenBucket(
            self.run.manifest, f"instagram:{account}@{urlparse(self.base_url).netloc}",
            self.options.requests_per_minute, burst=self.options.burst, jitter_s=self.options.jitter_s,
        )

    async def close(self) -> None:
        if self.bucket is not None:
            self.bucket.flush()

    def _dismiss_names(self) -> list[str]:
        return dismiss_names(self.options.languages)

    def _status(self, tag: str, state: str) -> None:
        self.run.stats.set_state(tag, state)

    async def events(self, job: Job) -> AsyncIterator[ImageEvent]:
        # the feed's JSON says what to download: the page's own images, videos and fonts are waste
        block = ["image", "media", "font"] if self.options.block_page_images else []
        self._status(job.target, "waiting for the browser")
        events = leased_events(
            self.pool, lambda lease: self._scrape(lease, job), storage_state=lambda: self._state,
            block=block, max_restarts=self.options.max_restarts, what=f"#{job.target}",
        )
        async with aclosing(events):  # the engine may stop early (limit): close the page at once
            try:
                async for event in events:
                    yield event
            except Exception as exc:
                if why := proxy_problem(exc, self.run.settings.browser.proxy):  # every job meets it: stop
                    log.debug("#%s: %s", job.target, exc)
                    raise self._stop(why) from None
                raise

    # --- one hashtag -----------------------------------------------------------------------
    async def _scrape(self, lease: Lease, job: Job) -> AsyncIterator[ImageEvent]:
        assert self.bucket is not None
        tag = job.target
        url = f"{self.base_url}/explore/tags/{quote(tag)}/"
        state = JobRun(tag)
        watch = Watchdog(self.options.stall_s)
        feed = FeedReader(lease.context, self.base_url, timeout_s=self.timeout_s)  # every page of the job's context
        reload, idle, after_429 = True, 0, False
        incremental = Incremental(job.stop_after_known, job.since)
        try:
            while True:
                self._check_stop()
                try:
                    if reload:
                        await self._open_tag(lease, url, tag, watch, feed)
                        reload, idle, after_429 = False, 0, False
                    page = feed.page
                    await watch.run("closing pop-ups",
                                    click_dialog_buttons(page, self._dismiss_names(), timeout_s=self.timeout_s))
                    posts, ended = await watch.run("the feed's answers", feed.new_posts())
                    fresh = [p for p in posts if p.shortcode not in state.seen]
                    if fresh:
                        watch.progress()
                        state.stall_reloaded = False  # the stall is over: a later one gets its own reload
                        state.rate_reloads = 0  # 429s are counted in a row: the site let posts through
                        after_429 = False  # the page retried by itself and got through
                        state.seen.update(p.shortcode for p in fresh)
                        self.found(job, len(fresh))
                        self._status(tag, f"{len(state.seen)} posts found")
                    batch, state.retry = [*state.retry, *fresh], []
                    for i, post in enumerate(batch):
                        self._check_stop()
                        if incremental.active and await incremental.skip(post.extra, post.shortcode, self._known):
                            continue
                        event = await self._fetch_post(lease, post, job, state, watch)
                        if post.shortcode in state.failed:  # a failed download is not progress
                            if state.unreachable:  # is the site gone? the tag page says (one reload)
                                state.retry = batch[i + 1:]
                                raise Stalled(f"downloads ({state.unreachable})")
                            continue
                        watch.progress()
                        if event is not None:
                            yield event
                            watch.progress()  # the time the engine took to accept it is not a stall
                    if incremental.reason:
                        log.info("#%s: %s", tag, incremental.reason)
                        break
                    self._check_feed(feed, tag)
                    if feed.retry_after is not None:  # honoured even at the end: downloads share the budget
                        wait, feed.retry_after = feed.retry_after, None
                        self._note_429(tag, wait)
                        after_429, idle = True, 0
                    if ended:
                        log.info("#%s: end of the feed", tag)
                        break
                    await watch.paused(within(self.options.max_retry_after_s + self.timeout_s, self.bucket.take(),
                                              "the request budget"))
                    if await watch.run("the feed to grow after a scroll",
                                       scroll_and_wait(page, self.options.scroll_pause_s, self.timeout_s)):
                        idle, after_429 = 0, False
                        continue
                    await watch.run("the feed's answers", feed.settle())
                    if feed.retry_after is not None:
                        continue
                    idle += 1
                    if after_429 and feed.more_available is False:  # the page's own retry reached the end:
                        after_429 = False  # harvest what it brought; the feed's end ends the job
                        continue
                    if after_429:  # the page does not retry by itself: reload it now the wait is over
                        state.rate_reloads += 1
                        if state.rate_reloads > MAX_RATE_RELOADS:
                            raise JobFailed(f"#{tag}: still rate limited (HTTP 429) after {MAX_RATE_RELOADS} waits; "
                                            "rerun later to resume, or lower plugins.instagram.requests_per_minute")
                        log.info("#%s: reloading the tag page after the 429 wait", tag)
                        reload = True
                        continue
                    if any(is_feed_url(u) for u in lease.unrecorded):  # a replay past its recording
                        log.info("#%s: the recording ends here", tag)
                        break
                    if idle < self.options.max_idle_scrolls:
                        if watch.remaining() <= 0:
                            raise Stalled("new posts")
                        continue
                    if not state.seen and not state.empty_reloaded:
                        state.empty_reloaded = True
                        log.warning("#%s: the feed showed no post; reloading the tag page", tag)
                        reload = True
                        continue
                    if feed.more_available or feed.unread:  # the page said more would come; it did not
                        raise Stalled("the next feed page (the page stopped loading it)")
                    log.info("#%s: the feed stopped growing", tag)
                    break
                except SiteUnreachable as gone:
                    raise self._stop(f"#{tag}: {gone}; stopping ({len(state.seen)} posts found, what was stored "
                                     "is kept). Rerun when the site is back to fetch the rest") from None
                except Stalled as stall:
                    waited = time.monotonic() - watch.last
                    state.unreachable = None
                    if state.stall_reloaded:
                        raise JobFailed(
                            f"#{tag}: stalled: no new post for {waited:.0f} s while waiting on {stall.waiting_on}, "
                            f"also after reloading the tag page ({len(state.seen)} posts found). Rerun to resume; "
                            "if it keeps stalling, run `selfiescope doctor` or raise plugins.instagram.stall_s"
                        ) from None
                    state.stall_reloaded = True
                    log.warning("#%s: no new post for %.0f s; waiting on %s. Reloading the tag page (posts "
                                "already seen are skipped)", tag, waited, stall.waiting_on)
                    self._status(tag, f"stalled on {stall.waiting_on}; reloading")
                    watch.progress()
                    reload = True
        finally:
            feed.detach()
        self._verdict(state, incremental.reason)

    async def _known(self, shortcode: str) -> bool:
        """Whether the dataset already has this post (stored, rejected or done), or this run took it."""
        return shortcode in self._yielded or await asyncio.to_thread(
            self.run.manifest.post_seen, self.name, shortcode)

    def _verdict(self, state: JobRun, stopped: str | None = None) -> None:
        """The end of a job: finished only when it found posts and fetched every one it could."""
        tag = state.tag
        if not state.seen:
            raise JobFailed(f"#{tag}: no posts found: the feed showed none (a rate limit, a lost session or a "
                            "changed page). Rerun later; if it stays empty, run `selfiescope doctor`")
        if state.failed:
            reasons = Counter(state.failed.values()).most_common(2)
            why = "; ".join(f"{n} x {r}" for r, n in reasons)
            raise JobFailed(f"#{tag}: {len(state.failed)} of {len(state.seen)} posts could not be downloaded "
                            f"({why}); they are not marked done: rerun to retry them")
        if stopped:
            self.run.stats.extra.setdefault("stopped", {})[tag] = stopped
        self._status(tag, f"{stopped} ({len(state.seen)} posts found)" if stopped
                     else f"feed done: {len(state.seen)} posts found")

    def _check_feed(self, feed: FeedReader, tag: str) -> None:
        if feed.login_lost:
            raise self._stop(f"#{tag}: the session ended mid-feed (login required); "
                             "run `selfiescope login` or set the credential variables, then rerun")
        if feed.challenged or self._path(feed.page.url).startswith(CHALLENGE_PATHS):
            raise self._stop(self._challenge_message())

    def _note_429(self, tag: str, wait: float) -> None:
        """Honour a 429: every request of the account waits ``wait`` (through the shared bucket)."""
        assert self.bucket is not None
        if wait > self.options.max_retry_after_s:
            raise self._stop(f"#{tag}: Instagram asks to wait {wait:.0f} s (HTTP 429); stopping "
                             "instead of hammering. Rerun later to resume.")
        log.warning("#%s: HTTP 429; waiting %.0f s as asked", tag, wait)
        self._status(tag, f"HTTP 429: waiting {wait:.0f} s as asked, then reloading the feed")
        self.bucket.penalize(wait)

    async def _open_tag(self, lease: Lease, url: str, tag: str, watch: Watchdog, feed: FeedReader) -> None:
        """Load (or reload) the tag page, logging in at a login wall."""
        assert self.bucket is not None
        self._status(tag, "opening the tag page" if feed.page is None else "reloading the tag page")
        feed.reset()
        for attempt in range(2):
            await watch.paused(within(self.options.max_retry_after_s + self.timeout_s, self.bucket.take(),
                                      "the request budget"))
            response = await watch.run("the tag page", lease.goto(url))
            page = feed.page = await lease.page()
            path = self._path(page.url)
            if path.startswith(CHALLENGE_PATHS):
                raise self._stop(self._challenge_message())
            if path.startswith("/accounts/login"):
                if attempt == 0 and await self._log_in(lease, tag):
                    feed.reset()
                    continue
                raise self._stop(
                    f"#{tag}: Instagram shows a login wall. Set {USERNAME_ENV} and {PASSWORD_ENV}, "
                    "or run `selfiescope login` once to save a session."
                )
            if response is not None and response.status == 404:
                raise LookupError(f"#{tag}: no such hashtag ({url} answered 404)")
            self._status(tag, "closing pop-ups")
            await watch.run("closing pop-ups", click_dialog_buttons(page, self._dismiss_names(), timeout_s=self.timeout_s))
            self._status(tag, "reading the first feed page")
            return

    async def _log_in(self, lease: Lease, tag: str) -> bool:
        """Log this context in (once for the whole source); False when there is no way to."""
        async with self._login_lock:
            if self._state is not None and self._state is not lease.storage_state:
                # another job logged in since this context was made: use its session
                await within(self.timeout_s, lease.context.add_cookies(self._state.get("cookies", [])), "adding cookies")
                lease.storage_state = self._state
                return True
            username, password = credential(USERNAME_ENV), credential(PASSWORD_ENV)
            if not (self.options.login and username and password):
                return False
            self._status(tag, "logging in")
            page = await lease.page()
            outcome = await submit_login(page, self.base_url, username, password, self._dismiss_names(),
                                         timeout_s=self.timeout_s)
            if outcome == "two_factor":
                raise self._stop("Instagram asks for a security code: run `selfiescope login` once to pass "
                                 "it and save a session, then rerun")
            if outcome == "challenge":
                raise self._stop(self._challenge_message())
            if outcome != "ok":
                raise self._stop(f"login failed: {outcome}")
            state = await within(self.timeout_s, lease.context.storage_state(), "reading the session")
            await asyncio.to_thread(save_session, self._session_file, state)
            self._state = lease.storage_state = state
            log.info("logged in; session saved to %s", self._session_file)
            return True

    # --- one post --------------------------------------------------------------------------
    async def _download(self, lease: Lease, url: str, tag: str, watch: Watchdog) -> Any:
        def waiting_on_429(wait: float) -> None:
            log.warning("#%s: HTTP 429 on an image; waiting %.0f s as asked", tag, wait)
            self._status(tag, f"HTTP 429: waiting {wait:.0f} s as asked")

        return await fetch_image(
            lease.request, url, bucket=self.bucket, max_bytes=self.options.max_image_bytes,
            retries=self.options.retries, backoff_s=self.options.backoff_s, timeout_s=self.timeout_s,
            max_retry_after_s=self.options.max_retry_after_s, waiting=watch.paused, on_429=waiting_on_429,
        )

    async def _fresh_image_url(self, lease: Lease, post: Post) -> str | None:
        assert self.bucket is not None
        await self.bucket.take()
        return await fresh_image_url(lease.request, self.base_url, post.shortcode, self.timeout_s)

    async def _fetch_post(self, lease: Lease, post: Post, job: Job, state: JobRun, watch: Watchdog) -> ImageEvent | None:
        if post.shortcode in self._yielded:
            return None
        if await asyncio.to_thread(self.run.manifest.post_seen, self.name, post.shortcode):
            self._yielded.add(post.shortcode)
            return None
        try:
            try:
                fetched = await self._download(lease, post.image_url, job.target, watch)
            except DownloadError as exc:
                if not exc.refused:
                    raise
                fresh = await self._fresh_image_url(lease, post)  # an expired signed URL: ask for a new one
                if not fresh or fresh == post.image_url:
                    raise
                log.info("#%s: post %s: %s; retrying with a fresh URL", job.target, post.shortcode, exc.reason)
                post.image_url = fresh
                fetched = await self._download(lease, fresh, job.target, watch)
        except RateLimited as exc:
            raise self._stop(f"#{job.target}: Instagram asks to wait {exc.retry_after_s:.0f} s (HTTP 429 on an "
                             "image); stopping instead of hammering. Rerun later to resume.") from None
        except DownloadError as exc:
            log.warning("#%s: post %s skipped: %s", job.target, post.shortcode, exc)
            if exc.transient:  # this run reports it, a rerun retries it
                state.failed[post.shortcode] = exc.reason
                if exc.unreachable:
                    state.unreachable = exc.reason
            else:  # gone for good (404, too large): never fetched again
                self._yielded.add(post.shortcode)
            await settle_failed_download(self.run, self.name, job, post.shortcode, exc)
            return None
        state.failed.pop(post.shortcode, None)
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
