"""``[browser] proxy``: pages, feeds and image downloads go through one proxy (real Chromium)."""

from __future__ import annotations

import json
import logging
import socket
from pathlib import Path

import pytest
from typer.testing import CliRunner

from selfiescope.core.app import App
from selfiescope.cli import app
from selfiescope.core import secrets
from selfiescope.core.proxy import PROXY_PASSWORD_ENV, PROXY_USERNAME_ENV, check_proxy_url, playwright_proxy
from selfiescope.core.settings import ScrapePipeline, SettingsError, settings_from_dict
from selfiescope.pipelines.collecting.collect import collect
from selfiescope.testing.site import MockInstagram, TagSpec

from proxy_helpers import CountingProxy
from test_instagram import recorded, seed_session, settings_for

pytestmark = pytest.mark.browser


TAG = "delta"
PROXY_USER, PROXY_PASSWORD = "corp-user", "Pr0xy-S3cret!"


@pytest.fixture(scope="module")
def site():
    with MockInstagram(tags={TAG: TagSpec(5, "selfie", noface=0, small_face=0)}, page_size=4) as s:
        yield s


def with_proxy(site: MockInstagram, root: Path, proxy: str):
    settings = settings_for(site, root)
    return settings.model_copy(update={"browser": settings.browser.model_copy(update={"proxy": proxy})})


async def scrape(settings) -> object:
    pipeline = ScrapePipeline(kind="scrape", source="instagram", hashtags=[TAG], label="x", chain=["decode", "store"])
    return await collect(App.create(settings), "scrape", pipeline=pipeline)


async def test_scrape_through_an_authenticating_proxy_stores_every_image(
    site: MockInstagram, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv(PROXY_USERNAME_ENV, PROXY_USER)
    monkeypatch.setenv(PROXY_PASSWORD_ENV, PROXY_PASSWORD)
    seed_session(site, tmp_path)
    with CountingProxy(credentials=(PROXY_USER, PROXY_PASSWORD)) as proxy:
        start = len(site.requests)
        stats = await scrape(with_proxy(site, tmp_path, proxy.url))
        forwarded = list(proxy.forwarded)
    assert stats.ok, stats.errors
    assert sorted(code for _, code in recorded(tmp_path)) == sorted(p.shortcode for p in site.posts(TAG))
    assert any(p.startswith(f"/explore/tags/{TAG}/") for p in forwarded)  # the page
    media = [p.split("?")[0] for p in forwarded if p.startswith("/media/")]
    assert len(media) >= len(site.posts(TAG))  # and the image downloads
    site_paths = [p for _, p, _ in site.requests[start:]]
    assert sorted(p.split("?")[0] for p in site_paths if p.startswith("/media/")) == sorted(media)  # every one
    assert PROXY_PASSWORD not in caplog.text and PROXY_USER not in caplog.text
    assert PROXY_PASSWORD_ENV not in __import__("os").environ  # taken: Chromium and the driver never inherit it


async def test_without_the_proxy_credentials_the_run_fails_and_the_proxy_saw_no_secret(
    site: MockInstagram, tmp_path: Path
) -> None:
    secrets.clear()
    seed_session(site, tmp_path)
    with CountingProxy(credentials=(PROXY_USER, PROXY_PASSWORD)) as proxy:
        stats = await scrape(with_proxy(site, tmp_path, proxy.url))
        assert proxy.refused >= 1 and not proxy.forwarded
    assert not stats.ok and recorded(tmp_path) == []
    assert stats.errors == [f"instagram {TAG}: the proxy {proxy.url} (browser.proxy) asks for credentials (HTTP 407): "
                            f"set {PROXY_USERNAME_ENV} and {PROXY_PASSWORD_ENV}"]  # no raw browser text


async def test_a_dead_proxy_is_named_as_such(site: MockInstagram, tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    seed_session(site, tmp_path)
    stats = await scrape(with_proxy(site, tmp_path, url))
    assert not stats.ok and recorded(tmp_path) == []
    assert len(stats.errors) == 1 and f"the proxy {url} (browser.proxy) could not be reached" in stats.errors[0]


def test_proxy_url_validation() -> None:
    assert check_proxy_url("proxy.corp:3128") == "http://proxy.corp:3128"
    assert check_proxy_url(" socks5://10.0.0.1:1080 ") == "socks5://10.0.0.1:1080"
    assert check_proxy_url("") is None
    for bad, why in [("http://bob:hunter2@proxy.corp:3128", "SELFIESCOPE_PROXY_USERNAME"),
                     ("ftp://proxy.corp:21", "scheme"), ("http://proxy.corp:3128/path", "no path"),
                     ("http://proxy.corp:99999", "not a proxy URL"), ("http://:3128", "names no proxy host")]:
        with pytest.raises(ValueError, match=why):
            check_proxy_url(bad)
    with pytest.raises(SettingsError) as exc:
        settings_from_dict({"browser": {"proxy": "http://bob:hunter2@proxy.corp:3128"}})
    problems = " ".join(exc.value.problems)
    assert "browser.proxy" in problems and "hunter2" not in problems


def test_settings_check_refuses_a_proxy_with_credentials(tmp_path: Path) -> None:
    settings_file = tmp_path / "settings.toml"
    settings_file.write_text(f'[storage]\nroot = "{tmp_path}"\n[browser]\nproxy = "http://bob:hunter2@proxy.corp:3128"\n')
    result = CliRunner().invoke(app, ["settings", "check", "-s", str(settings_file)])
    assert result.exit_code == 2 and "browser.proxy" in result.output and "hunter2" not in result.output
    settings_file.write_text(f'[storage]\nroot = "{tmp_path}"\n[browser]\nproxy = "http://proxy.corp:3128"\n')
    result = CliRunner().invoke(app, ["settings", "check", "-s", str(settings_file), "--json"])
    assert result.exit_code == 0 and json.loads(result.stdout)["ok"]


def test_playwright_proxy_takes_credentials_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    secrets.clear()
    assert playwright_proxy(None) is None
    assert playwright_proxy("http://p:1", [".corp"]) == {"server": "http://p:1", "bypass": ".corp"}
    monkeypatch.setenv(PROXY_USERNAME_ENV, "u")
    monkeypatch.setenv(PROXY_PASSWORD_ENV, "pw")
    assert playwright_proxy("http://p:1") == {"server": "http://p:1", "username": "u", "password": "pw"}
