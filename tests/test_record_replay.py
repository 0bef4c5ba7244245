"""Record one session against the local site as a HAR, then replay it with the site gone."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from manifest_helpers import manifest_query

from selfiescope.core.app import App
from selfiescope.core import har, secrets
from selfiescope.core.browser import save_session
from selfiescope.core.manifest import Manifest
from selfiescope.core.settings import ScrapePipeline, Settings, settings_from_dict
from selfiescope.pipelines.collecting.collect import collect
from selfiescope.pipelines.collecting.record import record, replay_settings
from selfiescope.plugins.instagram import PASSWORD_ENV, USERNAME_ENV
from selfiescope.testing.site import MockInstagram, TagSpec

USERNAME, PASSWORD = "rec_user_77", "Pw-record-Kestrel-4417"


def settings_for(root: Path, **ig: Any) -> Settings:
    options = {"scroll_pause_s": 1.0, "max_idle_scrolls": 2, "requests_per_minute": 6000, "jitter_s": 0,
               "backoff_s": 0.05, **ig}
    return settings_from_dict({
        "storage": {"root": str(root / "data")},
        "browser": {"session_file": str(root / "session.json"), "timeout_s": 15},
        "engine": {"workers": 2},
        "plugins": {"instagram": options},
    })


def stored(root: Path) -> list[str]:
    m = Manifest.at_root(root / "data")
    try:
        return sorted(r["post_id"] for r in m.query("SELECT post_id FROM images WHERE source='instagram'"))
    finally:
        m.close()


# --- scrubbing, without a browser -----------------------------------------------------------------
def _entry(method: str, url: str, req_headers: dict[str, str], status: int, resp_headers: dict[str, str],
           body: str = "", post: dict[str, Any] | None = None, mime: str = "text/html") -> dict[str, Any]:
    e: dict[str, Any] = {
        "startedDateTime": "2026-01-01T00:00:00.000Z",
        "request": {"method": method, "url": url, "headers": [{"name": k, "value": v} for k, v in req_headers.items()],
                    "cookies": [], "queryString": []},
        "response": {"status": status, "headers": [{"name": k, "value": v} for k, v in resp_headers.items()],
                     "cookies": [], "content": {"mimeType": mime, "text": body, "size": len(body)}},
    }
    if post is not None:
        e["request"]["postData"] = post
    return e


def test_scrub_removes_cookies_auth_headers_tokens_and_credentials() -> None:
    sid, csrf, claim = "a1b2c3d4e5f6sessionvalue", "CsRfToKeN0123456789", "hmac.AR0claimvalue"
    entries = [
        _entry("GET", "https://x.test/", {"User-Agent": "ua"}, 200,
               {"Set-Cookie": f"csrftoken={csrf}; Path=/; Secure"},
               body=f'<script>{{"config":{{"csrf_token":"{csrf}","viewer":null}}}}</script>'),
        _entry("POST", "https://x.test/api/v1/web/accounts/login/ajax/",
               {"X-CSRFToken": csrf, "Cookie": f"csrftoken={csrf}"}, 200,
               {"Set-Cookie": f"sessionid={sid}; Path=/; HttpOnly", "x-ig-set-www-claim": claim},
               body='{"authenticated": true, "status": "ok"}', mime="application/json",
               post={"mimeType": "application/x-www-form-urlencoded",
                     "text": f"enc_password=%23PWD_INSTAGRAM_BROWSER%3A0%3A1%3A{PASSWORD}&username={USERNAME}",
                     "params": [{"name": "enc_password", "value": f"#PWD_INSTAGRAM_BROWSER:0:1:{PASSWORD}"},
                                {"name": "username", "value": USERNAME}]}),
        _entry("GET", f"https://x.test/api/v1/tags/a/sections/?max_id=QVFD&csrf_token={csrf}",
               {"Cookie": f"sessionid={sid}; csrftoken={csrf}", "Authorization": "Bearer IGT:2:secretbearer",
                "X-IG-App-ID": "936619743392459", "X-IG-WWW-Claim": claim}, 200, {},
               body=json.dumps({"sections": [], "viewer": {"sessionid": sid}}), mime="application/json"),
    ]
    clean, n = har.scrub({"log": {"entries": entries}}, extra_secrets=[PASSWORD, USERNAME])
    text = json.dumps(clean)
    for secret in (sid, csrf, claim, PASSWORD, USERNAME, "secretbearer"):
        assert secret not in text, secret
    assert n >= 8
    # What replay and readers need survives: URLs (minus tokens), the app id, statuses, bodies.
    req = clean["log"]["entries"][2]["request"]
    assert req["url"].startswith("https://x.test/api/v1/tags/a/sections/?max_id=QVFD")
    assert {"name": "X-IG-App-ID", "value": "936619743392459"} in req["headers"]
    assert json.loads(clean["log"]["entries"][1]["response"]["content"]["text"])["authenticated"] is True


def test_for_replay_keeps_the_success_over_a_login_wall_or_a_429() -> None:
    url = "https://x.test/explore/tags/a/"
    entries = [
        _entry("GET", url, {}, 302, {"Location": "/accounts/login/?next=/explore/tags/a/"}),
        _entry("GET", "https://x.test/api/v1/tags/a/sections/", {}, 429, {}),
        _entry("GET", url, {}, 200, {}, body="ok"),
        _entry("GET", "https://x.test/api/v1/tags/a/sections/", {}, 200, {}, body="{}"),
        _entry("GET", "https://x.test/media/1.jpg", {}, -1, {}),  # aborted: never answered
    ]
    kept = har.for_replay(entries)
    assert [(e["request"]["url"], e["response"]["status"]) for e in kept] == [
        (url, 200), ("https://x.test/api/v1/tags/a/sections/", 200)]


def test_replay_of_a_missing_or_broken_file_is_a_usage_error(tmp_path: Path) -> None:
    (tmp_path / "bad.har").write_text("{not json")
    with pytest.raises(har.HarError, match="not a HAR"):
        replay_settings(App.create(settings_for(tmp_path)), tmp_path / "bad.har")
    with pytest.raises(har.HarError, match="no such file"):
        replay_settings(App.create(settings_for(tmp_path)), tmp_path / "missing.har")


def test_record_and_replay_ask_the_source_class_not_its_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What a recording scrubs and notes comes from the source's capabilities: its
    ``credential_env`` values, its ``url_option`` (configured, else its default)."""
    from selfiescope.pipelines.collecting.record import _base_url, _secrets

    secrets.clear()
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)
    monkeypatch.setenv(USERNAME_ENV, USERNAME)
    app = App.create(settings_for(tmp_path, base_url="http://127.0.0.1:9/"))
    assert {USERNAME, PASSWORD} <= _secrets(app, "instagram")
    assert not {USERNAME, PASSWORD} & _secrets(app, "gallery")  # the gallery source names no credentials
    assert _base_url(app, "instagram", None) == "http://127.0.0.1:9"
    assert _base_url(App.create(settings_from_dict({})), "instagram", None) == "https://www.instagram.com"
    gallery = settings_from_dict({"plugins": {"gallery": {"url_template": "http://127.0.0.1:9/t/{tag}/"}}})
    assert _base_url(App.create(gallery), "gallery", None) == "http://127.0.0.1:9/t/{tag}"
    assert _base_url(app, "no-such-source", None) is None
    secrets.clear()


