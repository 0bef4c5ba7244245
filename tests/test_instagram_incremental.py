"""Incremental runs (``stop_after_known``, ``since``), driving a real Chromium against the local site."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timezone
from pathlib import Path

import pytest
from hypothesis import given, strategies as st
from typer.testing import CliRunner

from selfiescope.core.app import App
from selfiescope.cli import app
from selfiescope.core.manifest import Manifest
from selfiescope.core.settings import ScrapePipeline, SettingsError, settings_from_dict
from selfiescope.pipelines.collecting.collect import collect
from selfiescope.plugins.instagram.feed import taken_at_from_tile
from selfiescope.plugins.instagram.incremental import OLDER_IN_A_ROW, Incremental
from selfiescope.testing.chaos import Chaos
from selfiescope.testing.site import MockInstagram, TagSpec

from test_instagram import media_requests, recorded, seed_session, settings_for

pytestmark = pytest.mark.browser


TAG = "gamma"


@pytest.fixture(scope="module")
def site():
    # client_feed: the page loads even its first grid as JSON, as instagram.com does: every post has its date
    with MockInstagram(tags={TAG: TagSpec(11, "selfie", noface=0, small_face=0)}, page_size=4,
                       chaos=Chaos(client_feed=True)) as s:
        yield s


@pytest.fixture(scope="module")
def grid_site():
    # the first page's posts are tiles in the tag page's HTML, with no date on them; later pages are JSON
    with MockInstagram(tags={TAG: TagSpec(11, "selfie", noface=0, small_face=0)}, page_size=4) as s:
        yield s


@pytest.fixture(scope="module")
def dated_grid_site():
    with MockInstagram(tags={TAG: TagSpec(11, "selfie", noface=0, small_face=0)}, page_size=4,
                       chaos=Chaos(tile_dates=True)) as s:
        yield s


def stored_dates(root: Path) -> dict[str, float | None]:
    m = Manifest.at_root(root)
    try:
        return {r["post_id"]: r["taken_at"] for r in m.query("SELECT post_id, taken_at FROM images WHERE source='instagram'")}
    finally:
        m.close()


def known(site: MockInstagram, root: Path, codes: list[str]) -> None:
    """Posts an earlier run took (marked done in the manifest)."""
    m = Manifest.at_root(root)
    try:
        for code in codes:
            m.mark_post("instagram", code, TAG, "x")
    finally:
        m.close()


async def scrape(root: Path, site: MockInstagram, **fields: object):
    pipeline = ScrapePipeline(kind="scrape", source="instagram", hashtags=[TAG], label="x",
                              chain=["decode", "store"], **fields)
    return await collect(App.create(settings_for(site, root)), "scrape", pipeline=pipeline)


def logins(site: MockInstagram, start: int) -> int:
    return sum(1 for m, p, _ in site.requests[start:] if m == "POST" and p.startswith("/accounts/login"))


# --- stop_after_known -----------------------------------------------------------------------------
async def test_stop_after_known_ends_the_tag_and_fetches_nothing_past_the_known_run(
    site: MockInstagram, tmp_path: Path
) -> None:
    posts = [p.shortcode for p in site.posts(TAG)]
    seed_session(site, tmp_path)
    known(site, tmp_path, posts[3:7])  # yesterday's run took these; 3 new posts came on top since
    start = len(site.requests)
    stats = await scrape(tmp_path, site, stop_after_known=2)

    assert stats.ok and stats.status == "finished", stats.errors
    assert sorted(code for _, code in recorded(tmp_path)) == sorted(posts[:3])  # the new ones, and only those
    assert stats.extra["stopped"] == {TAG: "stopped after 2 known posts in a row"}
    fetched = "".join(media_requests(site, start))
    older = [p for p in site.posts(TAG)[7:]]
    assert not any(f"/media/{p.id}_" in fetched for p in older)  # never fetched past the known run


async def test_without_stop_after_known_every_new_post_is_fetched(site: MockInstagram, tmp_path: Path) -> None:
    posts = [p.shortcode for p in site.posts(TAG)]
    seed_session(site, tmp_path)
    known(site, tmp_path, posts[3:7])
    stats = await scrape(tmp_path, site)
    assert stats.ok and "stopped" not in stats.extra
    assert sorted(code for _, code in recorded(tmp_path)) == sorted(posts[:3] + posts[7:])


# --- since -----------------------------------------------------------------------------------------
async def test_since_fetches_no_older_post_and_the_job_is_done(site: MockInstagram, tmp_path: Path) -> None:
    feed = site.posts(TAG)
    since = datetime.fromtimestamp(feed[4].taken_at, tz=timezone.utc)  # posts 0..4 are this new or newer
    seed_session(site, tmp_path)
    start = len(site.requests)
    stats = await scrape(tmp_path, site, since=since.isoformat())

    assert stats.ok and stats.status == "finished", stats.errors
    assert sorted(code for _, code in recorded(tmp_path)) == sorted(p.shortcode for p in feed[:5])
    assert stats.extra["stopped"] == {TAG: f"reached posts older than {since.isoformat()}"}
    fetched = "".join(media_requests(site, start))
    assert not any(f"/media/{p.id}_" in fetched for p in feed[5:])
    assert logins(site, start) == 0


async def test_since_fetches_no_grid_post_without_a_date_and_counts_them(grid_site: MockInstagram, tmp_path: Path) -> None:
    feed = grid_site.posts(TAG)
    since = datetime.fromtimestamp(max(p.taken_at for p in feed) + 86400, tz=timezone.utc)
    seed_session(grid_site, tmp_path)
    start = len(grid_site.requests)
    stats = await scrape(tmp_path, grid_site, since=since.isoformat())

    assert stats.ok and stats.status == "finished", stats.errors
    assert recorded(tmp_path) == []
    assert stats.extra["stopped"] == {TAG: f"reached posts older than {since.isoformat()}; 4 posts without a date "
                                           "were not fetched: --since cannot tell their age"}
    assert media_requests(grid_site, start) == []


async def test_since_between_keeps_only_newer_posts_from_a_grid_without_dates(
    grid_site: MockInstagram, tmp_path: Path
) -> None:
    feed = grid_site.posts(TAG)
    since = datetime.fromtimestamp(feed[5].taken_at, tz=timezone.utc)  # page 2 (JSON) holds posts 4..7
    seed_session(grid_site, tmp_path)
    stats = await scrape(tmp_path, grid_site, since=since.isoformat())

    assert stats.ok, stats.errors
    dates = stored_dates(tmp_path)
    assert sorted(dates) == sorted(p.shortcode for p in feed[4:6])
    assert all(when is not None and when >= since.timestamp() for when in dates.values())


async def test_a_date_on_a_grid_tile_is_read_recorded_and_honoured(dated_grid_site: MockInstagram, tmp_path: Path) -> None:
    feed = dated_grid_site.posts(TAG)
    since = datetime.fromtimestamp(feed[1].taken_at, tz=timezone.utc)  # inside the HTML grid (posts 0..3)
    seed_session(dated_grid_site, tmp_path)
    stats = await scrape(tmp_path, dated_grid_site, since=since.isoformat())

    assert stats.ok and stats.status == "finished", stats.errors
    assert stored_dates(tmp_path) == {p.shortcode: float(p.taken_at) for p in feed[:2]}
    assert stats.extra["stopped"] == {TAG: f"reached posts older than {since.isoformat()}"}


def test_taken_at_from_tile() -> None:
    assert taken_at_from_tile("1766448000", None) == 1766448000
    assert taken_at_from_tile("2025-12-23T00:00:00.000Z", None) == 1766448000
    assert taken_at_from_tile("2025-12-23T01:00:00+01:00", None) == 1766448000
    assert taken_at_from_tile("2025-12-23T00:00:00", None) == 1766448000  # no zone: UTC
    assert taken_at_from_tile(None, "Photo by jane.doe on December 23, 2025. May be an image of 1 person") == (
        1766448000 - 14 * 3600)  # a day alone: its first moment anywhere, so that since never keeps an older post
    assert taken_at_from_tile("soon", "Photo by jane.doe") is None
    assert taken_at_from_tile(None, "Photo by jane.doe on Smarch 40, 2025") is None


def test_cli_since_and_stop_after_known(site: MockInstagram, tmp_path: Path) -> None:
    settings_file = tmp_path / "settings.toml"
    settings_file.write_text(
        f'[storage]\nroot = "{tmp_path / "data"}"\n[browser]\nsession_file = "{tmp_path / "data" / "session.json"}"\n'
        "[plugins.instagram]\nscroll_pause_s = 1.0\nmax_idle_scrolls = 2\nrequests_per_minute = 6000\njitter_s = 0\n"
    )
    (tmp_path / "data").mkdir()
    seed_session(site, tmp_path / "data")
    all_dates = sorted(p.taken_at for p in site.posts(TAG))
    future = datetime.fromtimestamp(all_dates[-1] + 86400 * 2, tz=timezone.utc).date().isoformat()
    runner = CliRunner()
    base = ["scrape", TAG, "--label", "selfie", "--chain", "decode,store", "--base-url", site.base_url,
            "-s", str(settings_file)]
    result = runner.invoke(app, [*base, "--since", future, "--json"])
    assert result.exit_code == 0, result.output  # nothing new is not a failure: the job is done
    data = json.loads(result.stdout)
    assert data["accepted"] == 0 and data["stopped"] == {TAG: f"reached posts older than {future}"}

    text = runner.invoke(app, [*base, "--stop-after-known", "3"])  # nothing stored yet: the whole feed
    assert text.exit_code == 0, text.output
    assert f"{TAG}: reached posts older than" not in text.output
    text = runner.invoke(app, [*base, "--stop-after-known", "3"])  # the run before took them all
    assert text.exit_code == 0 and f"{TAG}: stopped after 3 known posts in a row" in text.output, text.output

    bad = runner.invoke(app, [*base, "--since", "yesterday"])
    assert bad.exit_code == 2 and "since" in bad.output
    bad = runner.invoke(app, [*base, "--stop-after-known", "0"])
    assert bad.exit_code == 2 and "stop_after_known" in bad.output


# --- settings -----------------------------------------------------------------------------------------
def test_pipeline_settings_are_validated_and_checked(tmp_path: Path) -> None:
    s = settings_from_dict({"pipelines": {"daily": {
        "kind": "scrape", "source": "instagram", "hashtags": ["a"], "label": "selfie",
        "stop_after_known": 20, "since": "2026-01-01"}}})
    p = s.pipelines["daily"]
    assert p.stop_after_known == 20 and p.since == datetime(2026, 1, 1, tzinfo=timezone.utc)
    with pytest.raises(SettingsError) as exc:
        settings_from_dict({"pipelines": {"daily": {
            "kind": "scrape", "source": "instagram", "hashtags": ["a"], "label": "selfie", "since": "soon"}}})
    assert "pipelines.daily.since" in str(exc.value.problems)

    settings_file = tmp_path / "settings.toml"
    settings_file.write_text(  # a TOML date, unquoted, is taken too; a source that cannot stop early is refused
        '[pipelines.daily]\nkind = "scrape"\nsource = "instagram"\nhashtags = ["a"]\nlabel = "selfie"\n'
        'since = 2026-01-01\nstop_after_known = 5\n'
        '[pipelines.web]\nkind = "scrape"\nsource = "gallery"\nurls = ["http://x/{tag}"]\nhashtags = ["a"]\n'
        'label = "selfie"\nstop_after_known = 5\n'
    )
    result = CliRunner().invoke(app, ["settings", "check", "-s", str(settings_file), "--json"])
    assert result.exit_code == 2
    problems = json.loads(result.stdout)["problems"]
    assert len(problems) == 1 and problems[0].startswith("pipelines.web.stop_after_known: the gallery source")


# --- the rule, as a property ----------------------------------------------------------------------------
def fetched_by(rule: Incremental, posts: list[tuple[str, dict, bool]]) -> list[str]:
    truth = {code: is_known for code, _, is_known in posts}

    async def is_known(code: str) -> bool:
        return truth[code]

    async def run() -> list[str]:
        return [code for code, extra, _ in posts if not await rule.skip(extra, code, is_known)]

    return asyncio.run(run())


@given(st.lists(st.booleans(), max_size=40), st.integers(1, 6))
def test_stops_exactly_at_the_nth_known_post_in_a_row(flags: list[bool], n: int) -> None:
    rule = Incremental(n, None)
    posts = [(f"p{i}", {}, flag) for i, flag in enumerate(flags)]
    expected, run = [], 0
    for code, _, flag in posts:
        run = run + 1 if flag else 0
        if not flag:
            expected.append(code)
        if run >= n:
            break
    assert fetched_by(rule, posts) == expected  # every new post before the stop, no known one, none after
    assert (rule.reason is not None) == (run >= n)


@given(st.lists(st.one_of(st.none(), st.integers(0, 2_000_000_000)), max_size=30))
def test_since_never_fetches_an_older_post(dates: list[int | None]) -> None:
    cut = 1_000_000_000
    rule = Incremental(None, datetime.fromtimestamp(cut, tz=timezone.utc))
    posts = [(f"p{i}", {"taken_at": when}, False) for i, when in enumerate(dates)]
    expected, run = [], 0
    for code, extra, _ in posts:
        if extra["taken_at"] is None:
            continue  # of unknown age: not fetched, and the older run goes on
        old = extra["taken_at"] < cut
        run = run + 1 if old else 0
        if not old:
            expected.append(code)
        if run >= OLDER_IN_A_ROW:
            break
    assert fetched_by(rule, posts) == expected
    assert (rule.reason is not None) == (run >= OLDER_IN_A_ROW)
