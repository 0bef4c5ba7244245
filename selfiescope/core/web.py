"""What every web source needs: a persisted request budget, downloads that retry the
right failures, deadlines on every await that crosses to the browser or the network,
closing pop-ups, and reading ``srcset``. Sources (Instagram, gallery, third-party) build on it."""

from __future__ import annotations

import asyncio
import logging
import random
import re
import time
from dataclasses import dataclass
from collections.abc import Awaitable
from typing import Any, Callable, TypeVar
from urllib.parse import urlsplit

from .budget import TokenBucket
from .errors import DeadlineExceeded, SiteError
from .image_whole import body_cut_short, image_cut_short

log = logging.getLogger("selfiescope.web")
T = TypeVar("T")


class Deadline(DeadlineExceeded, TimeoutError):
    """An await on the browser or the network got no answer in time. ``what`` names what was
    awaited (given where the deadline is set), ``limit_s`` the limit, ``setting`` the key that
    sets it when one does.

    Also a :class:`TimeoutError`: the site or the browser did not answer, which callers that
    retry treat like any other timeout. A slow start of Chromium is never one of these
    (:class:`~selfiescope.core.browser.BrowserStartTimeout`)."""

    def describe(self) -> str:
        where = f" ({self.setting})" if self.setting else ""
        return f"{self.what}: no answer within {self.limit_s:g} s{where}"


async def within(seconds: float, awaitable: Awaitable[T], what: str, setting: str | None = None) -> T:
    """``await awaitable`` for at most ``seconds``; :class:`Deadline` naming ``what`` (and
    ``setting``, the key that sets ``seconds``) after that."""
    try:
        return await asyncio.wait_for(awaitable, seconds)
    except TimeoutError:
        raise Deadline(what, seconds, setting) from None


class RateLimited(SiteError):
    def __init__(self, retry_after_s: float) -> None:
        super().__init__(f"rate limited; retry after {retry_after_s:.0f} s")
        self.retry_after_s = retry_after_s


class DownloadError(SiteError):
    """A download that failed for good (after retries, or not worth retrying)."""

    def __init__(self, url: str, reason: str, *, transient: bool, status: int | None = None,
                 unreachable: bool = False, proxy: bool = False) -> None:
        super().__init__(f"{reason}: {url.split('?')[0]}")  # a signed URL's query is noise (and a credential)
        self.url = url
        self.reason = reason
        self.transient = transient  # worth trying again (later, or with a fresh URL): never mark it done
        self.status = status
        self.unreachable = unreachable  # the host refused the connection or has no address
        self.proxy = proxy  # the proxy, not the site, failed it: every download will fail the same way

    @property
    def refused(self) -> bool:
        """401/403: an expired signed URL or a lost session. A fresh URL may work."""
        return self.status in (401, 403)

    @property
    def rejection_code(self) -> str:
        """Why a download that will never work is a rejection: ``too_large``, else ``gone`` (404/410)."""
        return "too_large" if self.reason.startswith("too large") else "gone"


async def settle_failed_download(run: Any, source: str, job: Any, post_id: str, exc: DownloadError) -> None:
    """Count a download that failed, the way the rest of a run counts images: one that may work
    later is a failure (``download_failed``: exit 1, a rerun retries it, never marked done); one
    that never will (404/410, too large) is a rejection with its reason, kept in the manifest
    (``stats``, the card) and done for good."""
    if exc.transient:
        run.stats.count(job.target, "failed", "download_failed", 0, exc.reason)
        return
    await asyncio.to_thread(run.manifest.reject_post, source, post_id, job.target, job.label, exc.rejection_code,
                            exc.reason, run.run_id)
    run.stats.count(job.target, "rejected", exc.rejection_code, 0)


class SiteUnreachable(SiteError, ConnectionError):
    """The site cannot be reached at all: connection refused, no such host, no route."""

    def __init__(self, url: str, reason: str) -> None:
        parts = urlsplit(url)
        self.site = f"{parts.scheme}://{parts.netloc}" if parts.netloc else url.split("?")[0]
        self.reason = reason
        super().__init__(f"{self.site} cannot be reached ({reason})")


class NotRecorded(SiteError, ConnectionError):
    """A replay was asked for something its recording does not hold."""


class RequestFailed(SiteError, ConnectionError):
    """A request made outside the browser failed; the message is a plain sentence (no library text)."""

    def __init__(self, plain: str, *, proxy: bool = False, unreachable: str | None = None) -> None:
        super().__init__(plain)
        self.proxy = proxy  # the proxy refused or failed it
        self.unreachable = unreachable  # why the host is out of reach (refused, no DNS name), or None


