"""A post's current data, as its page gets it: fresh signed image URLs.

The web app draws a post page from JSON it fetches after the HTML (the HTML has no image),
so the post is read from the JSON answers the page receives (any answer holding a media object
with this shortcode), and only from the drawn page (``og:image``, else the widest ``<img>``)
when no such answer comes: a server-rendered page.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any
from urllib.parse import urlparse

from ...api.web import within
from .account import SessionEnded
from .errors import explain
from .feed import Post, find_medias, image_url_from_post_page, post_from_media

log = logging.getLogger("selfiescope.instagram")

JSON_GRACE_S = 1.5  # how long the drawn page waits for the JSON it may still be fetching


async def read_post_page(context: Any, base_url: str, shortcode: str, timeout_s: float) -> Post | None:
    """The post's data from its page in a new tab of ``context``; None when the page has none.

    :class:`SessionEnded` when the page sends us to the login page.
    """
    from playwright.async_api import Error as PlaywrightError

    found: asyncio.Future[Post] = asyncio.get_running_loop().create_future()
    tasks: set[asyncio.Task[None]] = set()

    async def read(response: Any) -> None:
        try:
            data = await within(timeout_s, response.json(), "reading a post's data")
        except (PlaywrightError, ValueError, TimeoutError):
            return  # not JSON after all, or the page went away
        for media in find_medias(data):
            post = post_from_media(media)
            if post is not None and post.shortcode == shortcode and not found.done():
                found.set_result(post)

    def on_response(response: Any) -> None:
        if "json" in (response.headers.get("content-type") or "") and response.status == 200:
            task = asyncio.ensure_future(read(response))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    page = await within(timeout_s, context.new_page(), "opening a post page")
    page.on("response", on_response)
    try:
        response = await within(timeout_s + 5, page.goto(f"{base_url}/p/{shortcode}/", wait_until="domcontentloaded"),
                                "loading a post page")
        if urlparse(page.url).path.startswith("/accounts/login"):
            raise SessionEnded("the session ended (a post page went to the login page)")
        if response is not None and response.status >= 400:
            return None
        started = deadline = time.monotonic()
        deadline += timeout_s
        while time.monotonic() < deadline:
            if found.done():
                return found.result()
            if urlparse(page.url).path.startswith("/accounts/login"):
                raise SessionEnded("the session ended (a post page went to the login page)")
            if time.monotonic() - started >= JSON_GRACE_S:
                html = await within(timeout_s, page.content(), "reading a post page")
                if url := image_url_from_post_page(html, base_url):
                    return Post(shortcode, url)
            await asyncio.sleep(0.1)
        return None
    finally:
        page.remove_listener("response", on_response)
        for task in tasks:
            task.cancel()
        try:
            await within(timeout_s, page.close(), "closing a post page")
        except (PlaywrightError, TimeoutError):
            pass  # the context may be gone already


async def fresh_image_url(context: Any, base_url: str, shortcode: str, timeout_s: float) -> str | None:
    """The post's image URL as its page gets it now (a freshly signed one), or None."""
    from playwright.async_api import Error as PlaywrightError

    try:
        page_post = await read_post_page(context, base_url, shortcode, timeout_s)
    except (PlaywrightError, TimeoutError) as exc:  # no fresh URL: the post is reported, not lost
        log.info("post page of %s unreadable: %s", shortcode, explain(exc))
        return None
    return page_post.image_url if page_post is not None else None
