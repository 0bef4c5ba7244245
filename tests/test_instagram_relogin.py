"""A session that ends mid-scrape, expired image URLs on client-rendered post pages, and one login
attempt per account: each against a real Chromium and the local site's chaos knobs."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import Any

import pytest

from selfiescope.plugins.instagram import PASSWORD_ENV, USERNAME_ENV
from selfiescope.testing.chaos import Chaos
from selfiescope.testing.site import MockInstagram, TagSpec
from test_instagram import expected, one_job_says_why, recorded, scrape, seed_session
from test_instagram_chaos import settings_for


pytestmark = pytest.mark.browser

USERNAME, PASSWORD = "mira_t4", "pw-Lynx-7719%"
TAGS = {"kappa": TagSpec(9, "selfie", noface=1, small_face=1), "lambda": TagSpec(9, "portrait", noface=1, small_face=1)}
BOUND_S = 150
RAW_BROWSER_TEXT = ("Execution context", "Locator.", "Page.", "Call log", "net::", "Timeout ", "Target page")


def site_with(**knobs: Any) -> MockInstagram:
    return MockInstagram(tags=TAGS, page_size=4, username=USERNAME, password=PASSWORD, chaos=Chaos(**knobs))


@pytest.fixture
def creds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(USERNAME_ENV, USERNAME)
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)


async def bounded(coro: Any) -> Any:
    return await asyncio.wait_for(coro, BOUND_S)


# --- a session that ends mid-scrape ---------------------------------------------------------
async def test_a_session_that_ends_mid_feed_is_logged_in_again_once_and_every_job_resumes(
    tmp_path: Path, creds: None, caplog: pytest.LogCaptureFixture,
) -> None:
    # The saved session ends after 3 feed calls (of the 4 the two tags need): the page's script
    # then goes to the login page, as the web app does.
    caplog.set_level(logging.INFO, logger="selfiescope")
    with site_with(session_expires_after_feeds=3) as site:
        seed_session(site, tmp_path)
        stats = await bounded(scrape(settings_for(site, tmp_path), list(TAGS)))
        assert site.sessions_ended >= 1  # the knob bit
        assert stats.status == "finished", stats.errors
        assert sorted(recorded(tmp_path)) == expected(site, *TAGS)  # every post exactly once
        # one login per ended session, however many jobs noticed it
        assert site.login_attempts == site.sessions_ended
        assert "logged in again" in caplog.text


@pytest.mark.parametrize("media_needs_session", [False, True], ids=["pages", "downloads-too"])
async def test_a_session_that_times_out_is_logged_in_again(tmp_path: Path, creds: None, media_needs_session: bool) -> None:
    # With media_needs_session a download may be the first to meet the ended session (401).
    with site_with(session_ttl_s=4.0, slow_first_byte_ms=300, seed=5, media_needs_session=media_needs_session) as site:
        seed_session(site, tmp_path)
        stats = await bounded(scrape(settings_for(site, tmp_path), list(TAGS)))
        assert site.sessions_ended >= 1
        assert stats.status == "finished", stats.errors
        assert sorted(recorded(tmp_path)) == expected(site, *TAGS)
        assert site.login_attempts == site.sessions_ended
        # Whether a download or the feed meets the ended session first depends on timing on a busy
        # machine; either way the run above logged in once per ended session and stored every post.


async def test_without_credentials_a_lost_session_stops_with_one_clear_message_and_keeps_what_was_stored(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="selfiescope.progress")
    with site_with(session_expires_after_feeds=2) as site:
        seed_session(site, tmp_path)
        stats = await bounded(scrape(settings_for(site, tmp_path), list(TAGS)))
        assert site.sessions_ended == 1 and site.login_attempts == 0
        assert stats.status == "finished_with_errors"
        advice = one_job_says_why(stats.errors, "selfiescope login", "session ended", "nothing stored is lost")
        assert " ".join(stats.errors).count("selfiescope login") == 1, stats.errors  # said once
        assert "waiting for the login" not in caplog.text  # no login can come: the state never promises one
        for error in stats.errors:
            assert not any(raw in error for raw in RAW_BROWSER_TEXT), error
        assert advice
        stored = recorded(tmp_path)
        assert stored and len(stored) == len(set(stored))
        files = list((tmp_path / "x").iterdir())
        assert len(files) == len(stored)  # what was stored stays
        # the rerun with a fresh session resumes: every post, each once
        seed_session(site, tmp_path)
        site.chaos.session_expires_after_feeds = None
        again = await bounded(scrape(settings_for(site, tmp_path), list(TAGS)))
        assert again.status == "finished", again.errors
        assert sorted(recorded(tmp_path)) == expected(site, *TAGS)


# --- one attempt per account ----------------------------------------------------------------
@pytest.mark.parametrize("knobs", [{"js_login": True}, {"login_error_dialog": True}], ids=["js-form", "error-pop-up"])
async def test_a_rejected_password_is_submitted_once_for_all_jobs_and_named_with_the_page_s_words(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, knobs: dict[str, Any],
) -> None:
    monkeypatch.setenv(USERNAME_ENV, USERNAME)
    monkeypatch.setenv(PASSWORD_ENV, "wrong-" + PASSWORD)
    with site_with(**knobs) as site:
        stats = await bounded(scrape(settings_for(site, tmp_path), list(TAGS)))
        assert site.login_attempts == 1  # the site saw one attempt, not one per job
        assert stats.status == "finished_with_errors" and stats.seen == 0
        for error in [one_job_says_why(stats.errors, "rejected the username or password", "password was incorrect")]:
            assert "not trying again" in error.lower() and PASSWORD not in error
        assert "pop-up with no button" not in caplog.text


async def test_a_challenge_after_login_is_not_answered_with_another_login(tmp_path: Path, creds: None) -> None:
    with site_with() as site:
        site.trigger_challenge = True
        stats = await bounded(scrape(settings_for(site, tmp_path), list(TAGS)))
        assert stats.status == "finished_with_errors" and stats.seen == 0
        one_job_says_why(stats.errors, "challenge")
        assert site.login_attempts == 1


# --- fresh image URLs from a client-rendered post page ----------------------------------------
async def test_expired_urls_are_refreshed_from_the_post_data_of_a_client_rendered_page(tmp_path: Path) -> None:
    # The post page's HTML has no og:image and no <img>: its script fetches the post's JSON.
    with site_with(client_post_page=True, url_ttl_s=60, stale_url_share=0.4, seed=2) as site:
        seed_session(site, tmp_path)
        stats = await bounded(scrape(settings_for(site, tmp_path), list(TAGS)))
        assert [p for _, p, s in site.requests if p.startswith("/media/") and s == 403]  # the knob bit
        assert any(p.startswith("/api/v1/media/") for _, p, _ in site.requests)  # read as the page gets it
        assert stats.status == "finished", stats.errors
        assert sorted(recorded(tmp_path)) == expected(site, *TAGS)


async def test_urls_that_expire_soon_after_listing_are_refreshed_in_the_same_run(tmp_path: Path) -> None:
    # Every URL a tag page or feed lists expires 1.5 s later; first bytes are slow, so many
    # downloads come after their URL expired.
    with site_with(client_post_page=True, url_ttl_s=1.5, slow_first_byte_ms=900, seed=4) as site:
        seed_session(site, tmp_path)
        stats = await bounded(scrape(settings_for(site, tmp_path), list(TAGS)))
        assert stats.status == "finished", stats.errors
        assert sorted(recorded(tmp_path)) == expected(site, *TAGS)


async def test_a_session_that_cannot_be_saved_does_not_stop_the_run(
    tmp_path: Path, creds: None, caplog: pytest.LogCaptureFixture,
) -> None:
    (tmp_path / "not-a-folder").write_text("a file where the session's folder should be")
    with site_with() as site:
        settings = settings_for(site, tmp_path)
        settings.browser.session_file = str(tmp_path / "not-a-folder" / "session.json")
        caplog.set_level(logging.DEBUG, logger="selfiescope")
        stats = await bounded(scrape(settings, ["kappa"]))
        assert stats.status == "finished", (stats.errors, [r.message for r in caplog.records if "browser error" in r.message])
        assert sorted(recorded(tmp_path)) == expected(site, "kappa")
        assert "could not be saved" in caplog.text and site.login_attempts == 1