# What a browser or network error says when the whole host is out of reach, in Chromium's
# words (page loads) and Node's (the request API).
_UNREACHABLE = (
    # a closed loopback port reads as refused, or as a socket that never connected
    (re.compile(r"ERR_CONNECTION_REFUSED|ERR_SOCKET_NOT_CONNECTED|ERR_CONNECTION_FAILED|ECONNREFUSED"), "connection refused"),
    (re.compile(r"ERR_NAME_NOT_RESOLVED|ERR_NAME_RESOLUTION_FAILED|ENOTFOUND|EAI_AGAIN"), "no such host in DNS"),
    (re.compile(r"ERR_ADDRESS_UNREACHABLE|ERR_INTERNET_DISCONNECTED|EHOSTUNREACH|ENETUNREACH"), "no route to it"),
)


def unreachable_reason(error: BaseException | str) -> str | None:
    """Why a failed request means its host is out of reach (refused, no DNS name, no route), or None."""
    text = str(error)
    return next((why for pattern, why in _UNREACHABLE if pattern.search(text)), None)


# Node's and Chromium's words for a connection that broke off before the whole answer came.
_CUT_OFF = re.compile(r"ECONNRESET|socket hang up|ERR_CONNECTION_(RESET|CLOSED|ABORTED)|ERR_EMPTY_RESPONSE"
                      r"|premature close|aborted", re.I)


def network_problem(error: BaseException | str, timeout_s: float) -> str:
    """A failed request in plain words (the library's own text belongs in the debug log)."""
    text = str(error)
    if re.search(r"timeout|timed out", text, re.I):
        return f"no answer within {timeout_s:g} s"
    if (why := unreachable_reason(text)) is not None:
        return why
    if _CUT_OFF.search(text):
        return "the connection broke off before the answer"
    return "a network error (run with -vv to see the browser's own message)"


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
                      sleep: Callable[[float], Any] = asyncio.sleep, max_retry_after_s: float = 900.0,
                      waiting: Callable[[Awaitable[Any]], Awaitable[Any]] | None = None,
                      on_429: Callable[[float], None] | None = None,
                      on_failure: Callable[[str], None] | None = None) -> Fetched:
    """GET an image through a Playwright request context (so the browser's cookies apply).

    5xx, 408, timeouts, cut-off connections and answers that are not an image (an
    HTML error page) are retried with exponential backoff, and so are answers that arrived
    cut short (fewer bytes than their Content-Length, image data that stops early), so a
    cut-off download ends as a transient failure, never as a truncated image; a 429 waits its Retry-After
    (through the shared bucket), up to ``max_retry_after_s`` (a longer one raises
    :class:`RateLimited`). An image sent with a wrong content type is recognised by its
    bytes. 401/403 (expired signed URL, lost session) fail at once but count as
    transient (the caller may refresh the URL); 404/410 and too large fail for good. A
    host that refuses the connection or has no address fails at once (``unreachable``):
    backing off for a site that is gone only delays saying so. ``waiting`` wraps every
    wait for the budget or a 429 (a caller's stall clock may leave it out); ``on_429``
    hears each Retry-After honoured, ``on_failure`` each failed attempt's problem. Every reason
    a :class:`DownloadError` gives is a plain sentence: the library's own text goes to the debug log.
    """
    from playwright.async_api import Error as PlaywrightError

    def wait_for(awaitable: Awaitable[Any]) -> Awaitable[Any]:
        return waiting(awaitable) if waiting is not None else awaitable

    bare = url.split("?")[0]  # a signed URL's query is a credential: never logged
    attempt = 0
    while True:
        attempt += 1
        if bucket is not None:
            await wait_for(bucket.take())
        problem: str
        try:
            resp = await within(timeout_s + 5, request.get(url, timeout=timeout_s * 1000, fail_on_status_code=False),
                                f"GET {bare}")
        except Deadline:
            problem = f"no answer within {timeout_s:g} s"
        except NotRecorded as exc:
            raise DownloadError(url, str(exc), transient=True) from None
        except RequestFailed as exc:
            if exc.proxy:  # the proxy says no: every attempt would hear the same
                raise DownloadError(url, str(exc), transient=True, proxy=True) from None
            if exc.unreachable is not None:
                raise DownloadError(url, exc.unreachable, transient=True, unreachable=True) from None
            problem = str(exc)
        except PlaywrightError as exc:
            text = str(exc).lower()
            if ("has been closed" in text or "disposed" in text) and "timeout" not in text:
                raise  # the browser or context went away: the caller recovers
            log.debug("GET %s: %s", bare, str(exc).replace(url, bare))
            if (why := unreachable_reason(exc)) is not None:
                raise DownloadError(url, why, transient=True, unreachable=True) from None
            problem = network_problem(exc, timeout_s)
        else:
            status = resp.status
            if status == 429:
                wait = parse_retry_after(resp.headers.get("retry-after"))
                if wait > max_retry_after_s:
                    raise RateLimited(wait)
                log.warning("429 on a download; waiting %.0f s as asked", wait)
                if on_429 is not None:
                    on_429(wait)
                if bucket is not None:
                    bucket.penalize(wait)
                else:
                    await wait_for(sleep(wait))
                problem = "HTTP 429"
            elif status >= 500 or status == 408:
                problem = f"HTTP {status}"
            elif status in (401, 403):
                reason = (await within(timeout_s, resp.text(), "reading a refusal")).strip()[:80]
                raise DownloadError(url, f"HTTP {status}" + (f" ({reason})" if reason else ""), transient=True,
                                    status=status)
            elif status >= 400:
                raise DownloadError(url, f"HTTP {status}", transient=False, status=status)
            else:
                ctype = resp.headers.get("content-type", "").split(";")[0].strip().lower()
                length = resp.headers.get("content-length")
                if length and length.isdigit() and int(length) > max_bytes:
                    raise DownloadError(url, f"too large ({int(length)} bytes > {max_bytes})", transient=False)
                data = await within(timeout_s, resp.body(), f"reading {bare}")
                if len(data) > max_bytes:
                    raise DownloadError(url, f"too large ({len(data)} bytes > {max_bytes})", transient=False)
                await within(timeout_s, resp.dispose(), "releasing a response")
                sniffed = sniff_image_type(data)
                cut = body_cut_short(resp.headers, data)
                if cut is None and sniffed is not None:
                    cut = await asyncio.to_thread(image_cut_short, data)
                if cut is not None:  # the connection or a proxy cut it: another try gets it whole
                    problem = cut
                elif sniffed is not None:
                    return Fetched(data, ctype if ctype.startswith("image/") else sniffed, attempt)
                else:
                    problem = f"not an image (content-type {ctype or 'missing'})"
        if on_failure is not None:
            on_failure(problem)
        if attempt > retries:
            raise DownloadError(url, f"{problem} after {attempt} attempts", transient=True)
        if not problem.startswith("HTTP 429"):
            delay = backoff_s * 2 ** (attempt - 1) * (1 + random.random() * 0.25)
            log.info("download %s failed (%s); retry %d in %.1f s", bare, problem, attempt, delay)
            await sleep(delay)  # waiting for the site to recover: a stall clock keeps running


