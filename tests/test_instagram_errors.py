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
