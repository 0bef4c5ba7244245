"""An image server that takes connections and never answers (from the start, or after some
images): the run ends plainly within the stall time, names the host that went quiet (never
a signed URL), keeps what was stored, and a rerun fetches the rest. Real Chromium."""

from __future__ import annotations

import asyncio
import logging
import re
import socket
from pathlib import Path

import pytest

from selfiescope.testing.chaos import Chaos
from selfiescope.testing.site import MockInstagram, TagSpec
from test_instagram import expected, one_job_says_why, recorded, scrape, seed_session
from test_instagram_chaos import settings_for

pytestmark = pytest.mark.browser

TAGS = {"gamma": TagSpec(10, "selfie", noface=0, small_face=0), "delta": TagSpec(10, "portrait", noface=0, small_face=0)}
BOUND_S = 240  # generous for a loaded 2-core machine; the bug it guards against took hours
RAW = ("APIRequestContext", "Page.goto", "Call log", "net::ERR", "Traceback")


def host_of(site: MockInstagram) -> str:
    return site.base_url.split("://", 1)[1]


def assert_plain(lines: list[str]) -> None:
    for line in lines:
        assert not any(raw in line for raw in RAW), line
        assert "sig=" not in line and "?" not in line.split("Rerun")[0], line  # no signed URL


async def test_an_image_server_that_goes_quiet_ends_the_run_and_a_rerun_fetches_the_rest(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    with MockInstagram(tags=TAGS, page_size=4, chaos=Chaos(media_stop_after=8, drop_image_every=3, url_ttl_s=600)) as site:
        seed_session(site, tmp_path)
        settings = settings_for(site, tmp_path, timeout_s=3, stall_s=6)
        stats = await asyncio.wait_for(scrape(settings, ["gamma", "delta"]), BOUND_S)
        assert stats.status == "finished_with_errors"
        one_job_says_why(stats.errors, f"images from {host_of(site)} stopped answering")
        assert_plain(stats.errors)
        assert_plain([r.getMessage() for r in caplog.records if r.levelno >= logging.INFO])
        kept = recorded(tmp_path)
        assert 0 < len(kept) <= 8, "what arrived before the server went quiet is stored"
        # The server answers again: a rerun fetches the rest, nothing twice.
        site.chaos.media_stop_after = None
        # deadlines a loaded machine meets: this run is about fetching the rest, not about a stall
        again = await asyncio.wait_for(scrape(settings_for(site, tmp_path, timeout_s=30, stall_s=60), ["gamma", "delta"]),
                                       BOUND_S)
        assert again.status == "finished", again.errors
        assert sorted(recorded(tmp_path)) == expected(site, "gamma", "delta")


async def test_an_image_server_that_never_answers_ends_the_run_plainly(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    with MockInstagram(tags={"gamma": TAGS["gamma"]}, page_size=4, chaos=Chaos(media_silent=True)) as site:
        seed_session(site, tmp_path)
        # the default retries and a per-attempt deadline longer than the stall time
        stats = await asyncio.wait_for(scrape(settings_for(site, tmp_path, timeout_s=20, stall_s=6), ["gamma"]),
                                       BOUND_S)
        assert stats.status == "finished_with_errors" and recorded(tmp_path) == []
        [error] = stats.errors
        assert re.search(rf"images from {re.escape(host_of(site))} stopped answering: no image for \d+ s", error), error
        assert "what was stored is kept" in error and "Rerun" in error
        found = int(re.search(r"\((\d+) posts found", error).group(1))  # the feed's posts, though none was fetched
        assert found >= 4, error
        assert_plain(stats.errors)
        assert_plain([r.getMessage() for r in caplog.records if r.levelno >= logging.INFO])


async def test_an_image_host_that_is_gone_while_the_pages_answer_is_named_after_one_check(tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port nobody listens on: the CDN is gone
        sock.bind(("127.0.0.1", 0))
        cdn = f"127.0.0.1:{sock.getsockname()[1]}"
    with MockInstagram(tags={"gamma": TAGS["gamma"]}, page_size=4, chaos=Chaos(media_base_url=f"http://{cdn}")) as site:
        seed_session(site, tmp_path)
        stats = await asyncio.wait_for(scrape(settings_for(site, tmp_path, timeout_s=5, stall_s=8), ["gamma"]), BOUND_S)
        tag_loads = [p for m, p, s in site.requests if p.startswith("/explore/tags/gamma/")]
    assert stats.status == "finished_with_errors" and recorded(tmp_path) == []
    [error] = stats.errors
    assert f"images from {cdn} cannot be reached (connection refused)" in error, error
    assert_plain(stats.errors)
    # one check of the tag page, not one reload per post still waiting: posts carried over a
    # reload are not new posts, so they do not restart the stall clock
    assert len(tag_loads) <= 2, tag_loads
