"""A site that goes away, a replay that runs past its recording, 429s and dead ends on image
downloads: each ends plainly and soon, keeps what was stored, and counts what happened."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest

from selfiescope.core.app import App
from selfiescope.core.manifest import Manifest
from selfiescope.pipelines.collecting.record import record, replay_settings
from selfiescope.testing.chaos import Chaos
from selfiescope.testing.site import MockInstagram, TagSpec
from test_instagram import expected, one_job_says_why, recorded, scrape, seed_session
from test_instagram_chaos import settings_for


pytestmark = pytest.mark.browser

TAGS = {"gamma": TagSpec(16, "selfie", noface=0, small_face=0), "delta": TagSpec(16, "portrait", noface=0, small_face=0)}
BOUND_S = 150  # generous: a dead site used to take minutes; a loaded 2-core machine must still pass


def site_with(**knobs: Any) -> MockInstagram:
    return MockInstagram(tags=TAGS, page_size=4, chaos=Chaos(**knobs))


def rejections(root: Path) -> list[tuple[str, str]]:
    m = Manifest.at_root(root)
    try:
        return [(r["post_id"], r["reject_code"]) for r in m.query("SELECT post_id, reject_code FROM rejections")]
    finally:
        m.close()


async def test_a_site_that_dies_mid_run_ends_the_run_plainly_and_keeps_what_was_stored(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    with site_with(die_after=30) as site:
        seed_session(site, tmp_path)
        port = int(site.base_url.rsplit(":", 1)[1])
        # the default backoff: retrying a refused connection with backoff is what made it take minutes
        settings = settings_for(site, tmp_path, timeout_s=5, stall_s=20, backoff_s=1.0)
        stats = await asyncio.wait_for(scrape(settings, ["gamma", "delta"]), BOUND_S)
        assert site.died.is_set()
        assert stats.status == "finished_with_errors"
        # said once, by the job that met the dead site; the other job names its own tag and points to it
        one_job_says_why(stats.errors, "cannot be reached (connection refused)", "Rerun when the site is back")
        for line in stats.errors:  # the browser's own words stay in the debug log
            assert "net::" not in line and "Call log" not in line and "ECONNREFUSED" not in line
        # a refused connection is not retried with backoff, and a failed download is a failure
        # (a download in flight when the server went may be cut off and retried once, no more)
        assert caplog.text.count("retry 1 in") <= 2 and "retry 2 in" not in caplog.text
        assert stats.rejected_by_reason.get("download", 0) == 0
        kept = recorded(tmp_path)
        assert kept, "images stored before the site died are kept"
        # Back again: a rerun fetches the rest, nothing twice.
        site.chaos.die_after = None
        site.start(port=port)
        again = await asyncio.wait_for(scrape(settings, ["gamma", "delta"]), BOUND_S)
        assert again.status == "finished", again.errors
        assert sorted(recorded(tmp_path)) == expected(site, "gamma", "delta")


async def test_a_replay_past_its_recording_ends_when_the_recording_does(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    site = MockInstagram(tags={"gamma": TagSpec(16, "selfie", noface=0, small_face=0)}, page_size=4,
                         require_login=False, chaos=Chaos(url_ttl_s=3600))  # signed image URLs
    site.start()
    har_file = tmp_path / "gamma.har"
    try:  # the recording stops after 5 images: it holds 8 posts' data but only 5 images
        rec = await asyncio.wait_for(record(App.create(settings_for(site, tmp_path / "rec", stall_s=30)), ["gamma"], har_file,
                                            base_url=site.base_url, limit=5), BOUND_S)
    finally:
        site.stop()
    assert rec.stats.accepted >= 5
    caplog.clear()  # the replay's log only
    replayed, base = replay_settings(App.create(settings_for(site, tmp_path / "play", stall_s=30, backoff_s=1.0)), har_file)
    settings = replayed.settings
    settings.plugins["instagram"]["base_url"] = base
    stats = await asyncio.wait_for(scrape(settings, ["gamma"]), BOUND_S)
    assert stats.accepted >= rec.stats.accepted  # what was recorded comes back (and a download in flight)
    # It ended where the recording does: no stall and reload, no download retried with backoff.
    assert "the recording ends here" in caplog.text
    assert "Reloading the tag page" not in caplog.text and "retry 1 in" not in caplog.text
    assert stats.failed_by_reason.get("download_failed") and any("not in the recording" in e for e in stats.errors)
    summary = " ".join(stats.error_lines())  # one consistent sentence: a replay cannot retry what it lacks
    assert "cannot fetch them" in summary and "rerun retries" not in summary and "rerun to retry" not in summary
    for line in stats.errors:
        assert "net::" not in line and "Call log" not in line and "sig=" not in line
    assert "/media/" in caplog.text and "sig=" not in caplog.text  # a signed URL's query is a credential


async def test_a_429_on_images_is_waited_out_and_dead_ends_are_kept_as_rejections(tmp_path: Path) -> None:
    with site_with(image_429_every=5, image_retry_after_s=1) as site:
        seed_session(site, tmp_path)
        gone = site.posts("gamma")[2]
        big = site.posts("gamma")[5]
        original = site.media_bytes

        def media_bytes(post: Any, width: int = 1080) -> bytes:
            return original(post, width) + (b"\0" * 3_000_000 if post is big else b"")

        site.media_bytes = media_bytes  # type: ignore[method-assign]
        del site._by_id[gone.id]  # its image answers 404 from now on
        settings = settings_for(site, tmp_path, max_image_bytes=2_000_000)
        stats = await asyncio.wait_for(scrape(settings, ["gamma"]), BOUND_S)
        got_429 = [p for _, p, s in site.requests if p.startswith("/media/") and s == 429]
        assert got_429
        assert stats.failed == 0 and stats.errors == [], stats.errors
        # 404s and oversize images are decisions with a reason, visible in the manifest (stats, card)
        assert sorted(rejections(tmp_path)) == sorted([(gone.shortcode, "gone"), (big.shortcode, "too_large")])
        assert stats.rejected_by_reason == {"gone": 1, "too_large": 1}
        want = [x for x in expected(site, "gamma") if x[1] not in (gone.shortcode, big.shortcode)]
        assert sorted(recorded(tmp_path)) == want


async def test_failed_downloads_are_failures_that_a_rerun_retries(tmp_path: Path) -> None:
    with site_with(url_ttl_s=60, stale_url_share=1.0) as site:
        seed_session(site, tmp_path)
        site.chaos.url_ttl_s = -5.0  # every URL has expired, the post pages' too
        stats = await asyncio.wait_for(scrape(settings_for(site, tmp_path), ["gamma"]), BOUND_S)
        assert stats.failed == len(site.posts("gamma")) and stats.failed_by_reason == {"download_failed": stats.failed}
        assert stats.rejected == 0
        assert any("could not be downloaded" in line for line in stats.error_lines())


def test_stats_lists_a_sources_rejections_by_reason(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from selfiescope.cli import app

    m = Manifest.at_root(tmp_path)
    try:
        m.reject_post("instagram", "CODE1", "gamma", "selfie", "gone", "HTTP 404")
        m.reject_post("instagram", "CODE2", "gamma", "selfie", "too_large", "too large (3000000 bytes > 2000000)")
        assert m.post_seen("instagram", "CODE1") and m.post_seen("instagram", "CODE2")  # done for good
    finally:
        m.close()
    (tmp_path / "settings.toml").write_text(f'[storage]\nroot = "{tmp_path}"\n')
    result = CliRunner().invoke(app, ["stats", "--root", str(tmp_path), "-s", str(tmp_path / "settings.toml")])
    assert result.exit_code == 0, result.output
    assert "instagram/gone" in result.output and "instagram/too_large" in result.output


async def test_the_page_loads_no_thumbnails_videos_or_fonts_whatever_the_browser_block_list(tmp_path: Path) -> None:
    # The source reads the feed's JSON: what the page would show is waste, even when the user's
    # [browser] block list lets fonts and media through.
    with MockInstagram(tags={"gamma": TagSpec(10, "selfie", noface=0, small_face=0)}, page_size=4,
                       username="u_lean", password="pw-lean-Ibis-77", chaos=Chaos(heavy_page=True)) as site:
        seed_session(site, tmp_path)
        settings = settings_for(site, tmp_path)
        settings.browser.block = []
        stats = await asyncio.wait_for(scrape(settings, ["gamma"]), BOUND_S)
        assert stats.status == "finished", stats.errors
        assert sorted(recorded(tmp_path)) == expected(site, "gamma")
        fetched = [p for _, p, _ in site.requests]
        assert any(p.startswith("/explore/tags/gamma") for p in fetched)
        assert not [p for p in fetched if p.endswith((".woff2", ".mp4"))]
        media = [p for p in fetched if p.startswith("/media/")]
        assert media and all("_1080.jpg" in p for p in media)  # the full-size image, never a grid thumbnail
        # what went over the wire is, nearly all, the images stored
        stored = sum(f.stat().st_size for f in tmp_path.rglob("*.jpg"))
        assert sum(site.bytes_sent.values()) <= 1.3 * stored


async def test_a_site_that_is_gone_from_the_first_request_is_named_plainly(tmp_path: Path) -> None:
    with site_with(die_after=0) as site:  # the tag page's request gets no answer, then nothing listens
        seed_session(site, tmp_path)
        stats = await asyncio.wait_for(scrape(settings_for(site, tmp_path, timeout_s=5), ["gamma"]), BOUND_S)
        assert stats.status == "finished_with_errors" and stats.seen == 0
        [error] = stats.errors
        assert "cannot be reached (connection refused)" in error and "net::" not in error, error
