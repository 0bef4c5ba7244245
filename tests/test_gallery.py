"""The generic gallery source: any infinite-scroll page, configured by CSS selectors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from manifest_helpers import manifest_query

from selfiescope.core.app import App
from selfiescope.core.settings import ScrapePipeline, Settings, settings_from_dict
from selfiescope.core.stats import RunStats
from selfiescope.pipelines.collecting.collect import collect
from selfiescope.testing.site import MockInstagram, TagSpec


pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def site():
    tags = {"cats": TagSpec(9, "mixed", noface=0, small_face=0), "dogs": TagSpec(5, "mixed", noface=0, small_face=0)}
    with MockInstagram(tags=tags, require_login=False, page_size=4) as s:
        yield s


def settings_for(site: MockInstagram, root: Path, **options: Any) -> Settings:
    gallery = {"url_template": site.base_url + "/explore/tags/{tag}/", "item_selector": "article",
               "image_selector": "img", "link_selector": "a[href]", "scroll_pause_s": 1.0, "max_idle_scrolls": 2,
               "requests_per_minute": 6000, "jitter_s": 0, **options}
    return settings_from_dict({"storage": {"root": str(root)}, "plugins": {"gallery": gallery}})


async def run(settings: Settings, **fields: Any) -> RunStats:
    pipeline = ScrapePipeline(kind="scrape", source="gallery", label="pets", chain=["decode", "store"], **fields)
    return await collect(App.create(settings), "gallery", pipeline=pipeline)


def recorded(root: Path) -> list[str]:
    return sorted(r["post_id"] for r in manifest_query(root, "SELECT post_id FROM images WHERE source='gallery'"))


async def test_scrolls_to_the_end_takes_the_largest_image_and_resumes(site: MockInstagram, tmp_path: Path) -> None:
    settings = settings_for(site, tmp_path)
    start = len(site.requests)
    stats = await run(settings, hashtags=["cats"], urls=[site.base_url + "/explore/tags/dogs/"])
    assert stats.status == "finished", stats.errors
    want = sorted(f"{site.base_url}/p/{p.shortcode}/" for t in ("cats", "dogs") for p in site.posts(t))
    assert recorded(tmp_path) == want  # beyond the first screen: scrolled, past the cookie pop-up
    downloads = [p for m, p, s in site.requests[start:] if p.startswith("/media/") and s == 200]
    assert len(downloads) == len(want) and all(p.endswith("_1080.jpg") for p in downloads)

    start = len(site.requests)
    again = await run(settings, hashtags=["cats"])
    assert again.seen == 0 and again.status == "finished"
    assert not [p for _, p, _ in site.requests[start:] if p.startswith("/media/")]


async def test_a_tag_without_a_url_template_is_a_clear_error(site: MockInstagram, tmp_path: Path) -> None:
    stats = await run(settings_for(site, tmp_path, url_template=None), hashtags=["cats"])
    assert stats.status == "finished_with_errors"
    assert "url_template" in stats.errors[0]


async def test_a_missing_page_is_reported(site: MockInstagram, tmp_path: Path) -> None:
    stats = await run(settings_for(site, tmp_path), hashtags=["nope"])
    assert stats.status == "finished_with_errors" and "HTTP 404" in stats.errors[0]


async def test_a_page_with_no_images_is_an_error_that_names_the_tag(tmp_path: Path) -> None:
    import functools
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    (tmp_path / "www" / "empty").mkdir(parents=True)
    (tmp_path / "www" / "empty" / "index.html").write_text("<html><body>nothing</body></html>")
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(tmp_path / "www"))
    handler.log_message = lambda *a: None  # type: ignore[attr-defined]
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        settings = settings_from_dict({"storage": {"root": str(tmp_path / "data")}, "plugins": {"gallery": {
            "url_template": f"http://127.0.0.1:{server.server_port}/{{tag}}/", "scroll_pause_s": 0.2,
            "max_idle_scrolls": 1, "requests_per_minute": 6000, "jitter_s": 0}}})
        stats = await run(settings, hashtags=["empty"])
    finally:
        server.shutdown()
        server.server_close()
    assert stats.status == "finished_with_errors" and stats.seen == 0
    assert len(stats.errors) == 1 and stats.errors[0].startswith("gallery empty: no posts found")