# --- record, stop the site, replay -------------------------------------------------------------


@pytest.mark.browser
@pytest.mark.slow
@pytest.mark.browser
async def test_record_then_replay_offline_stores_the_same_posts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(USERNAME_ENV, USERNAME)
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)
    site = MockInstagram(tags={"alpha": TagSpec(9, "selfie", noface=0, small_face=0)}, page_size=4,
                         username=USERNAME, password=PASSWORD, rate_limit_every=3, retry_after_s=0.5,
                         consent_language="fr")
    base_url = site.start()
    har_file = tmp_path / "session.har"
    rec_root = tmp_path / "rec"
    try:
        recording = await record(App.create(settings_for(rec_root)), ["alpha"], har_file, base_url=base_url, limit=None)
        cookies = json.loads((rec_root / "session.json").read_text())["cookies"]
    finally:
        site.stop()
    truth = sorted(p.shortcode for p in site.posts("alpha"))
    assert recording.stats.status == "finished", recording.stats.errors
    assert sorted(recording.posts) == truth  # the whole feed, behind a login, pop-ups and 429s
    assert har_file.stat().st_mode & 0o777 == 0o600
    assert not har.parts_dir(har_file).exists()  # unscrubbed parts are not left behind
    # No secret anywhere in the file: password, username, session cookie, CSRF-like cookie values.
    raw = har_file.read_text()
    session_id = next(c["value"] for c in cookies if c["name"] == "sessionid")
    for secret in (PASSWORD, USERNAME, session_id):
        assert secret not in raw
    for cookie in cookies:  # csrftoken and any other session cookie the site sets, too
        if cookie["name"] in ("sessionid", "csrftoken", "ds_user_id", "mid", "ig_did") or any(
                ch.isdigit() for ch in cookie["value"]) and len(cookie["value"]) >= 8:
            assert cookie["value"] not in raw, cookie["name"]
    assert "Set-Cookie" in raw or "set-cookie" in raw.lower()  # the header is kept, its value is not
    # Offline: the site is gone, the user's saved session is gone; the same posts come back.
    monkeypatch.delenv(USERNAME_ENV, raising=False)  # taken into memory by the recording...
    monkeypatch.delenv(PASSWORD_ENV, raising=False)
    secrets.clear()  # ...and now forgotten
    play_root = tmp_path / "play"
    app, recorded_base = replay_settings(App.create(settings_for(play_root)), har_file)
    assert recorded_base == base_url
    pipeline = ScrapePipeline(kind="scrape", source="instagram", hashtags=["alpha"], label="x",
                              chain=["decode", "store"], options={"instagram": {"base_url": recorded_base}})
    stats = await collect(app, "replay", pipeline=pipeline)
    assert stats.status == "finished", stats.errors
    assert stored(play_root) == truth


