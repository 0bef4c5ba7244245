"""``login --from-browser``: a session taken from a real Chromium profile, and from a Firefox cookie store."""

from __future__ import annotations

import asyncio
import builtins
import json
import sqlite3
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from selfiescope.cli import app
from selfiescope.core import secrets
from selfiescope.core.browser_lookup import find_chromium
from selfiescope.plugins.instagram import PASSWORD_ENV, USERNAME_ENV
from selfiescope.plugins.instagram.browser_import import applies_to
from selfiescope.plugins.instagram.login import submit_login
from selfiescope.testing.site import MockInstagram, TagSpec

pytestmark = pytest.mark.browser

pytest.importorskip("browser_cookie3")

TAG = "epsilon"
USERNAME, PASSWORD = "carol_b4", "Br0wser-Imp0rt!"


@pytest.fixture(scope="module")
def site():
    with MockInstagram(tags={TAG: TagSpec(4, "selfie", noface=0, small_face=0)}, page_size=4,
                       username=USERNAME, password=PASSWORD) as s:
        yield s


def settings_file(site: MockInstagram, tmp_path: Path) -> Path:
    path = tmp_path / "settings.toml"
    path.write_text(
        f'[storage]\nroot = "{tmp_path / "data"}"\n[browser]\nsession_file = "{tmp_path / "cfg" / "session.json"}"\n'
        f'[plugins.instagram]\nbase_url = "{site.base_url}"\nscroll_pause_s = 1.0\nmax_idle_scrolls = 2\n'
        "requests_per_minute = 6000\njitter_s = 0\n"
    )
    return path


def logins(site: MockInstagram, start: int = 0) -> int:
    return sum(1 for m, p, _ in site.requests[start:] if m == "POST" and p.startswith("/accounts/login"))


async def chromium_profile_logged_in(site: MockInstagram, profile: Path) -> None:
    """A person's Chromium profile: they logged in to the site in it, then closed the browser."""
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        context = await pw.chromium.launch_persistent_context(
            str(profile), executable_path=find_chromium("auto"), headless=True, args=["--no-sandbox"])
        try:
            page = context.pages[0] if context.pages else await context.new_page()
            assert await submit_login(page, site.base_url, USERNAME, PASSWORD, ["Not now", "Decline optional cookies",
                                                                               "Only allow essential cookies"]) == "ok"
        finally:
            await context.close()


