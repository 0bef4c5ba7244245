"""The stall clock of a job, and reading a post page for a fresh image URL (no browser)."""

from __future__ import annotations

import asyncio
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from selfiescope.core.web import Deadline, within
from selfiescope.plugins.instagram import image_url_from_post_page, is_feed_url
from selfiescope.plugins.instagram.watchdog import Stalled, Watchdog


async def test_a_step_that_outlasts_the_stall_time_is_a_stall_naming_what_it_waited_on() -> None:
    watch = Watchdog(0.3)
    started = time.monotonic()
    with pytest.raises(Stalled) as exc:
        await watch.run("the next feed page", asyncio.sleep(10))
    assert exc.value.waiting_on == "the next feed page" and time.monotonic() - started < 9  # it ended, not slept on
    assert watch.remaining() <= 0


async def test_time_paused_on_purpose_does_not_count() -> None:
    watch = Watchdog(0.3)
    await watch.paused(asyncio.sleep(0.5))  # e.g. a 429's wait, or the engine not taking events
    assert watch.remaining() > 0.2
    assert await watch.run("quick", asyncio.sleep(0.01, result=7)) == 7
    watch.progress()
    assert watch.remaining() > 0.25


async def test_within_names_what_did_not_answer() -> None:
    with pytest.raises(Deadline, match="reading the grid: no answer within 0.1 s"):
        await within(0.1, asyncio.sleep(5), "reading the grid")
    assert isinstance(Deadline("x", 1.0), TimeoutError)


def test_only_feed_endpoints_are_read() -> None:
    assert is_feed_url("https://www.instagram.com/api/v1/tags/selfie/sections/?max_id=abc")
    assert is_feed_url("https://www.instagram.com/api/v1/tags/web_info/?tag_name=selfie")
    assert is_feed_url("https://www.instagram.com/graphql/query/")
    for url in ("https://www.instagram.com/api/v1/web/consent/update/", "https://www.instagram.com/api/v1/web/activity/",
                "https://www.instagram.com/ajax/bz", "https://scontent.cdninstagram.com/v/t51/x.jpg",
                "https://www.instagram.com/logging/falco"):
        assert not is_feed_url(url), url


def test_fresh_image_url_from_a_post_page() -> None:
    page = ('<html><head><meta content="https://cdn.example/a.jpg?se=9&amp;sig=ab" property="og:image"></head>'
            '<body><img src="/small.jpg"></body></html>')
    assert image_url_from_post_page(page, "https://x.test") == "https://cdn.example/a.jpg?se=9&sig=ab"
    page = '<img src="/s.jpg" srcset="/s.jpg 150w, /l.jpg 1080w"><img src="/icon.png">'
    assert image_url_from_post_page(page, "https://x.test") == "https://x.test/l.jpg"
    assert image_url_from_post_page("<p>gone</p>", "https://x.test") is None


async def test_a_feed_answer_that_is_not_json_is_dropped_with_a_log_line(caplog: pytest.LogCaptureFixture) -> None:
    from selfiescope.plugins.instagram.feed import FeedReader

    class Events:
        def on(self, name: str, handler: object) -> None:
            pass

    class HtmlAnswer:  # a proxy's or a CDN's error page where the feed JSON should be
        url = "https://www.instagram.com/api/v1/tags/selfie/sections/?sig=SECRET"
        status = 200

        async def json(self) -> object:
            raise ValueError("Expecting value: line 1 column 1 (char 0)")

    reader = FeedReader(Events(), "https://www.instagram.com")
    await reader._read(HtmlAnswer())
    assert reader.pages_read == 0 and not reader.json_posts
    assert "/api/v1/tags/selfie/sections/" in caplog.text and "not JSON" in caplog.text
    assert "SECRET" not in caplog.text


# --- the clock's accounting: only time outside pauses counts, since the last progress ----------
class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@given(st.lists(st.one_of(st.tuples(st.just("advance"), st.floats(0, 50)), st.just(("pause", 0.0)),
                          st.just(("resume", 0.0)), st.just(("progress", 0.0))), max_size=40),
       st.booleans())
def test_only_unpaused_time_since_the_last_progress_counts(steps: list[tuple[str, float]], idle: bool) -> None:
    clock = FakeClock()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("selfiescope.plugins.instagram.watchdog.time.monotonic", clock)
        watch = Watchdog(60.0, idle=idle)
        pauses, counted = (1 if idle else 0), 0.0
        for op, amount in steps:
            if op == "advance":
                clock.now += amount
                counted += amount if pauses == 0 else 0.0
            elif op == "pause":
                watch._pause()
                pauses += 1
            elif op == "resume" and pauses > 0:
                watch._resume()
                pauses -= 1
            elif op == "progress":
                watch.progress()
                counted = 0.0
            assert watch.elapsed() == pytest.approx(counted, abs=1e-6)


async def test_an_idle_clock_counts_only_the_time_inside_counting() -> None:
    images = Watchdog(0.4, idle=True)
    await asyncio.sleep(0.6)  # reading the feed between downloads: not the image host's fault
    assert images.remaining() == pytest.approx(0.4, abs=0.01)
    assert await images.counting("images", asyncio.sleep(0.01, result="jpeg")) == "jpeg"
    # a wait the site asked for inside a download does not count either
    assert await images.counting("images", images.paused(asyncio.sleep(0.6, result=1))) == 1
    with pytest.raises(Stalled) as exc:
        await asyncio.wait_for(images.counting("images from cdn.test", asyncio.sleep(60)), 30)
    assert exc.value.waiting_on == "images from cdn.test"


async def test_a_stalled_step_is_cancelled_not_left_running() -> None:
    watch = Watchdog(0.2)
    cancelled = asyncio.Event()

    async def hangs() -> None:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    with pytest.raises(Stalled):
        await asyncio.wait_for(watch.run("a hung download", hangs()), 30)
    assert cancelled.is_set()
