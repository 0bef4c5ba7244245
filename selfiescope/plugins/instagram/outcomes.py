"""What a tag page and a login form say, read once for the source and ``selfiescope doctor``.

:func:`read_tag_page` names what a freshly loaded tag page shows (a 429 with its wait, a
challenge, a login wall, no such hashtag, another HTTP error) with the page's own message;
:class:`LoginFormUnknown` says what a login form the source cannot read has instead. Both callers use these words unchanged, so the doctor and a scrape name the same
cause the same way. The site's text is quoted through :func:`printable` (one short line).
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import urlparse

from ...api import SiteError
from ...api.web import credential, parse_retry_after, within

USERNAME_ENV = "SELFIESCOPE_INSTAGRAM_USERNAME"
PASSWORD_ENV = "SELFIESCOPE_INSTAGRAM_PASSWORD"


def credentials_set() -> bool:
    """Whether both credential variables are set (advice never asks to set what is set)."""
    return bool(credential(USERNAME_ENV) and credential(PASSWORD_ENV))

CHALLENGE_PATHS = ("/challenge", "/checkpoint", "/accounts/suspended")
MAX_QUOTE = 160  # characters of the site's message that are quoted
MAX_SAID_WAIT_S = 366 * 86400.0  # a longer Retry-After is said as such, not as a date

_PAGE_TEXT = "() => (document.body ? document.body.innerText : '').replace(/\\s+/g, ' ').trim().slice(0, 400)"
_SENTENCE_END = re.compile(r"[.!?。！？…]+$")


# --- quoting the site --------------------------------------------------------------------------
def printable(text: Any, limit: int = MAX_QUOTE) -> str:
    """The site's text as one short printable line: controls and odd spacing go, long text is cut."""
    cleaned = "".join(" " if ch.isspace() or unicodedata.category(ch)[0] == "Z"
                      else "" if unicodedata.category(ch)[0] == "C" else ch for ch in str(text or ""))
    line = " ".join(cleaned.split())
    return line if len(line) <= limit else line[: limit - 1].rstrip() + "…"


def sentence(text: str) -> str:
    """``text`` ending with exactly one sentence mark: the site's own, or a period."""
    text = text.rstrip()
    return text if not text or _SENTENCE_END.search(text) else text + "."


def join_sentences(*parts: str) -> str:
    """Sentences joined by a space, each ended once (a quoted message's own period is not doubled);
    each after the first starts with a capital."""
    kept = [sentence(p) for p in parts if p and p.strip()]
    return " ".join([*kept[:1], *(p[:1].upper() + p[1:] for p in kept[1:])])


def humanize_wait(seconds: float, now: datetime | None = None) -> str:
    """``86400`` -> ``"about 1 day (until 2026-12-06 18:05 UTC)"``; short waits in seconds."""
    seconds = float(seconds)
    if not math.isfinite(seconds) or seconds > MAX_SAID_WAIT_S:  # a site's header may say anything
        return "longer than a year"
    seconds = max(0.0, seconds)
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= 1.5 * size or (unit == "day" and seconds >= size):
            n = round(seconds / size)
            amount = f"about {n} {unit}{'s' if n != 1 else ''}"
            break
    else:
        return f"{seconds:.0f} s"
    until = (now or datetime.now(timezone.utc)) + timedelta(seconds=seconds)
    return f"{amount} (until {until:%Y-%m-%d %H:%M} UTC)"


# --- a tag page ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class PageOutcome:
    """What a tag page showed. ``kind``: ok, rate_limited, challenge, login_wall, not_found, http_error, empty."""

    kind: str
    what: str = ""  # the cause, in the words both the doctor and the source print
    todo: str = ""
    site_says: str = ""  # the page's own message, printable and short
    retry_after_s: float | None = None
    status: int | None = None

    @property
    def found(self) -> str:
        """The evidence: the page's message and, for a 429, when to try again."""
        parts = [f"the site says {self.site_says!r}" if self.site_says else ""]
        if self.retry_after_s is not None:
            parts.append(f"it asks to wait {humanize_wait(self.retry_after_s)} (Retry-After: {self.retry_after_s:g} s)")
        return "; ".join(p for p in parts if p)

    def message(self, todo: str | None = None) -> str:
        """One line: the cause, the page's message, when to retry, what to do."""
        return join_sentences(self.what + (f": {self.found}" if self.found else ""), self.todo if todo is None else todo)


