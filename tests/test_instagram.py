"""The instagram source, driving a real Chromium against the local Instagram-like site."""

from __future__ import annotations

import json
import logging
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from selfiescope.core.app import App
from selfiescope import hookimpl
from selfiescope.cli import app
from selfiescope.core import secrets
from selfiescope.core.browser import save_session
from selfiescope.core.manifest import Manifest
from selfiescope.core.privacy import Keyring
from selfiescope.core.settings import ScrapePipeline, Settings, settings_from_dict
from selfiescope.core.stats import RunStats
from selfiescope.pipelines.collecting.collect import collect
from selfiescope.plugins.instagram.session import LoginError, login
from selfiescope.plugins.instagram import PASSWORD_ENV, USERNAME_ENV, find_medias, post_from_media
from selfiescope.testing.site import MockInstagram, TagSpec


pytestmark = pytest.mark.browser

USERNAME, PASSWORD = "alice_q7", "pw-Zebra-9931!"
TAGS = {
    "alpha": TagSpec(11, "selfie", noface=1, small_face=1),
    "beta": TagSpec(10, "portrait", noface=1, small_face=1),
}


@pytest.fixture(scope="module")
def site():
    with MockInstagram(tags=TAGS, page_size=4, username=USERNAME, password=PASSWORD, consent_language="fr") as s:
        yield s


@pytest.fixture
def creds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(USERNAME_ENV, USERNAME)
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)


def settings_for(site: MockInstagram, root: Path, **options: Any) -> Settings:
    ig = {"base_url": site.base_url, "scroll_pause_s": 1.0, "max_idle_scrolls": 2, "requests_per_minute": 6000,
          "jitter_s": 0, "backoff_s": 0.05, **options}
    return settings_from_dict({
        "storage": {"root": str(root)},
        "browser": {"session_file": str(root / "session.json")},
        "engine": {"workers": 2},
        "plugins": {"instagram": ig},
    })


class Recorder:
    """A plugin that keeps every accepted event (and can act on the n-th)."""

    def __init__(self, on_nth: tuple[int, Any] | None = None) -> None:
        self.events: list[tuple[float, Any]] = []
        self.on_nth = on_nth

    @hookimpl
    def selfiescope_image_accepted(self, event: Any, run: Any) -> None:
        self.events.append((time.monotonic(), event))
        if self.on_nth and len(self.events) == self.on_nth[0]:
            self.on_nth[1](run)


async def scrape(settings: Settings, tags: list[str], limit: int | None = None,
                 plugins: list[Any] | None = None) -> RunStats:
    pipeline = ScrapePipeline(kind="scrape", source="instagram", hashtags=tags, label="x", limit=limit,
                              chain=["decode", "store"])
    return await collect(App.create(settings, plugins=plugins), "scrape", pipeline=pipeline)


def one_job_says_why(errors: list[str], *words: str) -> str:
    """The one job error that says why the source stopped (with ``words``); every other job's error
    starts with its own tag and points to that job instead of repeating the advice."""
    saying = [e for e in errors if all(w in e for w in words)]
    assert len(saying) == 1, errors
    job_of = {e: e.split(":", 1)[0].split(" ", 1)[1] for e in errors}  # "instagram alpha: ..." -> "alpha"
    for error in errors:
        if error is not saying[0]:
            assert error.startswith(f"instagram {job_of[error]}: #{job_of[error]}: stopped along with "
                                    f"#{job_of[saying[0]]}"), errors
    return saying[0]


def seed_session(site: MockInstagram, root: Path) -> None:
    """A saved session, as `selfiescope login` leaves it (tests not about logging in skip the form)."""
    cookie = {"name": "sessionid", "value": site.login_session(), "domain": "127.0.0.1", "path": "/",
              "expires": -1, "httpOnly": True, "secure": False, "sameSite": "Lax"}
    save_session(root / "session.json", {"cookies": [cookie], "origins": []})


def recorded(root: Path) -> list[tuple[str, str]]:
    m = Manifest.at_root(root)
    try:
        return [(r["job"], r["post_id"]) for r in m.query("SELECT job, post_id FROM images WHERE source='instagram'")]
    finally:
        m.close()


def expected(site: MockInstagram, *tags: str) -> list[tuple[str, str]]:
    return sorted((t, p.shortcode) for t in tags for p in site.posts(t))


def media_requests(site: MockInstagram, start: int) -> list[str]:
    return [p for m, p, s in site.requests[start:] if p.startswith("/media/") and s == 200]