def sniff_image_type(data: bytes) -> str | None:
    """The image type the bytes say (JPEG, PNG, GIF, WebP, AVIF/HEIC), or None."""
    if data[:3] == b"\xff\xd8\xff":
        return "image/jpeg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "image/png"
    if data[:4] == b"GIF8":
        return "image/gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data[4:8] == b"ftyp" and data[8:12] in (b"avif", b"heic", b"heix", b"mif1"):
        return "image/avif" if data[8:12] == b"avif" else "image/heic"
    return None


# --- pages ---------------------------------------------------------------------------------
_HEIGHT = "() => document.documentElement.scrollHeight"
_SCROLL = """() => {
  window.scrollTo(0, document.documentElement.scrollHeight);
  window.dispatchEvent(new Event('scroll'));
}"""


async def scroll_and_wait(page: Any, pause_s: float, timeout_s: float = 30.0) -> bool:
    """Scroll to the bottom; True as soon as the page grows, False if it did not within ``pause_s``."""
    from playwright.async_api import TimeoutError as PlaywrightTimeout

    before = await within(timeout_s, page.evaluate(_HEIGHT), "measuring the page")
    await within(timeout_s, page.evaluate(_SCROLL), "scrolling")
    try:
        await page.wait_for_function(
            "h => document.documentElement.scrollHeight > h", arg=before,
            timeout=pause_s * 1000, polling=100,
        )
    except PlaywrightTimeout:
        return False
    return True


