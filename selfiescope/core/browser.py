"""One Chromium per run, shared by every job through isolated browser contexts.

A job leases a context (its own cookies and pages); at most ``browser.max_contexts``
leases are out at once. Pages are replaced after ``browser.recycle_after``
navigations, because a long-lived page is where a scraper's browser memory grows. If
Chromium dies, :meth:`BrowserPool.recover` relaunches it once for everyone; a source
then reruns the job, and since posts already recorded are skipped nothing is lost or
fetched twice.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing, asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import psutil

from .errors import BrowserError, DeadlineExceeded
from .browser_lookup import find_chromium
from .proxied_request import ProxiedRequest, proxy_needs_plain_gets
from .launch_args import launch_args
from .proxy import BACKGROUND_PROXY, context_proxy
from .settings import BrowserSettings
from .secrets import child_environment, hide_from_children
from .session_store import SESSION_ORIGIN_KEY, load_session, save_session, session_path, site_origin  # noqa: F401
from .web import Deadline, NotRecorded, SiteUnreachable, unreachable_reason, within

if TYPE_CHECKING:  # pragma: no cover
    from playwright.async_api import Browser, BrowserContext, Page, Playwright, Response, Route

    from .context import RunContext

log = logging.getLogger("selfiescope.browser")
T = TypeVar("T")

TRACKER_MARKERS = (
    "google-analytics.com", "googletagmanager.com", "doubleclick.net", "connect.facebook.net",
    "facebook.com/tr", "scorecardresearch.com", "/logging_client_events", "/ajax/bz", "/api/v1/web/logging",
)
RESOURCE_TYPES = {"font": "font", "media": "media", "image": "image", "stylesheet": "stylesheet"}


_TRY_AGAIN = ("interrupted by another navigation", "ERR_EMPTY_RESPONSE", "ERR_CONNECTION_RESET",
              "ERR_CONNECTION_CLOSED")


class BrowserCrashed(BrowserError, RuntimeError):
    """Chromium went away during a job and could not be brought back."""


class BrowserStartTimeout(BrowserError, DeadlineExceeded, RuntimeError):
    """Chromium (or Playwright's driver) did not start within ``browser.launch_timeout_s``.

    Not a :class:`TimeoutError`: a slow start is this machine's problem, never the site's,
    and must not be reported as a site that did not answer.
    """

    def __init__(self, seconds: float) -> None:
        super().__init__("the browser", seconds, "browser.launch_timeout_s")

    def describe(self) -> str:
        return (f"the browser (Chromium) did not start within {self.limit_s:g} s ({self.setting}); "
                "the machine may be busy: raise [browser] launch_timeout_s")


def is_tracker(url: str) -> bool:
    return any(marker in url for marker in TRACKER_MARKERS)


class Lease:
    """A job's browser context, with a page that is replaced every ``recycle_after`` navigations."""

    def __init__(self, context: "BrowserContext", generation: int, recycle_after: int,
                 storage_state: dict[str, Any] | None = None, timeout_s: float = 30.0) -> None:
        self.context = context
        self.timeout_s = timeout_s  # the deadline of every call to the browser
        self.storage_state = storage_state  # the saved session the context started with
        self.generation = generation
        self.recycle_after = recycle_after
        self.navigations = 0
        self.pages_opened = 0
        self._page: "Page | None" = None
        self._page_navigations = 0
        self.request_override: Any = None  # set when recording or replaying a HAR
        self.replaying = False
        self.unrecorded: list[str] = []  # replaying: the page's requests the recording could not answer

    def note_failed_request(self, request: Any) -> None:
        """A request of the page failed; replaying, one for data (not a blocked image) means the
        recording ends there."""
        if self.replaying and request.resource_type in ("document", "xhr", "fetch"):
            self.unrecorded.append(request.url)

    @property
    def request(self):  # noqa: ANN201 - APIRequestContext; shares the context's cookies
        return self.request_override if self.request_override is not None else self.context.request

    async def page(self) -> "Page":
        if self._page is None or self._page.is_closed():
            self._page = await within(self.timeout_s, self.context.new_page(), "opening a page")
            self._page_navigations = 0
            self.pages_opened += 1
        return self._page

    async def goto(self, url: str) -> "Response | None":
        """Navigate the job's page, replacing the page first when it has served its turn.

        A host out of reach raises :class:`SiteUnreachable`, a page a replay does not hold
        :class:`NotRecorded`, each saying so plainly (the browser's words go to the debug log)."""
        if self._page is not None and self._page_navigations >= self.recycle_after:
            await within(self.timeout_s, self._page.close(), "closing a page")
            self._page = None
        page = await self.page()
        self.navigations += 1
        self._page_navigations += 1
        from playwright.async_api import Error as PlaywrightError

        for attempt in (1, 2):
            try:
                # goto has the context's default timeout; the outer deadline also covers a hung driver
                return await within(self.timeout_s + 5, page.goto(url, wait_until="domcontentloaded"), f"loading {url}")
            except PlaywrightError as exc:
                log.debug("loading %s: %s", url.split("?")[0], exc)
                if self.replaying and "net::" in str(exc):
                    raise NotRecorded(f"{url.split('?')[0]} is not in the recording (offline replay)") from None
                if (why := unreachable_reason(exc)) is not None:
                    raise SiteUnreachable(url, why) from None
                # A navigation still under way (one an earlier deadline gave up on, or the page's
                # own script) cut this one short, or the connection dropped without an answer (a
                # server going down, a proxy): go again once; a site that is gone then says so.
                if attempt == 2 or not any(m in str(exc) for m in _TRY_AGAIN):
                    raise
        raise AssertionError("unreachable")  # pragma: no cover


class BrowserPool:
    def __init__(self, settings: BrowserSettings, *, headless: bool | None = None) -> None:
        self.settings = settings
        self.headless = settings.headless if headless is None else headless
        self.generation = 0  # bumped on every launch; a lease remembers the one it ran under
        self.launches = 0
        self._slots = asyncio.Semaphore(settings.max_contexts)
        self._lock = asyncio.Lock()
        self._playwright: "Playwright | None" = None
        self._browser: "Browser | None" = None
        self._closed = False
        self._har_contexts = 0  # recording: one part file per context
        self._replay: Any = None  # replaying: the HAR, loaded once

    # --- lifecycle ---------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        return self._browser is not None and self._browser.is_connected()

    async def start(self) -> "Browser":
        async with self._lock:
            if not self.connected:
                await self._launch()
            assert self._browser is not None
            return self._browser

    async def _launch(self) -> None:
        from playwright.async_api import TimeoutError as PlaywrightTimeout

        try:
            await within(self.settings.launch_timeout_s + 5, self._start_chromium(), "starting Chromium")
        except (TimeoutError, PlaywrightTimeout):
            raise BrowserStartTimeout(self.settings.launch_timeout_s) from None

    async def _start_chromium(self) -> None:
        if self._closed:
            raise BrowserCrashed("the browser pool is closed")
        from playwright.async_api import async_playwright

        executable = find_chromium(self.settings.executable)
        if self._playwright is None:
            hide_from_children()  # the driver (node) copies our environment: no credential in it
            manager = async_playwright()
            self._playwright = await within(self.settings.launch_timeout_s, manager.start(), "starting Playwright")
            _read_driver_errors(manager)
        if self._browser is not None:  # a dead one: drop it
            try:
                await within(self.settings.timeout_s, self._browser.close(), "closing the browser")
            except Exception:  # noqa: BLE001 - it is gone already
                pass
        args = launch_args(list(self.settings.extra_args))
        if hasattr(os, "geteuid") and os.geteuid() == 0 and "--no-sandbox" not in args:
            args.append("--no-sandbox")  # Chromium refuses to start as root with its sandbox
        hide_from_children()
        self._browser = await self._playwright.chromium.launch(
            executable_path=executable, headless=self.headless, args=args,
            timeout=self.settings.launch_timeout_s * 1000, env=child_environment(),
            # with browser.proxy, each context gets it (below); the browser's own background requests
            # (update checks, account look-ups no flag turns off) go to a closed port instead
            proxy=BACKGROUND_PROXY if self.settings.proxy else None,
        )
        self.generation += 1
        self.launches += 1
        log.info("browser launched (%s, generation %d)", executable, self.generation)

    async def recover(self, generation: int) -> bool:
        """After a failure in a lease of ``generation``: relaunch if the browser died.

        Returns True when the job should be retried on a fresh browser, False when the
        browser is fine (the failure was the job's own). Several jobs failing at once
        relaunch it only once.
        """
        async with self._lock:
            if self.generation != generation:
                return True  # someone already relaunched it
            if self.connected:
                return False
            log.warning("browser crashed; relaunching and resuming the unfinished jobs")
            await self._launch()
            return True

    async def close(self) -> None:
        self._closed = True
        async with self._lock:
            if self._browser is not None:
                try:
                    await within(self.settings.timeout_s, self._browser.close(), "closing the browser")
                except Exception:  # noqa: BLE001 - already dead
                    pass
                self._browser = None
            if self._playwright is not None:
                try:
                    await within(self.settings.timeout_s, self._playwright.stop(), "stopping Playwright")
                except TimeoutError:
                    log.warning("Playwright did not stop within %g s", self.settings.timeout_s)
                self._playwright = None

    # --- leases ------------------------------------------------------------------------
    @asynccontextmanager
    async def lease(self, storage_state: dict[str, Any] | None = None,
                    block: list[str] | None = None) -> AsyncIterator[Lease]:
        """A fresh browser context for one job; ``block`` adds to ``browser.block``."""
        timeout_s = self.settings.timeout_s
        async with self._slots:
            # start() raises BrowserStartTimeout itself; this bounds the wait for another job's launch
            try:
                browser = await within(self.settings.launch_timeout_s + timeout_s + 10, self.start(),
                                       "starting the browser")
            except Deadline:
                raise BrowserStartTimeout(self.settings.launch_timeout_s) from None
            generation = self.generation
            record = self._record_paths()
            har_options = {"record_har_path": str(record[0]), "record_har_content": "embed"} if record else {}
            proxy = context_proxy(self.settings.proxy, self.settings.proxy_bypass)
            context = await within(timeout_s, browser.new_context(storage_state=storage_state, proxy=proxy,  # type: ignore[arg-type]
                                                                  **har_options),
                                   "opening a browser context")
            context.set_default_timeout(timeout_s * 1000)
            if self.settings.replay_har is not None:  # before the blocker: routes added later run first
                await within(timeout_s, context.route_from_har(self.settings.replay_har, not_found="abort"),
                             "loading the HAR to replay")
            blocked = {*self.settings.block, *(block or [])}
            if blocked:
                await within(timeout_s, context.route("**/*", _blocker(blocked)), "routing requests")
            lease = Lease(context, generation, self.settings.recycle_after, storage_state, timeout_s)
            if self.settings.replay_har is not None:
                lease.replaying = True
                context.on("requestfailed", lease.note_failed_request)
            lease.request_override = await self._har_request(context, record is not None)
            try:
                yield lease
            finally:
                try:
                    await within(timeout_s, context.close(), "closing a browser context")  # also writes the HAR part
                except Exception:  # noqa: BLE001 - the browser may be gone
                    pass
                if isinstance(lease.request_override, ProxiedRequest):
                    await lease.request_override.dispose()
                elif isinstance(getattr(lease.request_override, "real", None), ProxiedRequest):
                    await lease.request_override.real.dispose()
                if record is not None:
                    lease.request_override.save(record[1])

    def _record_paths(self) -> tuple[Path, Path] | None:
        """This context's page recording and ``context.request`` recording, when recording."""
        if self.settings.record_har is None:
            return None
        from .har import parts_dir

        folder = parts_dir(Path(self.settings.record_har))
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._har_contexts += 1
        return folder / f"page-{self._har_contexts:04d}.har", folder / f"api-{self._har_contexts:04d}.har"

    async def _har_request(self, context: "BrowserContext", recording: bool) -> Any:
        from . import har

        if self.settings.replay_har is not None:
            if self._replay is None:
                self._replay = har.ReplayRequest(await asyncio.to_thread(har.load, Path(self.settings.replay_har)))
            return self._replay
        direct: Any = context.request
        if proxy_needs_plain_gets(self.settings.proxy):  # Playwright would tunnel even http:// through CONNECT
            assert self.settings.proxy is not None
            direct = ProxiedRequest(context, self.settings.proxy, list(self.settings.proxy_bypass or []),
                                    self.settings.timeout_s)
        if recording:
            return har.RecordingRequest(direct, self.settings.timeout_s)
        return direct if direct is not context.request else None

    # --- observation (benchmarks, tests) -------------------------------------------------
    def browser_processes(self) -> list[psutil.Process]:
        """Chromium processes started by this Python process (through Playwright's driver)."""
        procs = []
        for p in psutil.Process().children(recursive=True):
            try:
                if "chrom" in p.name().lower():
                    procs.append(p)
            except psutil.Error:
                continue
        return procs

    def browser_pid(self) -> int | None:
        """The main Chromium process (whose parent is not itself Chromium)."""
        procs = self.browser_processes()
        pids = {p.pid for p in procs}
        for p in procs:
            try:
                if p.ppid() not in pids:
                    return p.pid
            except psutil.Error:
                continue
        return None


def _read_driver_errors(manager: Any) -> None:
    """Retrieve the error Playwright's transport sets when its driver goes away.

    Playwright awaits that future only while it starts; when the driver dies later (Ctrl-C
    reaches the whole process group) the error stays unretrieved and asyncio prints "Future
    exception was never retrieved ... Connection closed while reading from the driver" at exit.
    The calls in flight fail on their own, so the error is only logged here.
    """
    future = getattr(getattr(getattr(manager, "_client", None), "_transport", None), "on_error_future", None)
    if isinstance(future, asyncio.Future):
        future.add_done_callback(_log_driver_error)


def _log_driver_error(future: "asyncio.Future[Any]") -> None:
    if not future.cancelled() and (error := future.exception()) is not None:
        log.debug("Playwright's driver went away: %s", error)


def _blocker(blocked: set[str]):  # noqa: ANN202
    types = {RESOURCE_TYPES[b] for b in blocked if b in RESOURCE_TYPES}
    trackers = "trackers" in blocked

    async def handle(route: "Route") -> None:
        req = route.request
        if req.resource_type in types or (trackers and is_tracker(req.url)):
            await route.abort()
        else:
            await route.fallback()

    return handle


def browser_pool(run: "RunContext") -> BrowserPool:
    """The run's shared pool (created on first use, closed when the run ends)."""

    def make() -> BrowserPool:
        pool = BrowserPool(run.settings.browser)
        run.closers.append(pool.close)
        return pool

    return run.service("browser", make)


# --- saved sessions ------------------------------------------------------------------------
async def leased_events(
    pool: BrowserPool,
    make_events: Callable[[Lease], AsyncIterator[T]],
    *,
    storage_state: Callable[[], dict[str, Any] | None] = lambda: None,
    block: list[str] | None = None,
    max_restarts: int = 2,
    what: str = "job",
) -> AsyncIterator[T]:
    """Run ``make_events(lease)`` in a fresh context; if Chromium dies, relaunch and rerun it.

    The rerun starts the job's page iteration over; the source skips what it already
    yielded (and the manifest what earlier runs recorded), so nothing is duplicated.
    """
    from playwright.async_api import Error as PlaywrightError

    restarts = 0
    while True:
        generation = pool.generation  # a crash while the context opens counts against this one
        try:
            async with pool.lease(storage_state(), block) as lease:
                generation = lease.generation
                async with aclosing(make_events(lease)) as events:
                    async for item in events:
                        yield item
            return
        except PlaywrightError as exc:
            if restarts >= max_restarts or not await pool.recover(generation):
                raise
            restarts += 1
            log.debug("%s: browser lost: %s", what, exc)  # Playwright's words: the debug log only
            log.warning("%s: the browser went away; resuming on a new browser (restart %d of %d)",
                        what, restarts, max_restarts)
