"""Reading a hashtag feed: posts from the JSON the page loads and from its DOM.

Only the feed endpoints' bodies are read (:func:`is_feed_url`), each with a deadline:
the page also sends beacons, logging calls and fetches it cancels, whose bodies may
never arrive, and waiting for them is how a run hangs.
"""

from __future__ import annotations

import asyncio
import html
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any
from urllib.parse import parse_qsl, urlencode, urljoin, urlparse

from ...api.web import Deadline, largest_from_srcset, parse_retry_after, within

log = logging.getLogger("selfiescope.instagram")

SHORTCODE = re.compile(r"/(?:p|reel)/([A-Za-z0-9_-]+)")
# The endpoints that carry a hashtag's posts (the web app has used each of these).
FEED_PATHS = (
    re.compile(r"^/api/v1/tags/[^/]+/sections/?$"),
    re.compile(r"^/api/v1/tags/web_info/?$"),
    re.compile(r"^/api/v1/feed/tag/[^/]+/?$"),
    re.compile(r"^/graphql/query/?$"),
    re.compile(r"^/api/graphql/?$"),
)
_DOM_POSTS = """() => {
  const out = [];
  for (const a of document.querySelectorAll('a[href*="/p/"], a[href*="/reel/"]')) {
    if (a.dataset.ssSeen) continue;
    const img = a.querySelector('img');
    if (!img) continue;
    a.dataset.ssSeen = '1';
    const tile = a.closest('article, li') || a;
    const time = a.querySelector('time[datetime]') || tile.querySelector('time[datetime]');
    out.push({href: a.getAttribute('href'), src: img.getAttribute('src'),
              srcset: img.getAttribute('srcset'), alt: img.getAttribute('alt'),
              time: time ? time.getAttribute('datetime') : null});
  }
  return out;
}"""
_OG_IMAGE = re.compile(
    r"""<meta[^>]+(?:property|name)=["']og:image["'][^>]*content=["']([^"']+)["']"""
    r"""|<meta[^>]+content=["']([^"']+)["'][^>]*(?:property|name)=["']og:image["']""",
    re.IGNORECASE,
)
_IMG = re.compile(r"<img\b[^>]*>", re.IGNORECASE)
# A grid tile's alt text names its owner ("Photo by jane.doe", "Photo shared by jane.doe on
# March 3, 2024 ..."); only a user-name-shaped name is taken (a display name such as "Jane Doe"
# is not the user name `forget --owner` is given, and guessing one would misattribute).
_ALT_OWNER = re.compile(r"^\s*Photo (?:shared )?by @?(?P<name>.+?)(?:\s+on\s.*|,.*|\.\s.*|\.)?$", re.IGNORECASE | re.DOTALL)
# "Photo by jane.doe on March 3, 2024. May be an image of ...": the day a grid tile's alt gives.
_ALT_DATE = re.compile(r"\son\s+(?P<month>[A-Z][a-z]+)\s+(?P<day>\d{1,2}),\s*(?P<year>\d{4})\b")
_MONTHS = {m: i for i, m in enumerate(("January", "February", "March", "April", "May", "June", "July", "August",
                                       "September", "October", "November", "December"), 1)}
_USERNAME = re.compile(r"^[A-Za-z0-9._]{1,30}$")
_ATTR = re.compile(r"""(src|srcset)=["']([^"']+)["']""", re.IGNORECASE)


def is_feed_url(url: str) -> bool:
    return any(p.match(urlparse(url).path) for p in FEED_PATHS)


def request_cursor(url: str, post_data: str | None) -> str | None:
    """The ``max_id`` a feed request asks for (query or form), or None (the first page)."""
    for query in (urlparse(url).query, post_data or ""):
        if value := dict(parse_qsl(query)).get("max_id"):
            return value
    return None


def with_cursor(url: str, post_data: str | None, cursor: str) -> tuple[str, str | None]:
    """The same feed request asking for ``cursor`` instead (wherever it carries ``max_id``)."""
    parts = urlparse(url)
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    form = dict(parse_qsl(post_data, keep_blank_values=True)) if post_data and "=" in post_data else None
    if form is not None and ("max_id" in form or "max_id" not in query):
        form["max_id"] = cursor
        return url, urlencode(form)
    query["max_id"] = cursor
    return parts._replace(query=urlencode(query)).geturl(), post_data