# --- a whole run --------------------------------------------------------------------------------
async def test_logs_in_closes_popups_and_scrapes_two_tags_at_once(
    site: MockInstagram, tmp_path: Path, creds: None, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    start = len(site.requests)
    rec = Recorder()
    stats = await scrape(settings_for(site, tmp_path), ["alpha", "beta"], plugins=[rec])

    assert stats.status == "finished", stats.errors
    assert sorted(recorded(tmp_path)) == expected(site, "alpha", "beta")  # every post, exactly once
    assert stats.accepted == len(expected(site, "alpha", "beta"))
    # The largest candidate, never the 150 px thumbnail (page images are not even loaded).
    media = media_requests(site, start)
    assert media and all(p.endswith("_1080.jpg") for p in media)
    # Posts the page loaded as JSON carry its data; the first grid (HTML only) has the DOM's.
    truth = {p.shortcode: p for t in TAGS for p in site.posts(t)}
    by_code = {e.origin.post_id: e for _, e in rec.events}
    from_json = [c for t in TAGS for c in [p.shortcode for p in site.posts(t)][4:]]
    for code in from_json:  # beyond the first page: only reachable by scrolling past the pop-ups
        extra = by_code[code].origin.extra
        # Owners reach the chain only as their pseudonym; captions not at all (issue 12: privacy).
        assert extra["owner"] == Keyring(tmp_path).owner(truth[code].username)
        assert "caption" not in extra and truth[code].username not in str(extra)
        assert extra["pk"] == truth[code].id and extra["taken_at"] == truth[code].taken_at
    # Both hashtags were in flight at the same time.
    times = {t: [ts for ts, e in rec.events if e.origin.job == t] for t in TAGS}
    assert min(times["alpha"]) < max(times["beta"]) and min(times["beta"]) < max(times["alpha"])
    # One login for both jobs; French pop-ups closed with the least permissive answer.
    assert sum(1 for m, p, _ in site.requests[start:] if m == "POST" and p.startswith("/accounts/login")) == 1
    session_file = tmp_path / "session.json"
    assert session_file.stat().st_mode & 0o777 == 0o600
    cookies = {c["name"]: c["value"] for c in json.loads(session_file.read_text())["cookies"]}
    assert cookies.get("consent") == "essential" and cookies.get("sessionid")
    # Credentials appear nowhere: logs, output, manifest, session file.
    captured = capsys.readouterr()
    stored = b"".join(p.read_bytes() for p in tmp_path.rglob("*") if p.is_file() and "manifest" in p.name)
    for secret in (PASSWORD, USERNAME):
        assert secret not in caplog.text and secret not in captured.out + captured.err
        assert secret.encode() not in stored and secret not in session_file.read_text()


async def test_limit_then_resume_with_the_saved_session(
    site: MockInstagram, tmp_path: Path, creds: None, monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = settings_for(site, tmp_path)
    first = await scrape(settings, ["alpha"], limit=3)
    assert first.accepted == 3 and first.status == "finished"
    done_first = {code for _, code in recorded(tmp_path)}
    assert len(done_first) == 3

    monkeypatch.delenv(USERNAME_ENV, raising=False)  # taken into memory by the first run...
    monkeypatch.delenv(PASSWORD_ENV, raising=False)
    secrets.clear()  # ...and now forgotten: the saved session must be enough
    start = len(site.requests)
    second = await scrape(settings, ["alpha"])
    assert second.status == "finished", second.errors
    assert not any(m == "POST" for m, _, _ in site.requests[start:])
    assert sorted(recorded(tmp_path)) == expected(site, "alpha")  # the end of the feed reached
    truth = {p.id: p.shortcode for p in site.posts("alpha")}
    refetched = {truth[p.split("/")[-1].rsplit("_", 1)[0]] for p in media_requests(site, start)}
    assert refetched == {p.shortcode for p in site.posts("alpha")} - done_first  # only the new posts

    start = len(site.requests)
    third = await scrape(settings, ["alpha"])
    assert third.seen == 0 and third.status == "finished"
    assert media_requests(site, start) == []


async def test_429_and_5xx_are_waited_out_then_succeed(
    site: MockInstagram, tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    seed_session(site, tmp_path)
    site.rate_limit_every, site.retry_after_s, site.image_error_every = 2, 1, 4
    start = len(site.requests)
    try:
        stats = await scrape(settings_for(site, tmp_path), ["beta"])
    finally:
        site.rate_limit_every, site.image_error_every = 0, 0
    statuses = [s for _, _, s in site.requests[start:]]
    assert 429 in statuses and 500 in statuses
    assert stats.status == "finished", stats.errors
    assert sorted(recorded(tmp_path)) == expected(site, "beta")
    assert "HTTP 429; waiting 1 s" in caplog.text


async def test_login_wall_without_credentials_stops_with_a_clear_message(site: MockInstagram, tmp_path: Path) -> None:
    start = len(site.requests)
    stats = await scrape(settings_for(site, tmp_path), ["alpha", "beta"])
    assert stats.status == "finished_with_errors" and stats.seen == 0
    assert len(stats.errors) == 2
    one_job_says_why(stats.errors, "login wall", USERNAME_ENV, "selfiescope login")
    tag_hits = [p for _, p, _ in site.requests[start:] if p.startswith("/explore/tags/")]
    assert len(tag_hits) == 2  # one look per hashtag, no hammering
    assert not media_requests(site, start)


async def test_challenge_stops_the_source(site: MockInstagram, tmp_path: Path) -> None:
    seed_session(site, tmp_path)
    site.trigger_challenge = True
    try:
        stats = await scrape(settings_for(site, tmp_path), ["alpha"])
    finally:
        site.trigger_challenge = False
    assert stats.status == "finished_with_errors" and stats.seen == 0
    assert "challenge" in stats.errors[0] and "selfiescope login" in stats.errors[0]


async def test_browser_killed_mid_run_is_relaunched_and_nothing_lost_or_duplicated(
    site: MockInstagram, tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    seed_session(site, tmp_path)
    killed: list[int] = []

    def kill_browser(run: Any) -> None:
        pid = run.services["browser"].browser_pid()
        os.kill(pid, signal.SIGKILL)
        killed.append(pid)

    rec = Recorder(on_nth=(5, kill_browser))
    stats = await scrape(settings_for(site, tmp_path), ["alpha", "beta"], plugins=[rec])
    assert killed
    assert stats.status == "finished", stats.errors
    assert "resuming on a new browser" in caplog.text
    assert sorted(recorded(tmp_path)) == expected(site, "alpha", "beta")
    assert stats.accepted == stats.seen == len(expected(site, "alpha", "beta"))  # nothing twice
    assert len(list((tmp_path / "x").iterdir())) == stats.accepted


# --- login --------------------------------------------------------------------------------------
async def test_login_passes_two_factor_and_saves_a_private_session(
    site: MockInstagram, tmp_path: Path, creds: None, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    settings = settings_for(site, tmp_path)
    asked: list[str] = []

    def ask(prompt: str, secret: bool) -> str:
        asked.append(prompt)
        return "424242"

    site.two_factor_code = "424242"
    try:
        path = await login(settings, headless=True, ask=ask)
        with pytest.raises(LoginError, match="security code was not accepted"):
            await login(settings, headless=True, ask=lambda p, s: "000000")
    finally:
        site.two_factor_code = None
    assert asked == ["Security code"]
    assert path == tmp_path / "session.json" and path.stat().st_mode & 0o777 == 0o600
    state = json.loads(path.read_text())
    assert any(c["name"] == "sessionid" and c["value"] for c in state["cookies"])
    assert PASSWORD not in path.read_text() and PASSWORD not in caplog.text


def test_cli_login_and_scrape(site: MockInstagram, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings_file = tmp_path / "settings.toml"
    settings_file.write_text(
        f'[storage]\nroot = "{tmp_path / "data"}"\n[browser]\nsession_file = "{tmp_path / "s.json"}"\n'
        "[plugins.instagram]\nscroll_pause_s = 1.0\nmax_idle_scrolls = 2\nrequests_per_minute = 6000\njitter_s = 0\n"
    )
    runner = CliRunner()
    monkeypatch.setenv(USERNAME_ENV, USERNAME)
    monkeypatch.setenv(PASSWORD_ENV, "wrong-" + PASSWORD)
    bad = runner.invoke(app, ["login", "--headless", "--base-url", site.base_url, "-s", str(settings_file)])
    assert bad.exit_code == 1 and "rejected the username or password" in bad.output
    assert PASSWORD not in bad.output and not (tmp_path / "s.json").exists()

    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)
    site.consent_language = "de"
    try:
        ok = runner.invoke(app, ["login", "--headless", "--base-url", site.base_url, "-s", str(settings_file), "--json"])
    finally:
        site.consent_language = "fr"
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.stdout)["session_file"] == str(tmp_path / "s.json")
    cookies = {c["name"]: c["value"] for c in json.loads((tmp_path / "s.json").read_text())["cookies"]}
    assert cookies["consent"] == "essential"  # "Optionale Cookies ablehnen" pressed

    assert PASSWORD_ENV not in os.environ  # taken into memory: Chromium and the driver never inherit it
    secrets.clear()  # and now gone: the saved session alone must do
    result = runner.invoke(app, ["scrape", "#alpha", "beta", "--label", "selfie", "--limit", "2", "--chain",
                                 "decode,store", "--base-url", site.base_url, "-s", str(settings_file), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["accepted"] == 4 and data["per_job"] == {"alpha": {"accepted": 2}, "beta": {"accepted": 2}}


def test_json_media_parsing_takes_the_largest_candidate() -> None:
    payload = {"sections": [{"layout_content": {"medias": [{"media": {
        "pk": "42", "id": "42_7", "code": "AbC", "taken_at": 5, "caption": None, "user": {"username": "u"},
        "original_width": 1080, "original_height": 1350,
        "image_versions2": {"candidates": [{"url": "s", "width": 150, "height": 150},
                                           {"url": "L", "width": 1080, "height": 1350}]},
    }}]}}]}
    [media] = find_medias(payload)
    post = post_from_media(media)
    assert post is not None and post.image_url == "L" and post.shortcode == "AbC"
    assert post.extra == {"pk": "42", "caption": None, "owner": "u", "taken_at": 5, "width": 1080, "height": 1350}
