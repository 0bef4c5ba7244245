"""``selfiescope doctor``: does the site still offer what the instagram source relies on?

Each check runs the source's own code, so the doctor passes when a scrape would work
and fails where a scrape would: the login form is found and sent by :mod:`.login`
(``login_fields``, ``submit_login``), pop-ups are closed by ``click_dialog_buttons``
with the source's known buttons, the tag page is read by the source's
:class:`~.feed.FeedReader` with the source's waits for client-rendered content (scroll,
wait for the page to grow, up to ``max_idle_scrolls``), paging is read by
:func:`~.feed.feed_paging` and images are fetched by ``fetch_image``. What the doctor
adds is what it saw, said plainly on failure: the inputs of a login form it cannot use,
the keys of a feed answer it cannot read, the site's own message after a 429, a
challenge or a rejected password.

``login_form``      the username and password fields and the submit button, as the source finds them
``login``           with credentials in the environment: logging in works (session cookie)
``tag_page``        ``/explore/tags/TAG/`` shows posts (from the grid or the feed JSON), no login wall
``feed_json``       the feed JSON has media with ``code``, ``pk``, ``image_versions2``,
                    ``original_width/height``, ``user``, ``taken_at``, and paging
                    (``more_available``, ``next_max_id``), wherever it nests them
``image_candidates`` every media has a usable candidate, and the largest one downloads as an image
``popups``          every pop-up has a button the source knows how to press, and pressing it closes it
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any
from urllib.parse import quote, urlparse

from ...api import Settings
from ...api.web import (
    BrowserPool, BrowserStartTimeout, Deadline, DownloadError, Lease, choose_dismiss_button, click_dialog_buttons, credential,
    fetch_image, load_session, open_dialogs, scroll_and_wait, session_path, within,
)
from .account import SessionEnded
from .doctor_limits import RateLimitWatch
from .doctor_report import (
    CHECKS, MAX_429_WAITS, MEDIA_FIELDS, PAGE_FIELDS, Check, DoctorError, OnCheck, Report, browser_failure,
    check_target, doctor_options, media_objects, quote_outcome, site_message, step_failure,
)
from .feed import FeedReader, feed_paging, post_from_media
from .login import REJECTED, find_login_form, submit_login
from .outcomes import LoginFormUnknown, challenge, credentials_set, empty, rate_limited, read_tag_page
from .source import PASSWORD_ENV, USERNAME_ENV, InstagramOptions, dismiss_names, fresh_image_url

log = logging.getLogger("selfiescope.doctor")

_PAGE_TEXT = "() => (document.body ? document.body.innerText : '').replace(/\\s+/g, ' ').trim().slice(0, 200)"


async def run_doctor(settings: Settings, base_url: str, tag: str, on_check: OnCheck | None = None) -> Report:
    """Run every check against ``base_url`` with hashtag ``tag``; never raises for a site problem.

    ``on_check`` is called with each check as it completes (progress for the CLI).
    """
    check_target(base_url, tag)
    doctor = _Doctor(settings, doctor_options(settings, base_url.rstrip("/")), tag, on_check)
    browser = settings.browser
    task = asyncio.ensure_future(doctor.run())
    # Chromium's start has its own deadline (BrowserStartTimeout ends run() with its check); this
    # bounds only a start that hangs past it, and is never charged to the site's checks
    started = asyncio.ensure_future(doctor.browser_started.wait())
    await asyncio.wait({task, started}, timeout=browser.launch_timeout_s + browser.timeout_s + 15,
                       return_when=asyncio.FIRST_COMPLETED)
    started.cancel()
    if not task.done() and not doctor.browser_started.is_set():
        await _stop(task, browser.timeout_s)
        doctor.add("browser", "fail", BrowserStartTimeout(browser.launch_timeout_s).user_message())
        return doctor.report
    # every step has its own deadline; this bounds their sum, counted once the browser is up
    budget = browser.timeout_s * 20
    done, _ = await asyncio.wait({task}, timeout=budget)
    if not done:
        await _stop(task, browser.timeout_s)
        doctor.add("doctor", "fail", f"the checks did not finish within {budget:g} s (20 x browser.timeout_s) "
                                     "once the browser had started")
    else:
        task.result()
    return doctor.report


async def _stop(task: "asyncio.Future[None]", timeout_s: float) -> None:
    task.cancel()
    await asyncio.wait({task}, timeout=timeout_s)


class _Doctor:
    def __init__(self, settings: Settings, options: InstagramOptions, tag: str, on_check: OnCheck | None) -> None:
        self.settings = settings
        self.options = options
        self.base_url = options.base_url.rstrip("/")
        self.tag = tag
        self.timeout_s = settings.browser.timeout_s
        self.on_check = on_check
        self.report = Report(self.base_url, tag)
        self.dismiss = dismiss_names(options.languages)
        self.closed: list[str] = []
        self.unclosable: list[str] = []
        self.saved_session_used = False  # the login check was skipped for a saved session
        self.pages_examined = 0  # pages searched for pop-ups: with none, ``popups`` has nothing to judge
        self.answers: list[tuple[str, int, Any]] = []  # feed answers: path, status, JSON or None
        self.feed: FeedReader | None = None
        self.username_field: Any = None
        self.password_field: Any = None
        self.posts: list[Any] = []
        self.lease: Lease | None = None
        self.limits = RateLimitWatch(self.base_url, self.timeout_s)  # every 429 the site answers, with its message
        self._started = time.monotonic()
        self.browser_started = asyncio.Event()  # run_doctor's budget for the checks starts here

    def add(self, name: str, status: str, detail: str, found: str = "") -> None:
        """Record a check; a check made again (login, after a saved session failed) replaces its first verdict."""
        now = time.monotonic()
        check = Check(name, status, detail, found, round(now - self._started, 2))
        self._started = now
        earlier = [i for i, c in enumerate(self.report.checks) if c.name == name]
        if earlier:
            self.report.checks[earlier[0]] = check
        else:
            self.report.checks.append(check)
        if self.on_check is not None:
            self.on_check(check)

    async def run(self) -> None:
        from playwright.async_api import Error as PlaywrightError

        pool = BrowserPool(self.settings.browser)
        saved = await asyncio.to_thread(load_session, session_path(self.settings.browser), self.base_url)
        block = ["image"] if self.options.block_page_images else []
        try:
            # no saved session at first: the login form is checked as a logged-out visitor sees it
            async with pool.lease(block=block) as lease:
                self.browser_started.set()
                self.lease = lease
                lease.context.on("response", self.limits.on_response)
                self.limits.lease = lease
                steps = [("login_form", self.check_login_form), ("login", lambda l: self.check_login(l, saved)),
                         ("tag_page", self.check_tag_page), ("feed_json", self.check_feed),
                         ("image_candidates", self.check_candidates)]
                for name, step in steps:
                    try:
                        await step(lease)
                    except (PlaywrightError, Deadline) as exc:
                        self.add(name, "fail", step_failure(exc, self.timeout_s),
                                 self.limits.note() or await self._where(lease))
                    except SessionEnded as exc:  # a post page (fresh_image_url) went to the login page
                        self.add(name, "fail", f"{exc.why}: run `selfiescope login`, then the doctor again",
                                 await self._where(lease))
                self.check_popups()
        except BrowserStartTimeout as exc:
            self.add("browser", "fail", exc.user_message())
        except (PlaywrightError, Deadline) as exc:
            self.add("browser", "fail", f"could not drive the browser: {browser_failure(exc, self.timeout_s)}")
        finally:
            if self.feed is not None:
                self.feed.detach()
            self.limits.cancel()
            await pool.close()

    # --- what the doctor sees besides what the source reads ----------------------------------
    def _on_answer(self, response: Any, data: Any) -> None:
        self.answers.append((urlparse(response.url).path, response.status, data))

    async def _close_popups(self, page: Any) -> None:
        """The source's pop-up handling; the dialogs it leaves open are noted for ``popups``.

        A pop-up may appear between the source's pass and the look that follows (sites show
        some late, on a timer): one the source knows how to close gets another pass, so only
        a pop-up it cannot close, or that stays open after pressing, is ever reported.
        """
        for _ in range(3):
            self.closed += await click_dialog_buttons(page, self.dismiss, timeout_s=self.timeout_s)
            dialogs = await open_dialogs(page, self.timeout_s)
            if all(choose_dismiss_button(d["buttons"], self.dismiss) is None for d in dialogs):
                break
        self.pages_examined += 1
        for dialog in dialogs:
            closable = choose_dismiss_button(dialog["buttons"], self.dismiss) is not None
            text = f"{dialog['label']!r} with buttons {dialog['buttons']}" + (" stayed open after pressing" if closable else "")
            if text not in self.unclosable:
                self.unclosable.append(text)

    async def _where(self, lease: Lease) -> str:
        try:
            url = (await lease.page()).url
            return f"page {urlparse(url).path}" if url.startswith("http") else "no page loaded"
        except Exception:  # noqa: BLE001 - the browser is gone: nowhere to point at
            return "the browser's page is gone"

    async def _page_text(self, page: Any) -> str:
        try:
            return await within(self.timeout_s, page.evaluate(_PAGE_TEXT), "reading the page")
        except Exception:  # noqa: BLE001 - the page went away: nothing to quote
            return ""

    # --- checks ------------------------------------------------------------------------------
    async def check_login_form(self, lease: Lease) -> None:
        response = await lease.goto(f"{self.base_url}/accounts/login/")
        page = await lease.page()
        path = urlparse(page.url).path
        if not path.startswith("/accounts/login") or (response is not None and response.status >= 400):
            status = response.status if response is not None else "no answer"
            detail = (rate_limited("", None).what if status == 429 else "the login page is gone")
            self.add("login_form", "fail", detail, f"HTTP {status} at {path}: {await self._page_text(page)!r}")
            return
        await self._close_popups(page)
        try:  # the source's own finder: a form rendered by script comes late, an unknown one is named
            user, secret, _ = await find_login_form(page, self.timeout_s)
        except LoginFormUnknown as exc:
            await self._close_popups(page)
            self.add("login_form", "fail", f"{exc.what}; {exc.todo}", exc.found)
            return
        await self._close_popups(page)  # a pop-up that came with the form
        self.username_field, self.password_field = user, secret
        self.add("login_form", "pass", "username field, password field and submit button found by the source's finder")

    async def check_login(self, lease: Lease, saved: dict[str, Any] | None) -> None:
        if saved and saved.get("cookies"):
            await within(self.timeout_s, lease.context.add_cookies(saved["cookies"]), "adding cookies")
            lease.storage_state = saved
            self.saved_session_used = True
            self.add("login", "skip", "the session saved by `selfiescope login` is used instead")
            return
        await self._login_with_credentials(lease)

    async def _login_with_credentials(self, lease: Lease, after: str = "") -> None:
        """The source's own login (``submit_login``) with the credential variables, judged as ``login``;
        ``after`` says why it runs (a saved session that did not get past the login wall)."""
        from playwright.async_api import Error as PlaywrightError

        def judge(status: str, detail: str, found: str = "") -> None:
            self.add("login", status, f"{after}: {detail}" if after else detail, found)

        username, password = credential(USERNAME_ENV), credential(PASSWORD_ENV)
        if not (username and password):
            judge("skip", f"no credentials: set {USERNAME_ENV} and {PASSWORD_ENV} to check logging in")
            return
        if not self.options.login:
            judge("skip", "plugins.instagram.login is off: the source does not log in")
            return
        if self.username_field is None:
            judge("skip", "the login form's fields were not found (see login_form)")
            return
        page = await lease.page()
        try:
            outcome = await submit_login(page, self.base_url, username, password, self.dismiss,
                                         timeout_s=self.timeout_s)
        except PlaywrightError as exc:  # submit_login's message quotes no credential
            judge("fail", f"the login form could not be used: {browser_failure(exc, self.timeout_s)}",
                     self.limits.note())
            return
        await self.limits.settle()
        path = urlparse(page.url).path
        if outcome == "ok":
            judge("pass", "logged in: session cookie set")
        elif outcome == "challenge":
            shown = challenge(await self._page_text(page))  # the words the source stops with
            judge("fail", f"{shown.what}: {shown.todo}", f"page {path}: {shown.found}")
        elif outcome == "two_factor":
            judge("fail", "the site asks for a security code (two-factor): run `selfiescope login` once",
                     f"page {path}")
        elif self.limits.seen:
            judge("fail", f"{rate_limited('', None).what} while logging in: wait before trying again",
                     self.limits.note() + (f"; the page says {quote_outcome(outcome)}" if ": " in outcome else ""))
        elif outcome.startswith(REJECTED):
            judge("fail", f"{REJECTED} (wrong username or password): check {USERNAME_ENV} and {PASSWORD_ENV}",
                     f"the page says {quote_outcome(outcome)}")
        else:
            judge("fail", f"logging in did not finish: {outcome}",
                     f"page {path}: {await self._page_text(page)!r}")

    async def check_tag_page(self, lease: Lease) -> None:
        url = f"{self.base_url}/explore/tags/{quote(self.tag)}/"
        self.feed = feed = FeedReader(lease.context, self.base_url, timeout_s=self.timeout_s, on_answer=self._on_answer)
        waits = 0
        while True:
            feed.reset()
            response = await lease.goto(url)
            page = feed.page = await lease.page()
            shown = await read_tag_page(page, response, self.tag, self.timeout_s)  # the source's reading
            if shown.kind == "login_wall" and self.saved_session_used and self.options.login and credentials_set():
                self.saved_session_used = False  # once: the credentials' own verdict decides the next look
                await within(self.timeout_s, lease.context.clear_cookies(), "clearing the saved session")
                await self._login_with_credentials(
                    lease, "the saved session did not get past the login wall, so the credential variables were tried")
                if self.report.status("login") == "pass":
                    continue
            if shown.kind == "login_wall":
                login = self.report.status("login")
                todo = ("logging in failed (see login)" if login == "fail" else
                        "the credential variables are set, but logging in could not be checked (see login)"
                        if login == "skip" and credentials_set() else shown.todo)
                self.add("tag_page", "fail", f"{shown.what}: {todo}", f"redirected to {urlparse(page.url).path}")
                return
            if shown.kind != "ok":
                self.add("tag_page", "fail", f"{shown.what}: {shown.todo}", shown.found or f"title {await page.title()!r}")
                return
            await self._close_popups(page)
            self.posts = await self._read_posts(feed, page)
            if self.posts or feed.retry_after is None or waits >= MAX_429_WAITS:
                break
            wait, feed.retry_after = feed.retry_after, None
            if wait > min(self.options.max_retry_after_s, self.timeout_s * 2):
                break
            waits += 1  # as the source does: wait as asked, then reload the tag page
            await asyncio.sleep(wait)
        if self.posts:
            from_json = sum(1 for p in self.posts if "pk" in p.extra)
            self.add("tag_page", "pass", f"{len(self.posts)} posts ({from_json} with feed JSON data)"
                     + (f", after waiting out {waits} HTTP 429" if waits else ""))
            return
        await self.limits.settle()
        links = await within(self.timeout_s, page.locator('a[href*="/p/"], a[href*="/reel/"]').count(),
                             "reading the grid")
        if self.limits.seen:
            detail = f"{rate_limited('', None).what}: the page shows no post; wait before trying again"
        else:
            detail = f"{empty().what}: {empty().todo}"
        answers = ", ".join(f"HTTP {s} {p}" for p, s, _ in self.answers[-3:]) or "none"
        self.add("tag_page", "fail", detail, f"{links} links to /p/ after {self.options.max_idle_scrolls} scrolls; "
                 f"feed answers: {answers}" + (f"; {self.limits.note()}" if self.limits.seen else ""))

    async def _read_posts(self, feed: FeedReader, page: Any) -> list[Any]:
        """The source's reading of a fresh tag page: posts, else scroll and wait for the page
        to grow (a client-rendered grid comes late), ``max_idle_scrolls`` times."""
        posts, idle = [], 0
        while True:
            new, ended = await feed.new_posts()
            posts += new
            if posts or ended or feed.retry_after is not None or idle >= self.options.max_idle_scrolls:
                return posts
            if not await scroll_and_wait(page, self.options.scroll_pause_s, self.timeout_s):
                await feed.settle()
                idle += 1
            await self._close_popups(page)

    async def check_feed(self, lease: Lease) -> None:
        feed = self.feed
        if feed is None or not self.posts:
            self.add("feed_json", "skip", "the tag page showed no post (see tag_page)")
            return
        page = feed.page
        idle = waits = 0  # scroll as the source does, until two feed pages came, the feed ended or it stopped growing
        while (sum(1 for _, s, d in self.answers if s == 200 and d is not None) < 2 and feed.more_available is not False
               and idle < self.options.max_idle_scrolls):
            if feed.retry_after is not None:  # a 429: wait as asked (the page asks again), as the source does
                wait, feed.retry_after = feed.retry_after, None
                if wait > min(self.options.max_retry_after_s, self.timeout_s * 2) or waits >= MAX_429_WAITS:
                    break
                waits += 1
                await asyncio.sleep(wait)
            if not await scroll_and_wait(page, self.options.scroll_pause_s, self.timeout_s):
                idle += 1
            await feed.settle()
            await self._close_popups(page)
        await self.limits.settle()
        good = [(p, d) for p, s, d in self.answers if s == 200 and isinstance(d, dict)]
        if not good:
            self._no_feed_page(feed)
            return
        medias = [m for _, d in good for m in media_objects(d)]
        problems = []
        if not medias:
            problems.append("no media objects (with code or shortcode)")
        missing_media = sorted({f for m in medias for f in MEDIA_FIELDS if f not in m})
        if missing_media:
            problems.append(f"media without {', '.join(missing_media)}")
        pagings = [paging for _, d in good for paging in feed_paging(d)]
        missing_page = [f for f in PAGE_FIELDS if not any(f in paging for paging in pagings)]
        if missing_page:
            problems.append(f"no paging: no {', '.join(missing_page)} anywhere in the answer")
        path, data = good[-1]
        if problems:
            media_keys = f"; media keys {sorted(medias[0])}" if medias else ""
            self.add("feed_json", "fail", "; ".join(problems), f"{path}: top-level keys {sorted(data)}{media_keys}")
            return
        self.medias = medias
        note = f" (after {len(self.limits.seen)} HTTP 429)" if self.limits.seen else ""
        self.add("feed_json", "pass", f"{len(medias)} media in {len(good)} feed pages from {path}{note}")

    def _no_feed_page(self, feed: FeedReader) -> None:
        if self.limits.seen:
            self.add("feed_json", "fail", f"{rate_limited('', None).what}: wait before trying again",
                     self.limits.note())
        elif self.answers:
            path, status, data = self.answers[-1]
            if status == 200:
                self.add("feed_json", "fail", "the feed answer did not arrive or is not JSON",
                         f"{path}: {len(self.answers)} answers, {feed.unread} never finished")
            else:
                message = site_message(data)
                self.add("feed_json", "fail", f"the feed answered HTTP {status}" + (f" {message!r}" if message else ""),
                         path)
        else:
            hint = ("pop-ups that stay open block the feed (see popups)" if self.unclosable
                    else "a tag with one page of posts loads none: try a bigger --tag")
            self.add("feed_json", "fail", "scrolling the tag page loaded no feed JSON",
                     f"no feed request seen ({hint})")

    async def check_candidates(self, lease: Lease) -> None:
        medias = getattr(self, "medias", None)
        if not medias:
            self.add("image_candidates", "skip", "no media in the feed JSON (see feed_json)")
            return
        posts = [post_from_media(m) for m in medias]
        usable = [p for p in posts if p is not None]
        if not usable:
            sample = medias[0].get("image_versions2", "missing")
            self.add("image_candidates", "fail", f"none of {len(medias)} media has image candidates with a url",
                     f"image_versions2: {str(sample)[:200]}")
            return
        post = usable[0]
        try:
            try:
                fetched = await self._download(lease, post.image_url)
            except DownloadError as exc:
                if not exc.refused:
                    raise
                fresh = await fresh_image_url(lease.context, self.base_url, post.shortcode, self.timeout_s)
                if not fresh or fresh == post.image_url:
                    raise
                fetched = await self._download(lease, fresh)  # an expired signed URL, refreshed as the source does
        except DownloadError as exc:
            self.add("image_candidates", "fail", "the largest candidate does not download as an image",
                     f"{exc.reason} for {urlparse(post.image_url).path}")
            return
        bad = len(posts) - len(usable)
        if bad:
            self.add("image_candidates", "fail", f"{bad} of {len(posts)} media have no usable candidate",
                     f"image_versions2: {str(medias[posts.index(None)].get('image_versions2'))[:200]}")
        else:
            self.add("image_candidates", "pass", f"every media has candidates; the largest ({post.width} px) "
                                                 f"downloads as {fetched.content_type}")

    async def _download(self, lease: Lease, url: str) -> Any:
        return await fetch_image(lease.request, url, bucket=None, max_bytes=self.options.max_image_bytes,
                                 retries=min(self.options.retries, 1), backoff_s=self.options.backoff_s,
                                 timeout_s=self.timeout_s)

    def check_popups(self) -> None:
        if self.unclosable:
            self.add("popups", "fail", "pop-ups the source could not close (no button it knows how to press, or pressing it left them open)",
                     "; ".join(self.unclosable))
        elif not self.pages_examined:
            self.add("popups", "skip", "no page loaded, so there was nothing to look for pop-ups on")
        elif self.closed:
            self.add("popups", "pass", f"closed with {sorted(set(self.closed))}")
        else:
            self.add("popups", "pass", "no pop-up was shown")


__all__ = ["CHECKS", "MEDIA_FIELDS", "PAGE_FIELDS", "Check", "DoctorError", "Report", "browser_failure",
           "check_target", "doctor_options", "run_doctor"]