def rate_limited(site_says: str, retry_after_s: float | None, status: int = 429) -> PageOutcome:
    when = "later" if retry_after_s is None else "after that"
    return PageOutcome("rate_limited", "the site is rate-limiting this account (HTTP 429)",
                       f"rerun {when} to resume (lower plugins.instagram.requests_per_minute if it keeps happening)",
                       printable(site_says), retry_after_s, status)


def empty() -> PageOutcome:
    """A tag page that loaded and showed no post: in the grid, nor in the feed JSON."""
    return PageOutcome("empty", "the tag page showed no post (neither in the grid nor in the feed JSON)",
                       "rerun later; if it stays empty, run `selfiescope doctor` (a lost session or a changed page)")


def challenge(site_says: str = "") -> PageOutcome:
    return PageOutcome("challenge", "the site shows a challenge (\"help us confirm it's you\")",
                       "run `selfiescope login --show-browser` to pass it in a browser window, then rerun to resume",
                       printable(site_says))


def login_wall() -> PageOutcome:
    if credentials_set():
        return PageOutcome("login_wall", "the site shows a login wall",
                           "the credential variables are set but did not get past it: run `selfiescope doctor` "
                           "to see how logging in ends, or `selfiescope login`, then rerun")
    return PageOutcome("login_wall", "the site shows a login wall",
                       f"set {USERNAME_ENV} and {PASSWORD_ENV} or run `selfiescope login`, then rerun")


async def page_text(page: Any, timeout_s: float) -> str:
    """The visible text of ``page`` (short), or '' when it cannot be read."""
    try:
        return printable(await within(timeout_s, page.evaluate(_PAGE_TEXT), "reading the page"), 400)
    except Exception:  # noqa: BLE001 - the page went away: nothing to quote
        return ""


def _message_of(text: str) -> str:
    """A JSON error's ``message`` (an API-style answer shown as the page), else the text itself."""
    try:
        data = json.loads(text)
    except ValueError:
        return text
    return str(data["message"]) if isinstance(data, dict) and data.get("message") else text


async def read_tag_page(page: Any, response: Any, tag: str, timeout_s: float) -> PageOutcome:
    """What the tag page just loaded in ``page`` (``response``: its document's answer) shows."""
    path = urlparse(page.url).path
    if path.startswith(CHALLENGE_PATHS):
        return challenge(await page_text(page, timeout_s))
    if path.startswith("/accounts/login"):
        return login_wall()
    status = response.status if response is not None else 200
    if status == 429:
        header = response.headers.get("retry-after")
        return rate_limited(_message_of(await page_text(page, timeout_s)),
                            parse_retry_after(header, 30.0) if header else None)
    if status == 404:
        return PageOutcome("not_found", f"no such hashtag (/explore/tags/{tag}/ answered HTTP 404)",
                           "check the hashtag's spelling", status=status)
    if status >= 400:
        return PageOutcome("http_error", f"the tag page answered HTTP {status}",
                           "rerun later to resume; if it keeps happening, run `selfiescope doctor`",
                           await page_text(page, timeout_s), status=status)
    return PageOutcome("ok", status=status)


# --- the login form ------------------------------------------------------------------------------
class LoginFormUnknown(SiteError):
    """The login page has a form, but not fields the source can find (:func:`.login.find_login_form`);
    says what it has instead."""

    def __init__(self, missing: list[str], inputs: list[str], buttons: list[str]) -> None:
        self.missing = missing
        self.what = f"the login form was not recognised: no {', no '.join(missing)} the source can find"
        self.found = printable(f"inputs: {'; '.join(inputs) or 'none'}; buttons: {buttons}", 400)
        self.todo = ("log in once with `selfiescope login --show-browser` (you fill the form in the window) or "
                     "`selfiescope login --from-browser BROWSER` (the session of a browser you are logged in with), "
                     "then rerun")
        super().__init__(join_sentences(f"{self.what} ({self.found})", self.todo))
