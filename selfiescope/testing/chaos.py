"""Seeded misbehaviour for :class:`~selfiescope.testing.site.MockInstagram`.

Every knob imitates something the real site (or its CDN) does to a scraper; all are
off by default, so a plain ``MockInstagram()`` behaves well. Random choices (which
answer is slow, which URL is stale) come from ``Chaos.seed``, so a failing seed
replays. ``Chaos.parse("hung_beacons,url_ttl_s=5,hung_feed_tags=a+b")`` reads the ``mock-site --chaos`` flag.
"""

from __future__ import annotations

import dataclasses
import random
import threading
from dataclasses import dataclass, field
from typing import Any, Literal


@dataclass
class Chaos:
    seed: int = 0
    # -- the browser side (site.js) ------------------------------------------------------
    hung_beacons: bool = False
    """The tag page sends a ``keepalive`` POST to ``/api/v1/web/consent/update/`` whose answer
    never finishes, and a fetch of ``/api/v1/web/activity/`` that it cancels."""
    client_feed: bool = False
    """The tag page has no tiles in its HTML: the first page comes from the feed API (as the
    real web app), and a 429 on it leaves the page empty (the page does not retry)."""
    tile_dates: bool = False
    """The grid tiles of the tag page's HTML carry each post's ``<time datetime>`` (ISO 8601, UTC)."""
    virtual_grid: int = 0
    """Keep only about this many rows above the viewport in the DOM (0: keep every tile)."""
    late_dialog_ms: float = 0
    """A "Turn on notifications" dialog appears this long after a tag page loads (0: never)."""
    late_dialog_language: str = "de"
    heavy_page: bool = False
    """The tag page also loads what a scraper has no use for, as the real one does: a web font for
    its text and a muted, autoplaying video preview (``/static/ss-sans.woff2``, ``/media/preview.mp4``)."""
    unknown_consent: bool = False
    """The cookie dialog's buttons have names no list of known buttons has."""
    js_login: bool = False
    """The login form is rendered by JavaScript; its button stays disabled until both fields are typed."""
    login_variant: Literal["classic", "labels", "unknown"] = "classic"
    """``labels``: fields named by ``<label>`` in the site's language, without ``name=username``;
    ``unknown``: a form the source cannot read (Japanese labels, inputs ``name=em`` / ``name=pw``)."""
    # -- the server side ------------------------------------------------------------------
    require_api_headers: bool = False
    """API calls need ``X-CSRFToken`` (the ``csrftoken`` cookie's value) and ``X-IG-App-ID``."""
    hung_feed_every: int = 0
    """Every n-th feed answer sends its headers and never its body (once per page of a tag)."""
    hung_feed_tags: tuple[str, ...] = ()
    """Every feed answer of these tags hangs (a broken feed rather than a flaky one)."""
    slow_first_byte_ms: float = 0
    """Some answers (a third, at random) wait up to this long before their first byte."""
    drop_image_every: int = 0
    """Every n-th image download is cut off halfway (the connection closes; once per URL)."""
    wrong_type_every: int = 0
    """Every n-th image download has a wrong content type: the JPEG as ``application/octet-stream``
    or an HTML error page (once per URL)."""
    url_ttl_s: float | None = None
    """Image URLs are signed and expire after this many seconds (403 "URL signature expired")."""
    stale_url_share: float = 0.0
    """Share of image URLs in tag pages and feed answers that have already expired (post pages
    always give fresh ones). Needs ``url_ttl_s``."""
    account_block_after: int | None = None
    """After this many feed API calls the account is blocked: every API call, for every tag,
    answers 429 for ``account_block_s`` (once)."""
    account_block_s: float = 2.0
    session_expires_after_feeds: int | None = None
    """Each login session ends after this many feed API calls made with it: the next call answers
    401 ``login_required`` and the page's script goes to the login page (as the web app does)."""
    session_ttl_s: float | None = None
    """Each login session ends this many seconds after it began (pages then redirect to the login
    page, API calls answer 401)."""
    login_error_dialog: bool = False
    """A refused login is told in a pop-up ("Incorrect password" with a "Try again" button) instead
    of a line under the form."""
    media_needs_session: bool = False
    """Image downloads need a live session: without one they answer 401 ``login_required``."""
    client_post_page: bool = False
    """Post pages (``/p/{code}/``) have no ``og:image`` and no ``<img>`` in their HTML: the page's
    script fetches ``/api/v1/media/{pk}/info/`` and draws the image (as the web app does)."""
    die_after: int | None = None
    """The site goes away after answering this many requests: the server stops and every later
    connection is refused (the request past the limit gets no answer)."""
    image_429_every: int = 0
    """Every n-th image download answers 429 with ``Retry-After: image_retry_after_s`` (once per URL)."""
    image_retry_after_s: float = 1.0
    media_silent: bool = False
    """Image downloads (``/media/*.jpg``) get no answer: the connection is accepted and nothing
    is ever sent (a CDN that hangs); pages and the feed answer as usual."""
    media_base_url: str = ""
    """Image URLs point at this address instead of the site's (a CDN elsewhere; a closed port
    there is a CDN that is gone while the pages answer)."""
    media_stop_after: int | None = None
    """The image server answers this many downloads, then every later one gets no answer (a CDN
    that goes quiet mid-run)."""
    tag_page_hangs_after_tiles: int = 0
    """The tag page's HTML stops after this many grid tiles and never finishes (0: never)."""
    tag_page_429_s: float = 0
    """Every tag page answers 429 with ``Retry-After`` this many seconds and the site's own message
    (``tag_page_429_message``) in its body (0: never)."""
    tag_page_429_message: str = "Please wait a few minutes before you try again."
    web_info: bool = False
    """Feed answers take the web_info shape: sections and paging nested under ``data.recent``."""

    _rng: random.Random = field(init=False, repr=False, compare=False)
    _lock: threading.Lock = field(init=False, repr=False, compare=False)
    _once: set[str] = field(init=False, repr=False, compare=False)
    _counts: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.login_variant not in ("classic", "labels", "unknown"):
            raise ValueError(f"login_variant must be classic, labels or unknown, not {self.login_variant!r}")
        if self.stale_url_share and self.url_ttl_s is None:
            raise ValueError("stale_url_share needs url_ttl_s (URLs are only signed with a TTL)")
        self._rng = random.Random(self.seed)
        self._lock = threading.Lock()
        self._once = set()
        self._counts = {}

    # -- decisions (thread-safe: the server answers requests in threads) -------------------
    def every(self, kind: str, n: int, key: str) -> bool:
        """True on every n-th call for ``kind``, at most once per ``key``."""
        if n <= 0:
            return False
        with self._lock:
            if f"{kind}:{key}" in self._once:
                return False
            self._counts[kind] = self._counts.get(kind, 0) + 1
            if self._counts[kind] % n:
                return False
            self._once.add(f"{kind}:{key}")
            return True

    def chance(self, p: float) -> bool:
        if p <= 0:
            return False
        with self._lock:
            return self._rng.random() < p

    def first_byte_delay_s(self) -> float:
        if self.slow_first_byte_ms <= 0:
            return 0.0
        with self._lock:
            if self._rng.random() >= 1 / 3:
                return 0.0
            return self._rng.uniform(0, self.slow_first_byte_ms) / 1000

    def media_silent_now(self) -> bool:
        """Whether this image download gets no answer (``media_silent``, or past ``media_stop_after``)."""
        if self.media_silent:
            return True
        if self.media_stop_after is None:
            return False
        with self._lock:
            self._counts["media_answered"] = self._counts.get("media_answered", 0) + 1
            return self._counts["media_answered"] > self.media_stop_after

    def client_config(self) -> dict[str, Any]:
        """What site.js needs to misbehave."""
        return {"hung_beacons": self.hung_beacons, "client_feed": self.client_feed,
                "virtual_grid": self.virtual_grid, "late_dialog_ms": self.late_dialog_ms}

    def session_over(self, age_s: float, feed_calls: int) -> bool:
        """Whether a login session of this age, having made this many feed calls, has ended."""
        return (self.session_ttl_s is not None and age_s >= self.session_ttl_s) or (
            self.session_expires_after_feeds is not None and feed_calls >= self.session_expires_after_feeds)

    # -- the mock-site flag ------------------------------------------------------------------
    @classmethod
    def parse(cls, text: str, seed: int = 0) -> "Chaos":
        """``"hung_beacons,url_ttl_s=5,login_variant=labels"`` -> Chaos (ValueError on a bad knob)."""
        fields = {f.name: f for f in dataclasses.fields(cls) if f.init and f.name != "seed"}
        values: dict[str, Any] = {"seed": seed}
        for item in filter(None, (s.strip() for s in text.split(","))):
            name, eq, raw = item.partition("=")
            name = name.strip().replace("-", "_")
            if name not in fields:
                raise ValueError(f"unknown chaos knob {name!r}; known: {', '.join(fields)}")
            default = fields[name].default
            if not eq:
                if not isinstance(default, bool):
                    raise ValueError(f"chaos knob {name!r} needs a value ({name}=...)")
                values[name] = True
            elif isinstance(default, tuple):
                values[name] = tuple(filter(None, (v.strip() for v in raw.split("+"))))
            elif isinstance(default, bool):
                values[name] = raw.strip().lower() in ("1", "true", "yes", "on")
            elif isinstance(default, (int, float)) and not isinstance(default, bool) or default is None:
                number = float(raw)
                values[name] = int(number) if isinstance(default, int) and number.is_integer() else number
            else:
                values[name] = raw.strip()
        return cls(**values)
