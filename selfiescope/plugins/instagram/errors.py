"""Browser errors in words a user can act on.

Playwright's messages name its own calls ("Locator.evaluate_all: Execution context was
destroyed, most likely because of a navigation") and carry a call log; none of that helps a
user. :func:`translate` says what happened and what to do; the raw text goes to the debug
log only. The source and ``selfiescope doctor`` use this one function, so both say the same
thing about the same failure.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

log = logging.getLogger("selfiescope.instagram")

DEBUG_HINT = "run with -vv (debug log) to see the browser's own message"


@dataclass(frozen=True)
class Translation:
    kind: str  # a stable name for tests and callers: "navigated", "closed", "refused", ...
    what: str  # what happened, in the user's terms
    todo: str  # what to do about it

    def message(self, doing: str = "") -> str:
        prefix = f"{doing}: " if doing else ""
        return f"{prefix}{self.what}; {self.todo}"


# (pattern on the raw text, kind, what happened, what to do); the first match wins.
_RULES: list[tuple[re.Pattern[str], str, str, str]] = [
    (re.compile(r"execution context was destroyed|navigat(ed|ion) (to|interrupted)|frame was detached"
                r"|interrupted by another navigation", re.I),
     "navigated", "the page went to another address meanwhile (a lost session, a redirect or a reload)",
     "rerun to resume; if it keeps happening, run `selfiescope doctor`"),
    (re.compile(r"invalid URL|ERR_INVALID_URL|ERR_UNKNOWN_URL_SCHEME", re.I), "bad_url",
     "the address is not a valid URL", "check plugins.instagram.base_url (e.g. https://www.instagram.com)"),
    (re.compile(r"ERR_CONNECTION_REFUSED", re.I), "refused",
     "the site refused the connection (it is down, or base_url points to the wrong place)",
     "check plugins.instagram.base_url and your network, then rerun to resume"),
    (re.compile(r"ERR_NAME_NOT_RESOLVED|ERR_NAME_RESOLUTION_FAILED|getaddrinfo|ENOTFOUND", re.I), "dns",
     "the site's name could not be resolved (no network, or a wrong base_url)",
     "check your network (or proxy) and plugins.instagram.base_url, then rerun to resume"),
    (re.compile(r"ERR_PROXY|ERR_TUNNEL_CONNECTION_FAILED", re.I), "proxy",
     "the proxy refused or failed the connection", "check the proxy settings, then rerun to resume"),
    (re.compile(r"ERR_TOO_MANY_REDIRECTS", re.I), "redirect_loop",
     "the site keeps redirecting the page back and forth (a redirect loop), so no page loaded",
     "check plugins.instagram.base_url; if it points to the right site, clear the saved session "
     "(`selfiescope login` again) and rerun"),
    (re.compile(r"ERR_EMPTY_RESPONSE", re.I), "empty",
     "the site closed the connection without answering", "rerun to resume; if it keeps happening, "
     "check plugins.instagram.base_url and run `selfiescope doctor`"),
    (re.compile(r"ERR_INVALID_RESPONSE|ERR_INVALID_HTTP_RESPONSE|ERR_RESPONSE_HEADERS|ERR_INVALID_CHUNKED"
                r"|ERR_CONTENT_LENGTH_MISMATCH|ERR_INCOMPLETE_CHUNKED", re.I), "bad_response",
     "the site sent an answer that is not valid HTTP (a wrong port, or a broken server or proxy)",
     "check plugins.instagram.base_url (and the proxy), then rerun"),
    (re.compile(r"ERR_CONTENT_DECODING_FAILED", re.I), "decoding",
     "the site's answer claimed a compression it does not use, so the browser could not read it",
     "check plugins.instagram.base_url (and the proxy), then rerun"),
    (re.compile(r"ERR_HTTP2_|ERR_QUIC_", re.I), "protocol",
     "the site broke the HTTP/2 (or QUIC) protocol mid-answer", "rerun to resume; if it keeps happening, "
     "check the proxy or network"),
    (re.compile(r"ERR_CERT|ERR_SSL|SSL|certificate", re.I), "tls",
     "the site's certificate was not accepted", "check the clock, the network and base_url, then rerun"),
    (re.compile(r"ERR_FAILED|ERR_ABORTED|ERR_BLOCKED_BY_CLIENT", re.I), "aborted",
     "the request was stopped before it reached the site (when replaying: the recording does not hold it)",
     "when replaying, record this hashtag first; otherwise rerun, with -vv for the browser's own message"),
    (re.compile(r"ERR_INTERNET_DISCONNECTED|ERR_NETWORK_CHANGED|ERR_ADDRESS_UNREACHABLE", re.I), "offline",
     "the network went away", "rerun to resume once the network is back"),
    (re.compile(r"ERR_CONNECTION_(RESET|CLOSED|ABORTED|TIMED_OUT)|ERR_EMPTY_RESPONSE|ERR_TIMED_OUT"
                r"|ECONNRESET|socket hang up", re.I), "network",
     "the connection to the site broke off", "rerun to resume; if it keeps happening, lower "
     "plugins.instagram.requests_per_minute or run `selfiescope doctor`"),
    (re.compile(r"Timeout \d+(\.\d+)?ms exceeded|no answer within|timed out", re.I), "timeout",
     "the site or the browser did not answer in time",
     "rerun to resume; on a slow network raise browser.timeout_s"),
    (re.compile(r"(Target|Page|Browser|context).{0,40}(closed|crashed)|has been closed|browser has disconnected"
                r"|Connection closed|disposed", re.I), "closed",
     "the browser (or its page) closed or crashed", "rerun to resume; if it keeps happening, check memory "
     "and browser.executable"),
    (re.compile(r"Executable doesn't exist|Failed to launch|spawn .* ENOENT", re.I), "launch",
     "the browser could not be started", "check browser.executable (or run scripts/ensure-chromium.sh)"),
    # Any other Chromium network code: still a network failure, never "unexpected".
    (re.compile(r"net::ERR_[A-Z0-9_]+"), "network_other",
     "the browser could not load the site (a network error)",
     "check plugins.instagram.base_url, the proxy and your network, then rerun; " + DEBUG_HINT),
]


def translate(exc: BaseException | str, doing: str = "") -> Translation:
    """What a browser error means and what to do; the raw text is logged at debug level only."""
    raw = exc if isinstance(exc, str) else f"{type(exc).__name__}: {exc}"
    log.debug("browser error%s: %s", f" while {doing}" if doing else "", raw)
    for pattern, kind, what, todo in _RULES:
        if pattern.search(raw):
            return Translation(kind, what, todo)
    return Translation("unknown", "the browser failed in an unexpected way", f"rerun to resume; {DEBUG_HINT}")


def explain(exc: BaseException | str, doing: str = "") -> str:
    """One line for the user: ``"{doing}: what happened; what to do"``."""
    return translate(exc, doing).message(doing)


def is_browser_error(exc: BaseException) -> bool:
    """An error raised by Playwright (or a deadline on a browser call): one :func:`translate` explains."""
    from playwright.async_api import Error as PlaywrightError

    return isinstance(exc, (PlaywrightError, TimeoutError))