# Buttons that close a pop-up granting the least, in words a redesign tends to keep
# (decline, reject, only essential/necessary, not now, later, close), in the supported
# languages. Anything that accepts or allows is never pressed.
DECLINE = re.compile(
    r"declin|reject|refus|deny|only (allow )?(essential|necessary|required)|(essential|necessary|required)"
    r"( cookies)? only|not now|later|no,? thanks|skip|cancel|dismiss|ablehnen|nur (erforderliche|notwendige)"
    r"|jetzt nicht|später|sp\u00e4ter|uniquement|plus tard|pas maintenant|non merci|rechaz|solo (las )?"
    r"(necesarias|esenciales)|ahora no|rifiuta|solo (i )?(cookie )?(essenziali|necessari)|non ora|recusar"
    r"|somente|apenas|agora n[aã]o",
    re.IGNORECASE,
)
ACCEPT = re.compile(r"accept|allow all|agree|autoriser tous|tout accepter|alle .*(erlauben|akzeptieren)|"
                    r"aceptar|permitir todas|accetta|consenti tutti|aceitar|turn on|activer|aktivieren|save info|"
                    r"enregistrer|speichern", re.IGNORECASE)
CLOSE = re.compile(r"^(close|fermer|schlie(ß|ss)en|cerrar|chiudi|fechar|×|✕|x)$", re.IGNORECASE)
_BUTTONS = "button, [role=button], input[type=button], input[type=submit]"
_DIALOG_BUTTONS = """(ds, sel) => ds.map(d => Array.from(d.querySelectorAll(sel)).map(
  e => (e.getAttribute('aria-label') || e.innerText || e.value || e.textContent || '').trim()))"""


_OPEN_DIALOGS = """(sel) => Array.from(document.querySelectorAll('[role=dialog]')).map(d => ({
  label: d.getAttribute('aria-label') || d.innerText.slice(0, 60),
  buttons: Array.from(d.querySelectorAll(sel)).map(
    e => (e.getAttribute('aria-label') || e.innerText || e.value || e.textContent || '').trim()),
}))"""


async def open_dialogs(page: Any, timeout_s: float = 10.0) -> list[dict[str, Any]]:
    """The pop-ups open now, each as ``{"label", "buttons"}``, buttons named as
    :func:`click_dialog_buttons` names them (so :func:`choose_dismiss_button` can judge them)."""
    return await within(timeout_s, page.evaluate(_OPEN_DIALOGS, _BUTTONS), "reading pop-ups")


def choose_dismiss_button(names: list[str], known: list[str]) -> int | None:
    """Which of a dialog's buttons to press: a known name, else a decline-like name, else a close button."""
    lowered = [n.lower() for n in names]
    for want in known:
        if want.lower() in lowered:
            return lowered.index(want.lower())
    for i, name in enumerate(names):
        if DECLINE.search(name) and not ACCEPT.search(name):
            return i
    for i, name in enumerate(names):
        if CLOSE.match(name):
            return i
    return None


async def click_dialog_buttons(page: Any, names: list[str], rounds: int = 5, timeout_s: float = 10.0) -> list[str]:
    """Close pop-ups: in the topmost ``role=dialog``, press the button named one of ``names``,
    else one whose name declines (:data:`DECLINE`), else its close button.

    Roles and accessible names are what a site keeps stable for screen readers;
    generated class names change with every deploy (and with the language).
    """
    from playwright.async_api import TimeoutError as PlaywrightTimeout

    clicked: list[str] = []
    dialogs = page.get_by_role("dialog")
    for _ in range(rounds):
        names_by_dialog = await within(timeout_s, dialogs.evaluate_all(_DIALOG_BUTTONS, _BUTTONS), "reading pop-ups")
        # stacked pop-ups: the one on top comes last; one that cannot be closed is skipped
        target = next(((i, c) for i in reversed(range(len(names_by_dialog)))
                       if (c := choose_dismiss_button(names_by_dialog[i], names)) is not None), None)
        if target is None:
            break
        i, choice = target
        try:  # briefly: a pop-up that appears meanwhile covers the button; the next round sees it
            await dialogs.nth(i).locator(_BUTTONS).nth(choice).click(timeout=min(timeout_s, 2.0) * 1000)
        except PlaywrightTimeout:
            continue
        clicked.append(names_by_dialog[i][choice])
        await page.wait_for_timeout(50)
    if await within(timeout_s, dialogs.count(), "counting pop-ups"):
        for label in await within(timeout_s, dialogs.evaluate_all(
                "ds => ds.map(d => d.getAttribute('aria-label') || d.innerText.slice(0, 60))"), "reading pop-ups"):
            if label not in _unclosable:
                _unclosable.add(label)
                log.warning("a pop-up with no button I know how to press: %r (add its button's name)", label)
    return clicked


_unclosable: set[str] = set()
