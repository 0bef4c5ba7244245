"""Image downloads through real forwarding proxies that relay a body while it arrives
(chunked transfer encoding, small writes; tinyproxy): every image is stored byte for byte,
and the only host the proxy is asked for is the site's. Real Chromium, real scrape."""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from selfiescope.cli import app

from selfiescope.core.proxy import PROXY_PASSWORD_ENV, PROXY_USERNAME_ENV
from selfiescope.plugins.instagram import PASSWORD_ENV, USERNAME_ENV
from selfiescope.testing.site import MockInstagram, TagSpec

from proxy_helpers import CountingProxy
from manifest_helpers import manifest_query
from test_instagram import seed_session
from test_instagram_proxy import scrape, with_proxy

pytestmark = pytest.mark.browser

TAG = "delta"
BOUND_S = 300
PROXY_USER, PROXY_PASSWORD = "corp-user", "Pr0xy-S3cret!"
SITE_USER, SITE_PASSWORD = "demo", "site-pass"


@pytest.fixture(scope="module")
def site():
    with MockInstagram(tags={TAG: TagSpec(6, "selfie", noface=0, small_face=0)}, page_size=4,
                       username=SITE_USER, password=SITE_PASSWORD) as s:
        yield s


def stored_hashes(root: Path) -> list[str]:
    return sorted(r["content_hash"] for r in manifest_query(root, "SELECT content_hash FROM images WHERE source='instagram'"))


def rejections(root: Path) -> list[str]:
    return [r["reject_code"] for r in manifest_query(root, "SELECT reject_code FROM rejections")]


def assert_every_image_stored_intact(site: MockInstagram, root: Path, stats: object) -> None:
    assert rejections(root) == [], "a whole image through the proxy is never rejected"
    assert getattr(stats, "ok"), getattr(stats, "errors")
    posts = site.posts(TAG)
    served = {hashlib.sha256(site.media_bytes(p, w)).hexdigest() for p in posts for w, _ in p.sizes}
    stored = stored_hashes(root)
    assert len(stored) == len(posts)
    assert set(stored) <= served, "the stored bytes are the site's bytes"


async def test_a_proxy_that_streams_chunked_small_pieces_delivers_every_image_whole(
    site: MockInstagram, tmp_path: Path,
) -> None:
    seed_session(site, tmp_path)
    with CountingProxy(connect=False, chunk_bytes=700) as proxy:
        stats = await asyncio.wait_for(scrape(with_proxy(site, tmp_path, proxy.url)), BOUND_S)
    assert_every_image_stored_intact(site, tmp_path, stats)


async def test_only_the_site_is_asked_of_the_proxy_and_only_it_hears_the_credentials(
    site: MockInstagram, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("DEBUG")
    monkeypatch.setenv(PROXY_USERNAME_ENV, PROXY_USER)
    monkeypatch.setenv(PROXY_PASSWORD_ENV, PROXY_PASSWORD)
    monkeypatch.setenv(USERNAME_ENV, SITE_USER)  # a login form: what wakes Chromium's autofill look-ups
    monkeypatch.setenv(PASSWORD_ENV, SITE_PASSWORD)
    host = site.base_url.split("://", 1)[1].rstrip("/")
    with CountingProxy(credentials=(PROXY_USER, PROXY_PASSWORD)) as proxy:
        stats = await asyncio.wait_for(scrape(with_proxy(site, tmp_path, proxy.url)), BOUND_S)
        seen = list(proxy.seen)
    assert getattr(stats, "ok"), getattr(stats, "errors")
    assert seen, "the scrape went through the proxy"
    for line in seen:  # no background request of Chromium's (autofill, optimization hints, ...) reaches it
        method, target = line.split(" ", 1)
        where = target if method == "CONNECT" else target.split("://", 1)[1].split("/", 1)[0]
        assert where == host, line
    assert not any(PROXY_PASSWORD in r.getMessage() for r in caplog.records), "no log line holds the password"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def tinyproxy(tmp_path: Path):
    binary = shutil.which("tinyproxy")
    if binary is None:
        pytest.skip("tinyproxy is not installed (apt-get install tinyproxy)")
    port = _free_port()
    conf = tmp_path / "tinyproxy.conf"
    conf.write_text(f'Port {port}\nListen 127.0.0.1\nTimeout 600\nMaxClients 50\nLogFile "{tmp_path}/tp.log"\n'
                    "LogLevel Info\nAllow 127.0.0.1\nConnectPort 443\n")
    proc = subprocess.Popen([binary, "-d", "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail("tinyproxy did not start")
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


async def test_through_tinyproxy_every_image_is_stored_whole(
    site: MockInstagram, tmp_path: Path, tinyproxy: str,
) -> None:
    root = tmp_path / "run"
    root.mkdir()
    seed_session(site, root)
    stats = await asyncio.wait_for(scrape(with_proxy(site, root, tinyproxy)), BOUND_S)
    assert_every_image_stored_intact(site, root, stats)


def test_launch_args_keep_one_disable_features_holding_playwrights_ours_and_the_users() -> None:
    from selfiescope.core.launch_args import PLAYWRIGHT_DISABLED_FEATURES, launch_args

    args = launch_args(["--disable-features=Foo,Bar", "--lang=fr"])
    switches = [a for a in args if a.startswith("--disable-features=")]
    assert len(switches) == 1, "Chromium keeps only the last of several"
    features = switches[0].split("=", 1)[1].split(",")
    assert {"Foo", "Bar", "AutofillServerCommunication", *PLAYWRIGHT_DISABLED_FEATURES} <= set(features)
    assert len(features) == len(set(features)) and "--lang=fr" in args


def test_doctor_and_scrape_agree_when_the_proxy_cuts_every_image(
    site: MockInstagram, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The doctor downloads as the source does (the proxied path, the whole-image check): a proxy
    that hands on half of each image fails its image check, and the scrape ends with failed
    downloads (exit 1, a rerun tries again), not with rejections."""
    monkeypatch.setenv(USERNAME_ENV, SITE_USER)
    monkeypatch.setenv(PASSWORD_ENV, SITE_PASSWORD)
    settings_file = tmp_path / "settings.toml"
    with CountingProxy(connect=False, cut_media=True) as proxy:
        settings_file.write_text(
            f'[storage]\nroot = "{tmp_path / "data"}"\n[browser]\nsession_file = "{tmp_path / "session.json"}"\n'
            f'timeout_s = 6\nproxy = "{proxy.url}"\n[plugins.instagram]\nscroll_pause_s = 0.6\nmax_idle_scrolls = 2\n'
            "requests_per_minute = 6000\njitter_s = 0\nstall_s = 30\nbackoff_s = 0.05\nretries = 1\n")
        doctor = CliRunner().invoke(app, ["doctor", "--base-url", site.base_url, "--settings", str(settings_file),
                                          "--tag", TAG, "--json"])
        scraped = CliRunner().invoke(app, ["scrape", TAG, "--label", "x", "--chain", "decode,store",
                                           "--base-url", site.base_url, "-s", str(settings_file)])
    checks = {c["name"]: c for c in json.loads(doctor.stdout)["checks"]}
    assert doctor.exit_code == 1 and checks["image_candidates"]["status"] == "fail", checks["image_candidates"]
    assert scraped.exit_code == 1, scraped.output
    assert rejections(tmp_path / "data") == [], "a cut-off download is never rejected for good"