@dataclass
class FeedPage:
    """One feed answer read whole: the cursor asked for, the posts it held, the cursor it gave."""

    asked: str | None
    codes: list[str]
    next_cursor: str | None


@dataclass
class Post:
    shortcode: str
    image_url: str
    width: int | None = None
    height: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def post_from_media(media: dict[str, Any]) -> Post | None:
    """A post from one ``media`` object of Instagram's JSON (largest candidate)."""
    code = media.get("code") or media.get("shortcode")
    candidates = (media.get("image_versions2") or {}).get("candidates") or []
    if not code or not candidates:
        return None
    best = max(candidates, key=lambda c: (c.get("width") or 0) * (c.get("height") or 0))
    caption = media.get("caption") or {}
    user = media.get("user") or media.get("owner") or {}
    extra = {
        "pk": str(media.get("pk") or media.get("id") or "").split("_")[0] or None,
        "caption": caption.get("text") if isinstance(caption, dict) else caption,
        "owner": user.get("username"),
        "taken_at": media.get("taken_at"),
        "width": media.get("original_width") or best.get("width"),
        "height": media.get("original_height") or best.get("height"),
    }
    return Post(code, best["url"], best.get("width"), best.get("height"), extra)


def owner_from_alt(alt: str | None) -> str | None:
    """The owner's user name from a grid tile's alt text, when it gives one."""
    match = _ALT_OWNER.match(alt or "")
    name = match.group("name") if match else ""
    return name if _USERNAME.match(name) and not name.endswith(".") else None


def taken_at_from_tile(datetime_attr: str | None, alt: str | None) -> int | None:
    """When a grid post was taken (Unix seconds), from its tile: a ``<time datetime>`` (Unix
    seconds or ISO 8601; a zoneless ISO time is UTC), else the day its alt text names ("... on
    March 3, 2024"), taken as the first moment that day is anywhere (00:00 at UTC+14: the alt
    names the viewer's day), so that ``since`` never keeps a post older than it (a post of the
    ``since`` day itself may be left out), else None."""
    value = (datetime_attr or "").strip()
    if re.fullmatch(r"\d{9,11}(?:\.\d+)?", value):
        return int(float(value))
    if value:
        try:
            when = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            when = None
        if when is not None:
            return int((when if when.tzinfo else when.replace(tzinfo=timezone.utc)).timestamp())
    match = _ALT_DATE.search(alt or "")
    if match and match.group("month") in _MONTHS:
        try:
            day = datetime(int(match.group("year")), _MONTHS[match.group("month")], int(match.group("day")),
                           tzinfo=timezone.utc)
        except ValueError:
            return None
        return int(day.timestamp()) - 14 * 3600
    return None


def _dom_extra(alt: str | None, datetime_attr: str | None = None) -> dict[str, Any]:
    """A grid post's data: its date when the tile shows one (:func:`taken_at_from_tile`), its
    owner from the alt text (the alt then says nothing more, and goes: it would carry the name
    past the pseudonymising gate), else the alt as it is."""
    owner = owner_from_alt(alt)
    extra: dict[str, Any] = {"owner": owner} if owner else {"alt": alt}
    if (when := taken_at_from_tile(datetime_attr, alt)) is not None:
        extra["taken_at"] = when
    return extra


def feed_paging(data: Any) -> list[dict[str, Any]]:
    """The paging objects of a feed answer: every object with ``more_available`` (and
    ``next_max_id``...), at the top level or nested (the web_info answer has one under
    ``data.top`` and one under ``data.recent``), outermost first."""
    found: list[dict[str, Any]] = []
    queue: list[Any] = [data]
    while queue:
        node = queue.pop(0)
        if isinstance(node, dict):
            if "more_available" in node:
                found.append(node)
            queue.extend(v for v in node.values() if isinstance(v, dict | list))
        elif isinstance(node, list):
            queue.extend(v for v in node if isinstance(v, dict | list))
    return found