@pytest.mark.browser
@pytest.mark.browser
async def test_replay_aborts_what_the_har_does_not_hold(tmp_path: Path) -> None:
    """A tag that was never recorded: every request is aborted, nothing reaches a network."""
    empty = {"log": {"version": "1.2", "creator": {"name": "t", "version": "1"}, "entries": [],
                     "_selfiescope": {"base_url": "http://127.0.0.1:9"}}}
    har.save(tmp_path / "empty.har", empty)
    app, base = replay_settings(App.create(settings_for(tmp_path, max_restarts=0)), tmp_path / "empty.har")
    save_session(tmp_path / "session.json", {"cookies": [], "origins": []})
    pipeline = ScrapePipeline(kind="scrape", source="instagram", hashtags=["nope"], label="x",
                              chain=["decode", "store"], options={"instagram": {"base_url": base}})
    stats = await collect(app, "replay", pipeline=pipeline)
    assert stats.status == "finished_with_errors" and stats.seen == 0
    assert any("not in the recording" in e for e in stats.errors), stats.errors
    assert not any("net::" in e or "Call log" in e for e in stats.errors), stats.errors  # the browser's words stay in the log


@pytest.mark.browser
@pytest.mark.slow
@pytest.mark.browser
def test_cli_record_then_scrape_replay(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from selfiescope.cli import app

    settings = tmp_path / "settings.toml"
    settings.write_text(
        f'[storage]\nroot = "{tmp_path / "data"}"\n[browser]\nsession_file = "{tmp_path / "session.json"}"\n'
        'timeout_s = 15\n[plugins.instagram]\nscroll_pause_s = 1.0\nmax_idle_scrolls = 2\n'
        'requests_per_minute = 6000\njitter_s = 0\n'
    )
    monkeypatch.setenv(USERNAME_ENV, USERNAME)
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)
    runner = CliRunner()
    with MockInstagram(tags={"beta": TagSpec(6, "portrait", noface=0, small_face=0)}, page_size=4,
                       username=USERNAME, password=PASSWORD) as site:
        rec = runner.invoke(app, ["record", "beta", "--har", str(tmp_path / "beta.har"), "--base-url", site.base_url,
                                  "--settings", str(settings), "--json"])
    assert rec.exit_code == 0, rec.output
    assert json.loads(rec.stdout)["posts"] == 6
    assert not (tmp_path / "data").exists()  # recording leaves the dataset alone
    monkeypatch.delenv(PASSWORD_ENV, raising=False)
    secrets.clear()
    play = runner.invoke(app, ["scrape", "beta", "--label", "portrait", "--replay", str(tmp_path / "beta.har"),
                               "--chain", "decode,store", "--settings", str(settings), "--json"])
    assert play.exit_code == 0, play.output
    assert json.loads(play.stdout)["accepted"] == 6
    assert sorted(stored_at(tmp_path / "data")) == sorted(
        p.shortcode for p in site.posts("beta"))
    bad = runner.invoke(app, ["scrape", "beta", "--label", "x", "--replay", str(tmp_path / "nope.har"),
                              "--settings", str(settings)])
    assert bad.exit_code == 2 and "no such" in " ".join(bad.output.split())


def stored_at(root: Path) -> list[str]:
    return [r["post_id"] for r in manifest_query(root, "SELECT post_id FROM images WHERE source='instagram'")]


def test_record_never_overwrites_an_existing_file(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from selfiescope.cli import app

    mine = tmp_path / "mine.har"
    mine.write_text("my notes")
    settings = tmp_path / "settings.toml"
    settings.write_text("")
    result = CliRunner().invoke(app, ["record", "x", "--har", str(mine), "--base-url", "http://127.0.0.1:9",
                                      "--settings", str(settings)])
    assert result.exit_code == 2 and "exists" in result.output
    assert mine.read_text() == "my notes"


@pytest.mark.browser
@pytest.mark.browser
def test_cli_record_shows_the_job_state_lines_a_scrape_shows(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from selfiescope.cli import app

    settings = tmp_path / "settings.toml"
    settings.write_text(
        f'[browser]\nsession_file = "{tmp_path / "session.json"}"\ntimeout_s = 15\n'
        '[plugins.instagram]\nscroll_pause_s = 0.6\nmax_idle_scrolls = 2\nrequests_per_minute = 6000\njitter_s = 0\n'
    )
    with MockInstagram(tags={"beta": TagSpec(5, "portrait", noface=0, small_face=0)}, page_size=4,
                       require_login=False) as site:
        result = CliRunner().invoke(app, ["record", "beta", "--har", str(tmp_path / "beta.har"),
                                          "--base-url", site.base_url, "--settings", str(settings)])
    assert result.exit_code == 0, result.output
    assert "beta: opening the tag page" in result.output  # plain lines: the output is not a terminal
    assert "beta: done" in result.output
