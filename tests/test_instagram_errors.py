"""Browser errors reach the user as what happened and what to do, never Playwright's own text."""

from __future__ import annotations

import logging

import pytest
from playwright.async_api import Error as PlaywrightError

from selfiescope.plugins.instagram.errors import explain, translate

RAW = {
    "navigated": "Locator.evaluate_all: Execution context was destroyed, most likely because of a navigation",
    "refused": "Page.goto: net::ERR_CONNECTION_REFUSED at http://127.0.0.1:9/explore/tags/x/\nCall log:\n  - navigating",
    "dns": "Page.goto: net::ERR_NAME_NOT_RESOLVED at https://www.instagrm.com/",
    "timeout": "Page.goto: Timeout 30000ms exceeded.\nCall log:\n  - navigating to \"http://x/\"",
    "closed": "Page.evaluate: Target page, context or browser has been closed",
    "network": "APIRequestContext.get: read ECONNRESET",
    "bad_url": "Page.goto: Protocol error (Page.navigate): Cannot navigate to invalid URL",
    "aborted": "Page.goto: net::ERR_FAILED at http://127.0.0.1:9/explore/tags/nope/",
}


@pytest.mark.parametrize("kind", sorted(RAW))
def test_each_browser_error_is_named_with_what_to_do_and_no_raw_text(kind: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="selfiescope.instagram")
    raw = RAW[kind]
    assert translate(PlaywrightError(raw)).kind == kind
    line = explain(PlaywrightError(raw), "reading the feed")
    assert line.startswith("reading the feed: ") and "\n" not in line
    for token in ("Locator.", "Page.", "Call log", "net::", "APIRequestContext", "ms exceeded"):
        assert token not in line
    assert "rerun" in line.lower() or "check" in line.lower()
    assert raw.splitlines()[0] in caplog.text  # the raw text is kept for the debug log


def test_an_unknown_error_points_to_the_debug_log() -> None:
    line = explain(PlaywrightError("Frobnicator.zap: something odd"), "opening the tag page")
    assert "Frobnicator" not in line and "-vv" in line


# Chromium's common network codes, each with the kind it must be told as; none may read "unexpected".
NET_CODES = [
    ("ERR_TOO_MANY_REDIRECTS", "redirect_loop"),
    ("ERR_EMPTY_RESPONSE", "empty"),
    ("ERR_INVALID_RESPONSE", "bad_response"),
    ("ERR_INVALID_HTTP_RESPONSE", "bad_response"),
    ("ERR_CONTENT_LENGTH_MISMATCH", "bad_response"),
    ("ERR_CONTENT_DECODING_FAILED", "decoding"),
    ("ERR_SSL_PROTOCOL_ERROR", "tls"),
    ("ERR_SSL_VERSION_OR_CIPHER_MISMATCH", "tls"),
    ("ERR_CERT_AUTHORITY_INVALID", "tls"),
    ("ERR_CERT_DATE_INVALID", "tls"),
    ("ERR_HTTP2_PROTOCOL_ERROR", "protocol"),
    ("ERR_HTTP2_PING_FAILED", "protocol"),
    ("ERR_ABORTED", "aborted"),
    ("ERR_CONNECTION_RESET", "network"),
    ("ERR_CONNECTION_CLOSED", "network"),
    ("ERR_TIMED_OUT", "network"),
    ("ERR_ADDRESS_UNREACHABLE", "offline"),
    ("ERR_UNSAFE_PORT", "network_other"),
    ("ERR_BLOCKED_BY_RESPONSE", "network_other"),
]


@pytest.mark.parametrize(("code", "kind"), NET_CODES)
def test_chromium_network_codes_say_what_happened(code: str, kind: str) -> None:
    raw = f"Page.goto: net::{code} at http://127.0.0.1:9/explore/tags/selfie/\nCall log:\n  - navigating"
    shown = translate(PlaywrightError(raw))
    assert shown.kind == kind
    line = shown.message("opening the tag page")
    assert "unexpected" not in line and "net::" not in line and code not in line and "\n" not in line