def find_medias(data: Any) -> list[dict[str, Any]]:
    """Every object that looks like a post (has ``image_versions2``), wherever it is nested."""
    found: list[dict[str, Any]] = []
    stack = [data]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if "image_versions2" in node:
                found.append(node)
                continue
            stack.extend(reversed(list(node.values())))
        elif isinstance(node, list):
            stack.extend(reversed(node))
    return found


def image_url_from_post_page(text: str, base_url: str) -> str | None:
    """The image of a post page: ``og:image``, else the widest ``<img>`` candidate."""
    if match := _OG_IMAGE.search(text):
        return urljoin(base_url + "/", html.unescape(match.group(1) or match.group(2)))
    best: tuple[int, str] | None = None
    for tag in _IMG.findall(text):
        attrs = {k.lower(): html.unescape(v) for k, v in _ATTR.findall(tag)}
        url, width = largest_from_srcset(attrs.get("srcset"), attrs.get("src"))
        if url and (best is None or (width or 0) > best[0]):
            best = (width or 0, url)
    return urljoin(base_url + "/", best[1]) if best else None


class FeedReader:
    """Collects posts from one tag page: feed JSON as it arrives, and the DOM."""

    def __init__(self, events_from: Any, base_url: str, *, page: Any = None, timeout_s: float = 30.0,
                 on_answer: Callable[[Any, Any], None] | None = None) -> None:
        self.events_from = events_from  # a page, or a job's browser context (all its pages)
        self.page = page  # the page whose DOM is read
        self.base_url = base_url
        self.timeout_s = timeout_s
        self.json_posts: dict[str, Post] = {}
        self.more_available: bool | None = None
        self.pages_read = 0  # feed answers read whole (200, JSON)
        self.unread = 0  # feed answers whose body did not arrive in time
        self.retry_after: float | None = None
        self.login_lost = False
        self.challenged = False
        self.pages: list[FeedPage] = []  # in the order read, across reloads
        self.resume_cursor: str | None = None  # the next feed request asks for this one instead
        self.on_answer = on_answer  # called with (response, JSON or None) for every feed answer read
        self._tasks: set[asyncio.Task[None]] = set()
        events_from.on("response", self._on_response)

    async def resume_on_reload(self) -> None:
        """Route the page's feed requests so that, after a reload, the first one asks for
        :attr:`resume_cursor`: the feed goes on where it stopped instead of from the top."""
        await self.events_from.route(is_feed_url, self._route)

    async def _route(self, route: Any) -> None:
        cursor, self.resume_cursor = self.resume_cursor, None
        request = route.request
        if cursor is None or request_cursor(request.url, request.post_data) == cursor:
            await route.fallback()
            return
        url, post_data = with_cursor(request.url, request.post_data, cursor)
        log.info("feed resumes where it stopped (cursor %s)", cursor[:12])
        await route.fallback(url=url, post_data=post_data)

    def resume_point(self, handled: set[str]) -> str | None:
        """Where to resume after a reload: the cursor of the first page read with a post not
        ``handled``, else the cursor after the last page; None (from the top) when none was read."""
        for page in self.pages:
            if any(code not in handled for code in page.codes):
                return page.asked
        return self.pages[-1].next_cursor if self.pages else None

    def reset(self) -> None:
        """Forget the page's state before it is (re)loaded; posts already returned stay returned."""
        for task in self._tasks:
            task.cancel()
        self.json_posts.clear()
        self.more_available = None
        self.unread = 0
        self.retry_after = None
        self.login_lost = False
        self.challenged = False

    def detach(self) -> None:
        self.events_from.remove_listener("response", self._on_response)
        for task in self._tasks:
            task.cancel()

    def _on_response(self, response: Any) -> None:
        if not is_feed_url(response.url):
            return  # beacons, logging, media: their bodies are none of our business
        task = asyncio.ensure_future(self._read(response))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _read(self, response: Any) -> None:
        if response.status == 429:
            # the headers Playwright already has: asking the browser again leaves a task that fails unread
            # ("Task exception was never retrieved") when the page closes first
            self.retry_after = parse_retry_after(response.headers.get("retry-after"), 30.0)
            if self.on_answer is not None:
                self.on_answer(response, None)
            return
        try:
            data = await within(self.timeout_s, response.json(), f"reading {urlparse(response.url).path}")
        except Deadline as exc:
            self.unread += 1
            log.warning("feed answer never finished: %s", exc)
            data = None
        except Exception as exc:  # noqa: BLE001 - not JSON, or the page went away
            log.warning("feed answer %s (HTTP %s) dropped: not JSON (%s)", urlparse(response.url).path,
                        response.status, type(exc).__name__)
            data = None
        message = data.get("message") if isinstance(data, dict) else None
        # A lost login is a 401 or the site saying so; a 403 is a refusal of this request (a CSRF
        # token, a blocked call), which logging in again would not cure.
        if response.status == 401 or message == "login_required" or (isinstance(data, dict) and data.get("require_login")):
            self.login_lost = True
        elif response.status == 403:
            log.warning("the feed answered 403 (%s)", str(message or "no message")[:120])
        if message in ("checkpoint_required", "challenge_required"):
            self.challenged = True
        if self.on_answer is not None:
            self.on_answer(response, data)
        if response.status != 200 or data is None:
            return
        self.pages_read += 1
        codes = []
        for media in find_medias(data):
            if (post := post_from_media(media)) is not None:
                self.json_posts.setdefault(post.shortcode, post)
                codes.append(post.shortcode)
        pagings = feed_paging(data)
        if pagings:  # the feed goes on while any of its lists does
            self.more_available = any(bool(p["more_available"]) for p in pagings)
        next_cursor = next((p["next_max_id"] for p in pagings if p.get("next_max_id")), None)
        request = response.request
        self.pages.append(FeedPage(request_cursor(request.url, request.post_data), codes,
                                   str(next_cursor) if next_cursor else None))

    async def settle(self) -> None:
        """Wait until the feed answers seen so far are read (each read has its own deadline)."""
        if self._tasks:  # asyncio.wait: a deadline here leaves the reads running (each has its own)
            _, pending = await asyncio.wait(list(self._tasks), timeout=self.timeout_s + 5)
            if pending:
                raise Deadline("reading feed answers", self.timeout_s + 5, "browser.timeout_s")

    async def harvest(self, open_page: Callable[[], Awaitable[Any]], handled: set[str],
                      pending: dict[str, Post], within_s: float = 5.0) -> None:
        """Add the posts the page shows so far to ``pending`` (a tag page whose load hung shows the
        tiles that came); a page that is gone or busy is no error here: the count stays as it was."""
        try:
            if self.page is None:
                self.page = await within(min(within_s, self.timeout_s), open_page(), "opening a page")
            posts, _ = await asyncio.wait_for(self.new_posts(), min(within_s, self.timeout_s))
        except Exception as exc:  # noqa: BLE001 - nothing to read
            log.debug("the page's posts could not be read: %s", type(exc).__name__)
            return
        for post in posts:
            if post.shortcode not in handled:
                pending.setdefault(post.shortcode, post)

    async def new_posts(self) -> tuple[list[Post], bool]:
        """Posts not returned before (the DOM's order, JSON data wherever the page loaded it),
        and whether they include the feed's last page."""
        await self.settle()
        ended = self.more_available is False  # before awaiting again: later JSON is still harvested below
        posts: list[Post] = []
        for item in await within(self.timeout_s, self.page.evaluate(_DOM_POSTS), "reading the grid"):
            match = SHORTCODE.search(item.get("href") or "")
            if not match:
                continue
            code = match.group(1)
            if code in self.json_posts:
                posts.append(self.json_posts.pop(code))
                continue
            url, width = largest_from_srcset(item.get("srcset"), item.get("src"))
            if url:
                posts.append(Post(code, urljoin(self.base_url + "/", url), width, None,
                                  _dom_extra(item.get("alt"), item.get("time"))))
        posts.extend(self.json_posts.values())  # loaded but not (yet) in the DOM
        self.json_posts.clear()
        return posts, ended
