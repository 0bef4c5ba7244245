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
A session that ends mid-run (a 401, the page going to the login page, a login form) is
logged in again once for all jobs of the account (:mod:`.account`), and every job reloads
its tag page and goes on, skipping the posts it has seen. A login wall without credentials,
a refused login, a challenge, or a two-factor prompt stops the source with a message saying
what to do, and no job submits the credentials again. Browser errors reach the user through
:func:`.errors.explain` only.
"""

from __future__ import annotations

import asyncio
import contextvars
import hashlib
import logging
import time
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any
from urllib.parse import quote, urlparse

from ...api import ImageEvent, Job, Origin, Source
from ...api.web import (
    Deadline, DownloadError, Lease, RateLimited, SiteUnreachable, TokenBucket, browser_pool, click_dialog_buttons,
    credential, leased_events, load_session, proxy_problem, scroll_and_wait, session_path,
    settle_failed_download, within,
)
from .account import (
    PASSWORD_ENV, USERNAME_ENV, Account, LoginRefused, SessionEnded, challenge_message, session_lost,
)
from .errors import explain, translate
from .feed import FeedReader, Post, is_feed_url
from .images import ImagesQuiet, download_on_clock, images_gone
from .incremental import Incremental
from .login import CHALLENGE_PATHS
from .outcomes import PageOutcome, rate_limited, read_tag_page
from .options import DISMISS_BUTTONS, InstagramOptions, dismiss_names
from .post_page import fresh_image_url
from .watchdog import JobFailed, JobRun, SourceStopped, Stalled, TagPageRateLimited, Watchdog

log = logging.getLogger("selfiescope.instagram")
# The hashtag of the job whose task is running: a stop told to another job names that job's tag.
_JOB_TAG: contextvars.ContextVar[str | None] = contextvars.ContextVar("instagram_job_tag", default=None)

MAX_RATE_RELOADS = 5  # reloads after 429s per job before it gives up
MAX_NAVIGATION_RELOADS = 3  # reloads per job after the page went elsewhere by itself (not a lost session)


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
        self.account: Account | None = None
        self._yielded: set[str] = set()
        self._stop_reason: str | None = None
        self._stop_tag: str | None = None  # the hashtag whose job stopped the source
        self.bucket: TokenBucket | None = None

    @property
    def timeout_s(self) -> float:
        return self.run.settings.browser.timeout_s

    async def open(self) -> None:
        self.pool = browser_pool(self.run)
        session_file = session_path(self.run.settings.browser)
        saved = await asyncio.to_thread(load_session, session_file, self.base_url)
        self.account = Account(self.base_url, session_file, saved,
                               allow_login=self.options.login, dismiss=self._dismiss_names(), timeout_s=self.timeout_s)
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
        from playwright.async_api import Error as PlaywrightError

        assert self.account is not None
        _JOB_TAG.set(job.target)
        account = self.account
        # the feed's JSON says what to download: the page's own images, videos and fonts are waste
        block = ["image", "media", "font"] if self.options.block_page_images else []
        self._status(job.target, "waiting for the browser")
        events = leased_events(
            self.pool, lambda lease: self._scrape(lease, job), storage_state=lambda: account.state,
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
                if isinstance(exc, Deadline):  # our own words already: say what to do
                    raise JobFailed(f"#{job.target}: {exc}; rerun to resume (a slow network: raise "
                                    "browser.timeout_s)") from None
                if isinstance(exc, PlaywrightError):  # never Playwright's own text: what happened, what to do
                    doing = self.run.stats.job_states.get(job.target) or "scraping"
                    raise JobFailed(f"#{job.target}: {explain(exc, doing)}") from None
                raise

    # --- one hashtag -----------------------------------------------------------------------
    async def _scrape(self, lease: Lease, job: Job) -> AsyncIterator[ImageEvent]:
        from playwright.async_api import Error as PlaywrightError

        assert self.bucket is not None and self.account is not None
        tag = job.target
        url = f"{self.base_url}/explore/tags/{quote(tag)}/"
        state = JobRun(tag)
        watch = Watchdog(self.options.stall_s)
        # images have their own clock, running only while a download waits: a feed that keeps
        # growing while every download hangs is no progress in images
        state.images = Watchdog(self.options.stall_s, idle=True)
        feed = FeedReader(lease.context, self.base_url, timeout_s=self.timeout_s)  # every page of the job's context
        generation = self.account.generation_of(lease.storage_state)  # the session this context has
        pending: dict[str, Post] = {}  # found, not yet handled: handled first after a reload
        state.pending = pending  # type: ignore[assignment]  # counted as found in the job's messages
        reload, idle, after_429, nav_reloads = True, 0, False, 0
        relogged = False  # a new session: the posts found before it are fetched before the page spends it
        incremental = Incremental(job.stop_after_known, job.since)
        try:
            await within(self.timeout_s, feed.resume_on_reload(), "routing the feed")
            while True:
                self._check_stop()
                try:
                    if reload and relogged:  # posts found before a lost session, before the page spends the new
                        relogged = False  # one; another reload (a site that may be gone) opens the tag page first
                        async with aclosing(self._handle(lease, job, state, watch, pending, incremental)) as handled:
                            async for event in handled:
                                yield event
                    if reload:  # the feed goes on after the last page whose posts were all handled
                        feed.resume_cursor = feed.resume_point(state.seen | set(pending))
                        await self._open_tag(lease, url, tag, watch, feed)
                        reload, idle, after_429 = False, 0, False
                    page = feed.page
                    await watch.run("closing pop-ups",
                                    click_dialog_buttons(page, self._dismiss_names(), timeout_s=self.timeout_s))
                    posts, ended = await watch.run("the feed's answers", feed.new_posts())
                    fresh = [p for p in posts if p.shortcode not in state.seen and p.shortcode not in pending]
                    for post in fresh:  # posts still pending from before a reload are not news
                        pending[post.shortcode] = post
                    self._check_feed(feed, tag)
                    if fresh:
                        watch.progress()
                        state.stall_reloaded = False  # the stall is over: a later one gets its own reload
                        state.rate_reloads = 0  # 429s are counted in a row: the site let posts through
                        after_429 = False  # the page retried by itself and got through
                        self._status(tag, f"{len(state.seen) + len(pending)} posts found")
                    async with aclosing(self._handle(lease, job, state, watch, pending, incremental)) as handled:
                        async for event in handled:
                            yield event
                    if incremental.reason:
                        log.info("#%s: %s", tag, incremental.reason)
                        break
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
                    self._check_feed(feed, tag)
                    if feed.retry_after is not None:
                        continue
                    idle += 1
                    if after_429 and feed.more_available is False:  # the page's own retry reached the end:
                        after_429 = False  # harvest what it brought; the feed's end ends the job
                        continue
                    if after_429:  # the page does not retry by itself: reload it now the wait is over
                        state.rate_reloads += 1
                        if state.rate_reloads > MAX_RATE_RELOADS:
                            limited = rate_limited("", None)
                            raise JobFailed(f"#{tag}: " + limited.message(
                                f"still so after {MAX_RATE_RELOADS} waits: {limited.todo}"))
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
                except TagPageRateLimited as limited:
                    state.rate_reloads += 1
                    if state.rate_reloads > MAX_RATE_RELOADS:
                        raise JobFailed(f"#{tag}: " + limited.shown.message(
                            f"still so after {MAX_RATE_RELOADS} waits: {limited.shown.todo}")) from None
                    reload = True
                except SiteUnreachable as gone:
                    raise self._stop(f"#{tag}: {gone}; stopping ({state.found} posts found, what was stored "
                                     "is kept). Rerun when the site is back to fetch the rest") from None
                except SessionEnded as ended_:
                    generation = await self._log_in_again(lease, generation, tag, ended_.why)
                    relogged = True
                    watch.progress()
                    reload = True
                except (Stalled, PlaywrightError, Deadline) as exc:
                    # the page may have gone to the login page meanwhile (its script, after a 401)
                    if why := await session_lost(feed, self.timeout_s, settle=isinstance(exc, PlaywrightError)):
                        generation = await self._log_in_again(lease, generation, tag, why)
                        relogged = True
                        watch.progress()
                        reload = True
                        continue
                    if isinstance(exc, PlaywrightError):
                        if translate(exc).kind != "navigated" or nav_reloads >= MAX_NAVIGATION_RELOADS:
                            raise  # a crash: the lease relaunches the browser; else the job reports it
                        nav_reloads += 1
                        log.warning("#%s: the page went elsewhere by itself; reloading the tag page "
                                    "(posts already seen are skipped)", tag)
                        reload = True
                        continue
                    # a page that hung half-way shows some; briefly: the stall time is already spent
                    await feed.harvest(lease.page, state.seen, pending, within_s=2.0)
                    if isinstance(exc, Deadline):
                        raise JobFailed(f"#{tag}: {exc} ({state.found} posts found); rerun to resume "
                                        "(a slow network: raise browser.timeout_s)") from None
                    self._after_stall(exc, watch, state)
                    reload = True
        finally:
            feed.detach()
        self._verdict(state, incremental.reason)

    async def _handle(self, lease: Lease, job: Job, state: JobRun, watch: Watchdog, pending: dict[str, Post],
                      incremental: Incremental) -> AsyncIterator[ImageEvent]:
        """Fetch the posts found and not yet handled; each is seen once handled, so one cut short
        by a lost session is handled again after the login. A failed download is not progress."""
        assert self.account is not None
        for post in list(pending.values()):
            self._check_stop()
            skip = incremental.active and await incremental.skip(post.extra, post.shortcode, self._known)
            event = None if skip else await self._fetch_post(lease, post, job, state, watch)
            state.seen.add(post.shortcode)
            self.found(job)  # met, whatever became of it: the job did find something
            del pending[post.shortcode]
            if post.shortcode in state.failed:
                if state.unreachable and state.images_checked:  # the pages answer, the image host does not
                    raise self._stop(images_gone(state, f"cannot be reached ({state.unreachable})"))
                if state.unreachable:  # is the site gone? the tag page says (one reload until an image comes)
                    state.images_checked = True
                    raise Stalled(f"downloads ({state.unreachable})")
                continue
            self.account.note_progress()
            watch.progress()
            if event is not None:
                yield event
                watch.progress()  # the time the engine took to accept it is not a stall

    async def _known(self, shortcode: str) -> bool:
        """Whether the dataset already has this post (stored, rejected or done), or this run took it."""
        return shortcode in self._yielded or await asyncio.to_thread(
            self.run.manifest.post_seen, self.name, shortcode)

    def _after_stall(self, stall: Stalled, watch: Watchdog, state: JobRun) -> None:
        """A job with no new post for ``stall_s``: reload its tag page once, then fail it."""
        # the clock ran out at stall_s (an earlier browser timeout says its own time); what came after
        # (stopping the load, a look at the page) is cleanup, not waiting
        waited = min(stall.after_s, watch.stall_s) if stall.after_s is not None else time.monotonic() - watch.last
        self._status(state.tag, state.after_stall(stall, waited))
        watch.progress()

    def _verdict(self, state: JobRun, stopped: str | None = None) -> None:
        """The end of a job: finished only when it found posts and fetched every one it could."""
        if stopped:
            state.verdict()  # a job stopped early still fails for downloads that failed
            self.run.stats.extra.setdefault("stopped", {})[state.tag] = stopped
            self._status(state.tag, f"{stopped} ({state.found} posts found)")
        else:
            self._status(state.tag, state.verdict())

    def _check_feed(self, feed: FeedReader, tag: str) -> None:
        if feed.challenged or self._path(feed.page.url).startswith(CHALLENGE_PATHS):
            raise self._stop(challenge_message())
        if feed.login_lost:
            raise SessionEnded("the session ended (the feed answered 401: login required)")
        if self._path(feed.page.url).startswith("/accounts/login"):
            raise SessionEnded("the session ended (the page went to the login page)")

    async def _log_in_again(self, lease: Lease, generation: int, tag: str, why: str) -> int:
        """Log in (once for every job of the account), or stop the source saying what to do."""
        assert self.account is not None
        self._status(tag, "session ended: waiting for the login" if self.account.may_log_in() else "session ended")
        try:
            generation = await self.account.log_in(lease, generation, why, lambda s: self._status(tag, s))
        except LoginRefused as exc:
            raise self._stop(str(exc)) from None  # the account's verdict: the same words for every job
        log.info("#%s: logged in again; reloading the tag page (posts already seen are skipped)", tag)
        self._status(tag, "logged in again; resuming")
        return generation

    def _note_429(self, tag: str, wait: float | None, shown: PageOutcome | None = None) -> None:
        """Honour a 429 (``shown``: the tag page's own, with its message): every request of the account
        waits ``wait`` (through the shared bucket); a longer wait than allowed stops the source."""
        assert self.bucket is not None
        wait = 30.0 if wait is None else wait  # no Retry-After: a cautious pause
        if wait > self.options.max_retry_after_s:
            shown = shown or rate_limited("", wait)
            raise self._stop(f"#{tag}: " + shown.message(f"stopping instead of hammering: {shown.todo}"))
        log.warning("#%s: HTTP 429; waiting %.0f s as asked", tag, wait)
        self._status(tag, f"HTTP 429: waiting {wait:.0f} s as asked, then reloading the feed")
        self.bucket.penalize(wait)

    async def _open_tag(self, lease: Lease, url: str, tag: str, watch: Watchdog, feed: FeedReader) -> None:
        """Load (or reload) the tag page; :class:`SessionEnded` at a login wall."""
        assert self.bucket is not None
        self._status(tag, "opening the tag page" if feed.page is None else "reloading the tag page")
        feed.reset()
        await watch.paused(within(self.options.max_retry_after_s + self.timeout_s, self.bucket.take(),
                                  "the request budget"))
        response = await watch.run("the tag page", lease.goto(url))
        page = feed.page = await lease.page()
        shown = await read_tag_page(page, response, tag, self.timeout_s)  # the doctor's reading, word for word
        if shown.kind == "challenge":
            raise self._stop(challenge_message(shown.site_says))
        if shown.kind == "login_wall":
            raise SessionEnded("Instagram shows a login wall")
        if shown.kind == "rate_limited":
            self._note_429(tag, shown.retry_after_s, shown)
            raise TagPageRateLimited(shown)
        if shown.kind != "ok":
            raise JobFailed(f"#{tag}: {shown.message()}")
        self._status(tag, "closing pop-ups")
        await watch.run("closing pop-ups", click_dialog_buttons(page, self._dismiss_names(), timeout_s=self.timeout_s))
        self._status(tag, "reading the first feed page")

    # --- one post --------------------------------------------------------------------------
    async def _download(self, lease: Lease, url: str, state: JobRun, watch: Watchdog) -> Any:
        def waiting_on_429(wait: float) -> None:
            log.warning("#%s: HTTP 429 on an image; waiting %.0f s as asked", state.tag, wait)
            self._status(state.tag, f"HTTP 429: waiting {wait:.0f} s as asked")

        try:
            return await download_on_clock(
                lease.request, url, state, watch, bucket=self.bucket, max_bytes=self.options.max_image_bytes,
                retries=self.options.retries, backoff_s=self.options.backoff_s, timeout_s=self.timeout_s,
                max_retry_after_s=self.options.max_retry_after_s, on_429=waiting_on_429)
        except ImagesQuiet as quiet:
            proxy = self.run.settings.browser.proxy  # a hung proxy looks the same from here: name it too
            raise self._stop(images_gone(state, f"{quiet}{f', through the proxy {proxy}' if proxy else ''}")) from None

    async def _fresh_image_url(self, lease: Lease, post: Post) -> str | None:
        """The post's image URL as its page gets it now (a freshly signed one), or None."""
        assert self.bucket is not None
        await self.bucket.take()
        return await fresh_image_url(lease.context, self.base_url, post.shortcode, self.timeout_s)

    async def _fetch_post(self, lease: Lease, post: Post, job: Job, state: JobRun, watch: Watchdog) -> ImageEvent | None:
        if post.shortcode in self._yielded:
            return None
        if await asyncio.to_thread(self.run.manifest.post_seen, self.name, post.shortcode):
            self._yielded.add(post.shortcode)
            return None
        try:
            try:
                fetched = await self._download(lease, post.image_url, state, watch)
            except DownloadError as exc:
                if exc.status == 401:  # the session, not the URL (an expired URL answers 403)
                    raise SessionEnded("the session ended (a download answered 401)") from None
                if not exc.refused:
                    raise
                fresh = await self._fresh_image_url(lease, post)  # an expired signed URL: ask for a new one
                if not fresh or fresh == post.image_url:
                    raise
                log.info("#%s: post %s: %s; retrying with a fresh URL", job.target, post.shortcode, exc.reason)
                post.image_url = fresh
                fetched = await self._download(lease, fresh, state, watch)
        except RateLimited as exc:
            raise self._stop(f"#{job.target}: Instagram asks to wait {exc.retry_after_s:.0f} s (HTTP 429 on an "
                             "image); stopping instead of hammering. Rerun later to resume.") from None
        except DownloadError as exc:
            if exc.status == 401:
                raise SessionEnded("the session ended (a download answered 401)") from None
            if exc.proxy:  # every download goes through it: stop, say so once
                raise self._stop(f"#{job.target}: {exc.reason}; check browser.proxy (a proxy must forward "
                                 "plain GETs for http:// and CONNECT for https://), or remove it. What was stored "
                                 "is kept; rerun to fetch the rest") from None
            log.warning("#%s: post %s skipped: %s", job.target, post.shortcode, exc)
            if exc.transient:  # this run reports it, a rerun retries it
                state.failed[post.shortcode] = exc.reason  # fetch_image words it plainly
                if exc.unreachable:
                    state.unreachable = exc.reason
            else:  # gone for good (404, too large): never fetched again
                state.images.progress()  # the image host answered
                self._yielded.add(post.shortcode)
            await settle_failed_download(self.run, self.name, job, post.shortcode, exc)
            return None
        state.failed.pop(post.shortcode, None)
        state.images.progress()
        state.images_checked = False
        self._yielded.add(post.shortcode)
        origin = Origin(
            source=self.name, job=job.target, post_id=post.shortcode,
            post_url=f"{self.base_url}/p/{post.shortcode}/", image_url=post.image_url,
            extra={**post.extra, "image_width": post.width, "content_type": fetched.content_type},
        )
        return ImageEvent(origin=origin, label=job.label, data=fetched.data)

    # --- stopping --------------------------------------------------------------------------
    def _stop(self, reason: str) -> SourceStopped:
        if self._stop_reason is None:  # said once; every other job stops with the same words
            self._stop_reason, self._stop_tag = reason, _JOB_TAG.get()
            log.error("instagram: %s", reason)
        return SourceStopped(self._stop_told())

    def _check_stop(self) -> None:
        if self._stop_reason:
            raise SourceStopped(self._stop_told())

    def _stop_told(self) -> str:
        """The stop in the words of the job at hand. The job that stopped the source says why, once;
        every other job points to it, never repeating the advice nor taking another job's tag as its own."""
        assert self._stop_reason is not None
        tag, first = _JOB_TAG.get(), self._stop_tag
        if tag is None or first is None or tag == first:
            return self._stop_reason
        return f"#{tag}: stopped along with #{first} (its error says why and what to do)"

    @staticmethod
    def _path(url: str) -> str:
        return urlparse(url).path


__all__ = ["DISMISS_BUTTONS", "PASSWORD_ENV", "USERNAME_ENV", "InstagramOptions", "InstagramSource", "JobFailed",
           "SourceStopped", "dismiss_names", "fresh_image_url"]
