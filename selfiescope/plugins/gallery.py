"""The ``gallery`` source: images from any infinite-scroll page, by CSS selectors.

This is the smallest complete web source, and the one to copy for a new site: take a
browser context from the run's pool (``browser_pool`` + ``leased_events`` give crash
recovery for free), open the page, read the items not read before, download each
image with the shared budget and retries (``core.web``), scroll, repeat until the
page stops growing. Example settings::

    [pipelines.cats]
    kind = "scrape"
    source = "gallery"
    hashtags = ["tabby", "siamese"]       # or urls = ["https://example.org/gallery"]
    label = "cat"

    [pipelines.cats.options.gallery]
    url_template = "https://example.org/tags/{tag}/"
    item_selector = "figure"
    image_selector = "img"
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any
from urllib.parse import quote, urljoin, urlparse

from pydantic import Field

from ..api import ImageEvent, Job, Options, Origin, Source, hookimpl
from ..api.web import (
    DownloadError, Lease, SiteUnreachable, TokenBucket, browser_pool, click_dialog_buttons, fetch_image,
    largest_from_srcset, leased_events, scroll_and_wait, settle_failed_download,
)

log = logging.getLogger("selfiescope.gallery")

_ITEMS = """([item, image, link]) => {
  const out = [];
  for (const el of document.querySelectorAll(item)) {
    if (el.dataset.ssSeen) continue;
    const img = el.matches(image) ? el : el.querySelector(image);
    if (!img) continue;
    el.dataset.ssSeen = '1';
    const a = link ? (el.matches(link) ? el : el.querySelector(link) || el.closest(link)) : null;
    out.push({src: img.getAttribute('src') || img.getAttribute('data-src'), srcset: img.getAttribute('srcset'),
              href: a ? a.getAttribute('href') : null, alt: img.getAttribute('alt')});
  }
  return out;
}"""


class GalleryOptions(Options):
    url_template: str | None = Field(None, description="page URL with {tag}; targets that are URLs are used as is")
    item_selector: str = Field("article", description="CSS selector of one item of the gallery")
    image_selector: str = Field("img", description="CSS selector of the image inside an item")
    link_selector: str | None = Field("a[href]", description="the item's own page (its id); None: the image URL")
    close_buttons: list[str] = Field(
        ["Decline optional cookies", "Not now", "Not Now", "Close", "Reject all"],
        description="accessible names of pop-up buttons to click",
    )
    scroll_pause_s: float = Field(2.0, gt=0)
    max_idle_scrolls: int = Field(3, ge=1)
    requests_per_minute: float = Field(60.0, gt=0)
    burst: float | None = Field(None, gt=0)
    jitter_s: float = Field(0.5, ge=0)
    max_image_bytes: int = Field(20 * 1024 * 1024, gt=0)
    retries: int = Field(3, ge=0)
    backoff_s: float = Field(1.0, ge=0)
    max_restarts: int = Field(2, ge=0)
    block_page_images: bool = Field(True, description="the page need not render images: they are downloaded")


class GallerySource(Source):
    name = "gallery"
    Options = GalleryOptions
    url_option = "url_template"
    web = True

    @classmethod
    def known_biases(cls, options: Options) -> list[str]:
        return ["Hashtag feeds show what the site ranks first (popular, recent posts): who is pictured reflects "
                "who posts under those tags, not any population.",
                "Labels come from hashtags chosen by the posters."]

    def __init__(self, options: GalleryOptions, run: Any) -> None:
        super().__init__(options, run)
        self.options: GalleryOptions = options
        self._yielded: set[str] = set()
        self._buckets: dict[str, TokenBucket] = {}

    async def open(self) -> None:
        self.pool = browser_pool(self.run)

    async def close(self) -> None:
        for bucket in self._buckets.values():
            bucket.flush()

    def page_url(self, target: str) -> str:
        if urlparse(target).scheme in ("http", "https"):
            return target
        if not self.options.url_template or "{tag}" not in self.options.url_template:
            raise ValueError(f"gallery: {target!r} is not a URL and options.url_template has no {{tag}}")
        return self.options.url_template.replace("{tag}", quote(target))

    def bucket(self, url: str) -> TokenBucket:
        host = urlparse(url).netloc
        if host not in self._buckets:  # one budget per site
            self._buckets[host] = TokenBucket(
                self.run.manifest, f"gallery@{host}", self.options.requests_per_minute,
                burst=self.options.burst, jitter_s=self.options.jitter_s,
            )
        return self._buckets[host]

    async def events(self, job: Job) -> AsyncIterator[ImageEvent]:
        url = self.page_url(job.target)
        events = leased_events(
            self.pool, lambda lease: self._scrape(lease, job, url),
            block=["image", "media", "font"] if self.options.block_page_images else [],
            max_restarts=self.options.max_restarts, what=f"gallery {job.target}",
        )
        async with aclosing(events):  # the engine may stop early (limit): close the page at once
            async for event in events:
                yield event

    async def _scrape(self, lease: Lease, job: Job, url: str) -> AsyncIterator[ImageEvent]:
        bucket = self.bucket(url)
        await bucket.take()
        response = await lease.goto(url)
        if response is not None and response.status >= 400:
            raise LookupError(f"gallery {job.target}: {url} answered HTTP {response.status}")
        page = await lease.page()
        o = self.options
        idle = 0
        while True:
            await click_dialog_buttons(page, o.close_buttons)
            for item in await page.evaluate(_ITEMS, [o.item_selector, o.image_selector, o.link_selector]):
                event = await self._fetch_item(lease, bucket, item, job, page.url)
                if event is not None:
                    yield event
            await bucket.take()
            if await scroll_and_wait(page, o.scroll_pause_s):
                idle = 0
            else:
                idle += 1
                if idle >= o.max_idle_scrolls:
                    return

    async def _fetch_item(self, lease: Lease, bucket: TokenBucket, item: dict[str, Any], job: Job,
                          base: str) -> ImageEvent | None:
        image, _ = largest_from_srcset(item.get("srcset"), item.get("src"))
        if not image:
            return None
        image = urljoin(base, image)
        link = urljoin(base, item["href"]) if item.get("href") else None
        post_id = link or image
        self.found(job)
        if post_id in self._yielded or await asyncio.to_thread(self.run.manifest.post_seen, self.name, post_id):
            return None
        try:
            fetched = await fetch_image(
                lease.request, image, bucket=bucket, max_bytes=self.options.max_image_bytes,
                retries=self.options.retries, backoff_s=self.options.backoff_s,
                timeout_s=self.run.settings.browser.timeout_s,
            )
        except DownloadError as exc:
            log.warning("gallery %s: %s skipped: %s", job.target, post_id.split("?")[0], exc)
            if not exc.transient:
                self._yielded.add(post_id)
            await settle_failed_download(self.run, self.name, job, post_id, exc)
            if exc.unreachable:  # the site is gone: every other item would fail the same way
                raise SiteUnreachable(image, exc.reason) from None
            return None
        self._yielded.add(post_id)
        origin = Origin(source=self.name, job=job.target, post_id=post_id, post_url=link, image_url=image,
                        extra={"alt": item.get("alt"), "content_type": fetched.content_type})
        return ImageEvent(origin=origin, label=job.label, data=fetched.data)


@hookimpl
def selfiescope_sources():
    return [GallerySource]
