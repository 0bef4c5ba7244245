"""Image downloads through ``[browser] proxy``: a proxy that forwards plain GETs and refuses
CONNECT (as many corporate proxies do) carries every download; a proxy that refuses them is
named in one plain line, with no browser or library text anywhere in the output. Real Chromium."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
from typer.testing import CliRunner

from selfiescope.cli import app
from selfiescope.core.proxied_request import bypassed
from selfiescope.core.web import network_problem
from selfiescope.testing.site import MockInstagram, TagSpec

from proxy_helpers import CountingProxy
from test_image_hang import RAW, assert_plain
from test_instagram import recorded, seed_session
from test_instagram_proxy import scrape, with_proxy

pytestmark = pytest.mark.browser

TAG = "delta"
BOUND_S = 240


@pytest.fixture(scope="module")
def site():
    with MockInstagram(tags={TAG: TagSpec(5, "selfie", noface=0, small_face=0)}, page_size=4) as s:
        yield s


async def test_a_proxy_without_connect_carries_every_image_download(
    site: MockInstagram, tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    seed_session(site, tmp_path)
    with CountingProxy(connect=False) as proxy:
        stats = await asyncio.wait_for(scrape(with_proxy(site, tmp_path, proxy.url)), BOUND_S)
        forwarded, tunnels_refused = list(proxy.forwarded), list(proxy.tunnels)
    assert stats.ok, stats.errors
    assert sorted(code for _, code in recorded(tmp_path)) == sorted(p.shortcode for p in site.posts(TAG))
    # nothing asked it for a tunnel: not the downloads (an http:// site), nor Chromium's own
    # background requests (update checks, account look-ups), which never reach the proxy
    assert tunnels_refused == []
    assert len([p for p in forwarded if p.startswith("/media/")]) >= len(site.posts(TAG))
    assert_plain([r.getMessage() for r in caplog.records if r.levelno >= logging.INFO])


async def test_a_proxy_that_refuses_image_downloads_is_named_plainly(
    site: MockInstagram, tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    seed_session(site, tmp_path)
    with CountingProxy(connect=False, media_status=403) as proxy:
        stats = await asyncio.wait_for(scrape(with_proxy(site, tmp_path, proxy.url)), BOUND_S)
    assert not stats.ok and recorded(tmp_path) == []
    assert stats.errors, "a run that stored nothing says why"
    assert_plain(stats.errors)
    assert_plain([r.getMessage() for r in caplog.records if r.levelno >= logging.INFO])


def test_cli_through_a_failing_proxy_exits_1_with_plain_lines_only(site: MockInstagram, tmp_path: Path) -> None:
    seed_session(site, tmp_path)
    settings_file = tmp_path / "settings.toml"
    with CountingProxy(connect=False, media_status=502) as proxy:
        settings_file.write_text(
            f'[storage]\nroot = "{tmp_path / "data"}"\n[browser]\nsession_file = "{tmp_path / "session.json"}"\n'
            f'timeout_s = 3\nproxy = "{proxy.url}"\n[plugins.instagram]\nscroll_pause_s = 0.6\nmax_idle_scrolls = 2\n'
            "requests_per_minute = 6000\njitter_s = 0\nstall_s = 5\nbackoff_s = 0.05\n"
        )
        result = CliRunner().invoke(app, ["scrape", TAG, "--label", "x", "--chain", "decode,store",
                                          "--base-url", site.base_url, "-s", str(settings_file)])
    assert result.exit_code == 1, result.output
    assert "HTTP 502" in result.output and "rerun" in result.output.lower()
    for line in result.output.splitlines():
        assert not any(raw in line for raw in RAW), line


@pytest.mark.parametrize("raw, plain", [
    ("APIRequestContext.get: aborted\nCall log:\n  - → GET http://x/media/a.jpg?sig=S", "broke off"),
    ("APIRequestContext.get: Timeout 3000ms exceeded.\nCall log:\n  - → GET http://x/a.jpg", "no answer within 3 s"),
    ("APIRequestContext.get: read ECONNRESET", "broke off"),
    ("APIRequestContext.get: connect ECONNREFUSED 127.0.0.1:9", "connection refused"),
    ("APIRequestContext.get: something new\nCall log:\n  - x", "a network error"),
])
def test_network_problems_are_plain_sentences(raw: str, plain: str) -> None:
    said = network_problem(raw, 3)
    assert plain in said and not any(r in said for r in RAW) and "sig=" not in said


def test_bypass_rules_follow_chromium() -> None:
    corp = "http://proxy.corp:3128"
    assert bypassed("http://127.0.0.1:8000/media/a.jpg", corp, [])  # loopback goes direct ...
    assert not bypassed("http://127.0.0.1:8000/media/a.jpg", "http://127.0.0.1:3128", [])  # ... unless the proxy is too
    assert bypassed("https://img.corp.example/a.jpg", corp, [".corp.example"])
    assert bypassed("https://corp.example/a.jpg", corp, [".corp.example"])
    assert not bypassed("https://cdn.example/a.jpg", corp, [".corp.example"])
    assert bypassed("https://x.intra/a.jpg", corp, ["*.intra"])
