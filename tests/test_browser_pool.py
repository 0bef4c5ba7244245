"""The browser pool (real Chromium), saved sessions, the request budget and downloads."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest

from selfiescope.core.browser import BrowserPool, is_tracker, load_session, save_session
from selfiescope.core.browser_lookup import BrowserNotFound, find_chromium
from selfiescope.core.manifest import Manifest
from selfiescope.core.settings import BrowserSettings
from selfiescope.core.web import (
    DownloadError, TokenBucket, click_dialog_buttons, fetch_image, largest_from_srcset, parse_retry_after,
)
from selfiescope.testing.site import MockInstagram, TagSpec

needs_browser = pytest.mark.browser  # skipped with one reason when no Chromium is found (conftest)


@pytest.fixture(scope="module")
def site():
    with MockInstagram(tags={"alpha": TagSpec(8, "selfie", noface=0, small_face=0)}, require_login=False,
                       page_size=4) as s:
        yield s


def pool_with(**kw) -> BrowserPool:
    return BrowserPool(BrowserSettings(**kw))


# --- the pool ---------------------------------------------------------------------------------
@needs_browser
@pytest.mark.browser
async def test_contexts_are_isolated_and_limited(site: MockInstagram) -> None:
    pool = pool_with(max_contexts=2, block=[])
    active = peak = 0

    async def job(i: int) -> list[str]:
        nonlocal active, peak
        async with pool.lease() as lease:
            active += 1
            peak = max(peak, active)
            await lease.goto(site.base_url + "/")
            await lease.context.add_cookies([{"name": f"job{i}", "value": "1", "url": site.base_url}])
            await asyncio.sleep(0.3)
            names = [c["name"] for c in await lease.context.cookies()]
            active -= 1
            return names

    try:
        results = await asyncio.gather(*(job(i) for i in range(4)))
    finally:
        await pool.close()
    assert peak == 2
    for i, names in enumerate(results):
        assert f"job{i}" in names
        assert not any(n.startswith("job") and n != f"job{i}" for n in names)  # no cookie leaks across jobs
    assert pool.launches == 1  # one Chromium for all of them


@needs_browser
@pytest.mark.browser
async def test_pages_are_recycled_after_n_navigations(site: MockInstagram) -> None:
    pool = pool_with(recycle_after=2, block=[])
    try:
        async with pool.lease() as lease:
            first = await lease.page()
            for _ in range(5):
                await lease.goto(site.base_url + "/")
            assert lease.navigations == 5
            assert lease.pages_opened == 3  # 2 + 2 + 1 navigations
            assert first.is_closed()
    finally:
        await pool.close()


@needs_browser
@pytest.mark.browser
async def test_blocking_images_keeps_the_page_from_loading_them(site: MockInstagram) -> None:
    pool = pool_with(block=["font", "media", "trackers"])
    try:
        for block, expect_media in (([], True), (["image"], False)):
            start = len(site.requests)
            async with pool.lease(block=block) as lease:
                await lease.goto(site.base_url + "/explore/tags/alpha/")
                page = await lease.page()
                await page.wait_for_function("[...document.images].every(i => i.complete)", timeout=20_000)
            media = [p for _, p, _ in site.requests[start:] if p.startswith("/media/")]
            assert bool(media) is expect_media, (block, media)
    finally:
        await pool.close()
    assert is_tracker("https://www.google-analytics.com/collect?v=1")
    assert not is_tracker("https://scontent.cdninstagram.com/v/t51/1.jpg")


@needs_browser
@pytest.mark.browser
async def test_a_killed_browser_is_relaunched_once(site: MockInstagram) -> None:
    pool = pool_with()
    try:
        async with pool.lease() as lease:
            await lease.goto(site.base_url + "/")
            generation = lease.generation
            pid = pool.browser_pid()
            assert pid is not None
            os.kill(pid, signal.SIGKILL)
            with pytest.raises(Exception):
                for _ in range(50):
                    await (await lease.page()).evaluate("1")
                    await asyncio.sleep(0.1)
        assert not pool.connected
        assert await pool.recover(generation) is True
        assert await pool.recover(generation) is True  # a second job failing on the old browser
        assert pool.launches == 2 and pool.generation == generation + 1
        assert await pool.recover(pool.generation) is False  # healthy browser: the job's own failure
        async with pool.lease() as lease:
            response = await lease.goto(site.base_url + "/")
            assert response is not None and response.ok
    finally:
        await pool.close()
    assert pool.browser_processes() == []


@needs_browser
@pytest.mark.browser
async def test_popups_are_closed_by_role_and_name_topmost_first(caplog: pytest.LogCaptureFixture) -> None:
    overlay = "position:fixed;inset:0;background:#0008"
    html = (
        f'<div role="dialog" aria-label="Cookies" style="{overlay}">'
        '<button class="x9f" onclick="this.parentNode.remove()">Allow all</button>'
        '<button class="q1z" onclick="this.parentNode.remove()">Not now</button></div>'
        f'<div role="dialog" aria-label="Notifications" style="{overlay}">'
        '<button class="k2" onclick="this.parentNode.remove()">Plus tard</button></div>'
        '<div role="dialog" aria-label="Hola"><button>Vale</button></div>'
    )
    pool = pool_with()
    try:
        async with pool.lease() as lease:
            page = await lease.page()
            await page.set_content(html)
            clicked = await click_dialog_buttons(page, ["Not now", "Plus tard"])
            assert clicked == ["Plus tard", "Not now"]  # the top one first: the other is covered
            assert await page.get_by_role("dialog").count() == 1
    finally:
        await pool.close()
    assert "'Hola'" in caplog.text  # a pop-up it cannot close is reported, not silently left


def test_unknown_executable_gives_a_clear_message() -> None:
    with pytest.raises(BrowserNotFound, match="browser.executable"):
        find_chromium("/nonexistent/chromium")


# --- sessions ---------------------------------------------------------------------------------
def test_session_file_is_private(tmp_path: Path) -> None:
    path = tmp_path / "cfg" / "session.json"
    save_session(path, {"cookies": [{"name": "sessionid", "value": "abc"}], "origins": []})
    assert path.stat().st_mode & 0o777 == 0o600
    assert load_session(path)["cookies"][0]["value"] == "abc"
    os.chmod(path, 0o644)
    assert load_session(path) is not None
    assert path.stat().st_mode & 0o777 == 0o600  # tightened on read
    path.write_text("{not json")
    assert load_session(path) is None
    assert load_session(tmp_path / "missing.json") is None


# --- the request budget -----------------------------------------------------------------------
class FakeTime:
    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, s: float) -> None:
        self.slept.append(s)
        self.now += s


def test_token_bucket_waits_persists_and_honours_retry_after(tmp_path: Path) -> None:
    manifest = Manifest.at_root(tmp_path)
    t = FakeTime()
    bucket = TokenBucket(manifest, "k", per_minute=60, burst=2, clock=t.clock, sleep=t.sleep)

    async def take(b: TokenBucket, n: int) -> list[float]:
        return [await b.take() for _ in range(n)]

    assert asyncio.run(take(bucket, 3)) == [0, 0, pytest.approx(1.0)]  # burst of 2, then 1/s
    # A restart reads the saved level: the budget is not refilled by restarting.
    again = TokenBucket(manifest, "k", per_minute=60, burst=2, clock=t.clock, sleep=t.sleep)
    assert again.tokens == pytest.approx(0.0)
    again.penalize(5)  # a 429 with Retry-After: 5
    assert asyncio.run(take(again, 1))[0] == pytest.approx(5.0)
    # Jitter adds a bounded random wait (within one slot) to the requests the budget holds back.
    jittery = TokenBucket(manifest, "j", per_minute=6000, burst=1, jitter_s=0.5, clock=t.clock, sleep=t.sleep)
    waits = asyncio.run(take(jittery, 20))
    assert waits[0] == 0 and all(0 < w <= 0.02 + 1e-9 for w in waits[1:]) and len(set(waits)) > 1
    manifest.close()


def test_srcset_and_retry_after_parsing() -> None:
    url, width = largest_from_srcset("/a_150.jpg 150w, /a_1080.jpg 1080w, /a_640.jpg 640w", "/a_150.jpg")
    assert (url, width) == ("/a_1080.jpg", 1080)
    assert largest_from_srcset("", "/only.jpg") == ("/only.jpg", None)
    assert largest_from_srcset("/x.jpg 1x, /x2.jpg 2x")[0] == "/x2.jpg"
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(None, 3.0) == 3.0
    assert parse_retry_after("soon", 4.0) == 4.0


# --- downloads --------------------------------------------------------------------------------
@needs_browser
@pytest.mark.browser
async def test_downloads_retry_5xx_and_reject_non_images(site: MockInstagram, tmp_path: Path) -> None:
    post = site.posts("alpha")[0]
    pool = pool_with()
    site.image_error_every = 1  # every media path fails once, then works
    try:
        async with pool.lease() as lease:
            got = await fetch_image(lease.request, site.base_url + post.media_path(320), bucket=None,
                                    max_bytes=10_000_000, retries=2, backoff_s=0.01)
            assert got.attempts == 2 and got.content_type == "image/jpeg"
            assert got.data == site.media_bytes(post, 320)
            with pytest.raises(DownloadError, match="not an image") as exc:
                await fetch_image(lease.request, site.base_url + "/", bucket=None, max_bytes=10_000_000,
                                  retries=1, backoff_s=0.01)
            # An HTML page instead of an image is an error page or a login redirect: retried, never marked done.
            assert exc.value.transient and "after 2 attempts" in str(exc.value)
            with pytest.raises(DownloadError, match="too large"):
                await fetch_image(lease.request, site.base_url + post.media_path(1080), bucket=None,
                                  max_bytes=1000, retries=3, backoff_s=0.01)
            with pytest.raises(DownloadError, match="HTTP 404"):
                await fetch_image(lease.request, site.base_url + "/media/nope_1080.jpg", bucket=None, max_bytes=10**7)
            site.image_error_every = 0
    finally:
        site.image_error_every = 0
        await pool.close()
    failed = [p for _, p, s in site.requests if s == 500]
    assert failed
