"""Tombstones against a real scrape: a real Chromium on the local Instagram-like site.

A forgotten post, owner or photo is never downloaded or stored again, even when its
posts_seen row is gone and even when the same photo comes back as another user's repost.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from selfiescope.core.app import App
from selfiescope.cli import app
from selfiescope.core.browser import save_session
from selfiescope.core.manifest import Manifest
from selfiescope.core.privacy import KEY_FILE
from selfiescope.core.settings import ScrapePipeline, Settings, settings_from_dict
from selfiescope.core.stats import RunStats
from selfiescope.pipelines.collecting.collect import collect
from selfiescope.testing.site import MockInstagram, TagSpec


pytestmark = pytest.mark.browser
runner = CliRunner()
# gamma's first face photo is reposted (same bytes, another post by another user) in delta.
TAGS = {"gamma": TagSpec(8, "selfie", noface=0, small_face=0, share_with=("delta",)),
        "delta": TagSpec(3, "portrait", noface=0, small_face=0)}


@pytest.fixture(scope="module")
def site():
    with MockInstagram(tags=TAGS, page_size=4) as s:
        yield s


def settings_for(site: MockInstagram, root: Path) -> Settings:
    ig = {"base_url": site.base_url, "scroll_pause_s": 1.0, "max_idle_scrolls": 2, "requests_per_minute": 6000,
          "jitter_s": 0, "backoff_s": 0.05}
    return settings_from_dict({"storage": {"root": str(root)}, "browser": {"session_file": str(root.parent / "session.json")},
                               "engine": {"workers": 2}, "plugins": {"instagram": ig}})


def scrape(settings: Settings, tag: str) -> RunStats:
    pipeline = ScrapePipeline(kind="scrape", source="instagram", hashtags=[tag], label="x", chain=["decode", "store"])
    return asyncio.run(collect(App.create(settings), "scrape", pipeline=pipeline))


def media_fetched(site: MockInstagram, start: int) -> set[str]:
    """Post ids whose image was downloaded since ``start``."""
    return {p.split("/")[-1].rsplit("_", 1)[0] for m, p, s in site.requests[start:] if p.startswith("/media/") and s == 200}


def post_ids(root: Path) -> set[str]:
    m = Manifest.at_root(root)
    try:
        return {r[0] for r in m.query("SELECT post_id FROM images")}
    finally:
        m.close()


def test_forgotten_posts_owners_and_photos_are_not_scraped_again(site: MockInstagram, tmp_path: Path) -> None:
    root = tmp_path / "data"
    cookie = {"name": "sessionid", "value": site.login_session(), "domain": "127.0.0.1", "path": "/",
              "expires": -1, "httpOnly": True, "secure": False, "sameSite": "Lax"}
    save_session(tmp_path / "session.json", {"cookies": [cookie], "origins": []})
    settings = settings_for(site, root)
    gamma = site.posts("gamma")
    first = scrape(settings, "gamma")
    assert first.status == "finished" and first.accepted == len(gamma), first.as_dict()
    assert post_ids(root) == {p.shortcode for p in gamma}

    # Three requests: a post by URL, an owner known from the page's JSON, the photo that delta reposts.
    repost = next(p for p in site.posts("delta") if p.duplicate_of)
    original = site.post(repost.duplicate_of)
    m = Manifest.at_root(root)
    with_owner = {r[0] for r in m.query("SELECT post_id FROM images WHERE owner IS NOT NULL")}
    original_id = m.query("SELECT id FROM images WHERE post_id=?", (original.shortcode,))[0][0]
    m.close()
    by_owner = next(p for p in gamma if p.shortcode in with_owner and p is not original)
    by_url = next(p for p in gamma if p not in (original, by_owner))
    toml = tmp_path / "settings.toml"
    toml.write_text(f'[storage]\nroot = "{root}"\n')
    result = runner.invoke(app, ["forget", "--settings", str(toml), "--yes", "--json",
                                 "--post", f"{site.base_url}/p/{by_url.shortcode}/",
                                 "--owner", by_owner.username.upper(), "--image", original_id])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["removed"]["files"] == 3
    gone = {by_url.shortcode, by_owner.shortcode, original.shortcode}
    assert post_ids(root) == {p.shortcode for p in gamma} - gone

    # Scrape the same tag again: the forgotten posts' posts_seen rows are gone, yet nothing is downloaded.
    start = len(site.requests)
    again = scrape(settings, "gamma")
    assert again.status == "finished" and again.seen == 0, again.as_dict()
    assert media_fetched(site, start) == set()
    assert post_ids(root) == {p.shortcode for p in gamma} - gone

    # delta: the repost is another post by another user with the forgotten photo's bytes: dropped, unrecorded.
    start = len(site.requests)
    delta = scrape(settings, "delta")
    assert delta.status == "finished", delta.as_dict()
    assert delta.rejected_by_reason == {"forgotten": 1} and delta.accepted == len(site.posts("delta")) - 1
    assert repost.id in media_fetched(site, start)  # it had to be fetched to be recognised
    assert repost.shortcode not in post_ids(root)
    # Nothing in the dataset names the forgotten: not the owner, not the posts; the key stays private.
    blob = b"".join(p.read_bytes() for p in root.rglob("*") if p.is_file() and p.name != KEY_FILE)
    for text in (by_owner.username, by_url.shortcode, original.shortcode, original.caption):
        assert text.encode() not in blob
    assert (root / KEY_FILE).stat().st_mode & 0o777 == 0o600


def test_every_scraped_post_has_its_owner_recorded(site: MockInstagram, tmp_path: Path) -> None:
    """Posts read from the grid's HTML carry their owner too (the tile's alt text), so
    `forget --owner` finds all of an owner's posts, and says none is left without an owner."""
    root = tmp_path / "data"
    cookie = {"name": "sessionid", "value": site.login_session(), "domain": "127.0.0.1", "path": "/",
              "expires": -1, "httpOnly": True, "secure": False, "sameSite": "Lax"}
    save_session(tmp_path / "session.json", {"cookies": [cookie], "origins": []})
    stats = scrape(settings_for(site, root), "gamma")
    assert stats.status == "finished" and stats.accepted == len(site.posts("gamma")), stats.as_dict()
    m = Manifest.at_root(root)
    try:
        missing = m.query("SELECT post_id FROM images WHERE owner IS NULL")
        owners = {r[0]: r[1] for r in m.query("SELECT post_id, owner FROM images")}
        assert not missing, f"{len(missing)} of {len(owners)} scraped posts have no owner"
        for post in site.posts("gamma"):
            assert owners[post.shortcode] == m.keyring.owner(post.username)
    finally:
        m.close()
    toml = tmp_path / "settings.toml"
    toml.write_text(f'[storage]\nroot = "{root}"\n')
    someone = site.posts("gamma")[1]
    result = runner.invoke(app, ["forget", "--settings", str(toml), "--yes", "--json", "--owner", someone.username])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["stored_without_owner"] == 0
    assert report["matched"]["images"] == sum(p.username == someone.username for p in site.posts("gamma"))