def scrape(site: MockInstagram, settings: Path) -> dict:
    result = CliRunner().invoke(app, ["scrape", TAG, "--label", "selfie", "--chain", "decode,store", "-s",
                                      str(settings), "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_session_from_a_real_chromium_profile_scrapes_with_no_credentials(
    site: MockInstagram, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in (USERNAME_ENV, PASSWORD_ENV):
        monkeypatch.delenv(name, raising=False)
    secrets.clear()
    profile = tmp_path / "chromium-profile"
    start = len(site.requests)
    asyncio.run(chromium_profile_logged_in(site, profile))
    settings = settings_file(site, tmp_path)

    result = CliRunner().invoke(app, ["login", "--from-browser", "chromium", "--profile", str(profile),
                                      "-s", str(settings)])
    assert result.exit_code == 0, result.output
    session = tmp_path / "cfg" / "session.json"
    assert session.stat().st_mode & 0o777 == 0o600
    sid = {c["name"]: c["value"] for c in json.loads(session.read_text())["cookies"]}["sessionid"]
    assert sid and sid not in result.output  # the secret is saved, never shown

    data = scrape(site, settings)  # no credentials anywhere: the imported session alone
    assert data["accepted"] == len(site.posts(TAG))
    assert logins(site, start) == 1  # the one in the person's own browser; none by the scrape


def firefox_store(path: Path, rows: list[tuple[str, str, str]], expires_in: float = 86400) -> None:
    """A Firefox cookies.sqlite (its moz_cookies table) holding ``(host, name, value)`` rows."""
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE moz_cookies (id INTEGER PRIMARY KEY, originAttributes TEXT NOT NULL DEFAULT '', "
               "name TEXT, value TEXT, host TEXT, path TEXT, expiry INTEGER, lastAccessed INTEGER, "
               "creationTime INTEGER, isSecure INTEGER, isHttpOnly INTEGER, inBrowserElement INTEGER DEFAULT 0, "
               "sameSite INTEGER DEFAULT 0, rawSameSite INTEGER DEFAULT 0, schemeMap INTEGER DEFAULT 0)")
    now = int(time.time())
    for host, name, value in rows:
        db.execute("INSERT INTO moz_cookies (name, value, host, path, expiry, lastAccessed, creationTime, isSecure, "
                   "isHttpOnly) VALUES (?,?,?,?,?,?,?,0,1)", (name, value, host, "/", int(now + expires_in), now, now))
    db.commit()
    db.close()


def test_session_from_a_firefox_profile_keeps_only_the_sites_cookies(
    site: MockInstagram, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in (USERNAME_ENV, PASSWORD_ENV):
        monkeypatch.delenv(name, raising=False)
    secrets.clear()
    profile = tmp_path / "ff"
    profile.mkdir()
    sid = site.login_session()
    firefox_store(profile / "cookies.sqlite", [("127.0.0.1", "sessionid", sid), ("127.0.0.1", "csrftoken", "c1"),
                                               (".bank.example", "sessionid", "not-yours-to-take"),
                                               ("127.0.0.10", "other", "x")])
    settings = settings_file(site, tmp_path)
    start = len(site.requests)
    result = CliRunner().invoke(app, ["login", "--from-browser", "firefox", "--profile", str(profile), "-s",
                                      str(settings), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["cookies"] == 2
    saved = json.loads((tmp_path / "cfg" / "session.json").read_text())["cookies"]
    assert sorted((c["domain"], c["name"]) for c in saved) == [("127.0.0.1", "csrftoken"), ("127.0.0.1", "sessionid")]
    assert sid not in result.output
    assert scrape(site, settings)["accepted"] == len(site.posts(TAG)) and logins(site, start) == 0


def text(result) -> str:
    return " ".join(result.output.split())


def test_from_browser_failures_are_one_clear_line(site: MockInstagram, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    settings = settings_file(site, tmp_path)
    runner = CliRunner()
    base = ["login", "-s", str(settings)]
    session = tmp_path / "cfg" / "session.json"

    r = runner.invoke(app, [*base, "--from-browser", "opera"])
    assert r.exit_code == 2 and "chrome, chromium, firefox" in r.output
    r = runner.invoke(app, [*base, "--profile", str(tmp_path)])
    assert r.exit_code == 2 and "--from-browser" in r.output
    r = runner.invoke(app, [*base, "--from-browser", "firefox", "--profile", str(tmp_path / "nope")])
    assert r.exit_code == 2 and "no such file or folder" in text(r)
    r = runner.invoke(app, [*base, "--from-browser", "firefox", "--profile", str(tmp_path)])
    assert r.exit_code == 2 and "cookies.sqlite" in text(r)

    profile = tmp_path / "ff"
    profile.mkdir()
    firefox_store(profile / "cookies.sqlite", [("127.0.0.1", "csrftoken", "c1")])  # visited, never logged in
    r = runner.invoke(app, [*base, "--from-browser", "firefox", "--profile", str(profile)])
    assert r.exit_code == 1 and "no logged-in session for 127.0.0.1" in text(r) and not session.exists()

    (profile / "cookies.sqlite").unlink()
    firefox_store(profile / "cookies.sqlite", [("127.0.0.1", "sessionid", "old")], expires_in=-3600)  # expired
    r = runner.invoke(app, [*base, "--from-browser", "firefox", "--profile", str(profile)])
    assert r.exit_code == 1 and "no logged-in session for 127.0.0.1" in text(r) and not session.exists()

    # a --profile that is no cookie store of that browser is bad usage, told in one line naming --profile
    (profile / "cookies.sqlite").unlink()
    firefox_store(profile / "cookies.sqlite", [("127.0.0.1", "sessionid", "s1")])
    r = runner.invoke(app, [*base, "--from-browser", "chrome", "--profile", str(profile / "cookies.sqlite")])
    assert r.exit_code == 2 and "--profile" in text(r) and "cookie table" in text(r) and not session.exists()
    not_a_store = tmp_path / "passwd"
    not_a_store.write_text("root:x:0:0:root:/root:/bin/bash\n")
    for browser in ("chrome", "firefox"):
        r = runner.invoke(app, [*base, "--from-browser", browser, "--profile", str(not_a_store)])
        assert r.exit_code == 2 and text(r).count("--profile") == 1 and "not an SQLite database" in text(r)
        assert "DatabaseError" not in r.output and "Traceback" not in r.output
    r = runner.invoke(app, [*base, "--from-browser", "firefox", "--profile", "/dev/null"])
    assert r.exit_code == 2 and "not a profile folder or a cookie file" in text(r)
    (profile / "cookies.sqlite").write_bytes(b"not a database")
    r = runner.invoke(app, [*base, "--from-browser", "firefox", "--profile", str(profile)])
    assert r.exit_code == 2 and "--profile" in text(r) and "Traceback" not in r.output and not session.exists()

    real_import = builtins.__import__

    def without_browser_cookie3(name: str, *args: object, **kwargs: object) -> object:
        if name == "browser_cookie3":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", without_browser_cookie3)
    r = runner.invoke(app, [*base, "--from-browser", "chrome"])
    assert r.exit_code == 1 and "pip install 'selfiescope[browser]'" in text(r)


def test_cookie_domain_matching() -> None:
    assert applies_to(".instagram.com", "www.instagram.com") and applies_to("www.instagram.com", "www.instagram.com")
    assert not applies_to("evilinstagram.com", "www.instagram.com") and not applies_to("127.0.0.10", "127.0.0.1")
    assert not applies_to("www.instagram.com", "instagram.com")
