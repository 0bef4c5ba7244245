"""A local Instagram-like site for tests, demos and benchmarks (standard library only).

``MockInstagram`` serves hashtag pages, the hashtag JSON API and JPEG media rendered by
:mod:`selfiescope.testing.synth`, with Instagram's obstacles: a login wall (optionally
with a two-factor step), blocking pop-ups (cookie consent, "Save your login info?",
"Turn on Notifications") in English, French or German, a configurable latency, 429
answers with ``Retry-After``, occasional media errors and a checkpoint page::

    with MockInstagram(latency_ms=20, rate_limit_every=5) as site:
        scrape(site.base_url + "/explore/tags/selfie/")
        truth = site.posts("selfie")   # ids, shortcodes, labels, sizes

Additions to the contract shared with the scraper (nothing in it changed):
``TagSpec`` has ``noface``/``small_face``/``share_with`` fields; ``start(port=)``;
``site.login_session()`` makes a session cookie without the form; ``GET /p/{code}/``
is a post page; ``GET /accounts/logout/``; the tag API answers a running checkpoint
with 400 ``{"message": "checkpoint_required", "checkpoint_url": "/challenge/"}``.
``site.requests`` records ``(method, path with query, status)`` before the answer is sent.
``breakage=[...]`` breaks one thing the instagram source relies on each (``BREAKAGES``), for
``selfiescope doctor``; the feed API also answers the web app's POST form (docs/instagram.md).
``chaos=Chaos(...)`` (:mod:`~selfiescope.testing.chaos`) adds seeded misbehaviour: hung
bodies, beacons, signed URLs that expire, a per-account 429 block, login-form variants...
Pop-ups stack: cookie consent on top, then "Save your login info?", then notifications.
Routes and pages live in :mod:`~selfiescope.testing.handler` and :mod:`~selfiescope.testing.pages`.
"""

from __future__ import annotations

import hashlib
import hmac
import random
import secrets
import signal
import string
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from typing import Any, Literal

import numpy as np

from . import pages, synth
from .chaos import Chaos

MEDIA_WIDTHS = (1080, 640, 320, 150)
# What ``breakage`` can break, one thing the instagram source relies on each (``selfiescope doctor``):
BREAKAGES = {
    "login_fields": "the login form's inputs are renamed and have no label, placeholder or aria-label",
    "tag_page": "hashtag pages answer 404",
    "feed_shape": "the feed JSON has no sections and no pagination fields",
    "image_versions": "feed media have no image_versions2",
    "candidates": "feed media have an empty image_versions2.candidates",
    "popup_buttons": "pop-ups' buttons have names no scraper knows",
}
RENDER_WIDTH = 640  # rendered once per post, resized for the other widths
_B64 = string.ascii_letters + string.digits + "-_"


@dataclass(frozen=True)
class TagSpec:
    """One hashtag feed: ``count`` posts of ``kind``, some of them without faces or with small faces.

    ``share_with``: tags whose feed also gets a repost of this tag's first face photo
    (a different post by another user, identical image bytes).
    """

    count: int = 30
    kind: Literal["selfie", "portrait", "mixed"] = "mixed"
    noface: int = 2
    small_face: int = 2
    share_with: tuple[str, ...] = ()


DEFAULT_TAGS: dict[str, TagSpec] = {
    "selfie": TagSpec(30, "selfie", share_with=("portrait",)),
    "selfies": TagSpec(30, "selfie"),
    "portrait": TagSpec(30, "portrait"),
    "portraitphotography": TagSpec(30, "portrait"),
}


@dataclass
class Post:
    id: str
    shortcode: str
    owner_id: str
    username: str
    taken_at: int
    caption: str
    label: str  # the rendering: "selfie", "portrait", "small_face", "noface"
    width: int
    height: int
    seed: int  # the same seed renders the same bytes
    tag: str
    duplicate_of: str | None = None  # id of the post whose photo this reposts

    @property
    def sizes(self) -> list[tuple[int, int]]:
        return [(w, round(self.height * w / self.width)) for w in MEDIA_WIDTHS]

    def media_path(self, width: int) -> str:
        return f"/media/{self.id}_{width}.jpg"

    def media_json(self, base_url: str) -> dict[str, Any]:
        return {
            "pk": self.id,
            "id": f"{self.id}_{self.owner_id}",
            "code": self.shortcode,
            "taken_at": self.taken_at,
            "media_type": 1,
            "caption": {"text": self.caption},
            "user": {"pk": self.owner_id, "username": self.username},
            "original_width": self.width,
            "original_height": self.height,
            "image_versions2": {
                "candidates": [
                    {"url": base_url + self.media_path(w), "width": w, "height": h} for w, h in self.sizes
                ]
            },
        }


@dataclass
class _Session:
    username: str
    save_prompt: bool = True  # "Save your login info?" on the next page
    notifications_prompt: bool = True  # "Turn on Notifications" on the first tag page
    started: float = field(default_factory=time.monotonic)
    feed_calls: int = 0


@dataclass
class _Counters:
    api: int = 0
    media: int = 0
    failed_media: set[str] = field(default_factory=set)


class MockInstagram:
    def __init__(
        self,
        tags: dict[str, TagSpec] | None = None,
        seed: int = 0,
        latency_ms: float = 0,
        page_size: int = 12,
        require_login: bool = True,
        username: str = "demo",
        password: str = "demo",
        two_factor_code: str | None = None,
        rate_limit_every: int = 0,
        retry_after_s: float = 1,
        consent_language: str = "en",
        image_error_every: int = 0,
        breakage: tuple[str, ...] | list[str] | set[str] = (),
        chaos: Chaos | None = None,
    ) -> None:
        unknown = set(breakage) - set(BREAKAGES)
        if unknown:
            raise ValueError(f"unknown breakage {', '.join(sorted(unknown))}; known: {', '.join(BREAKAGES)}")
        self.breakage = set(breakage)  # see BREAKAGES; may be changed while serving
        if consent_language not in pages.TEXTS:
            raise ValueError(f"consent_language must be one of {', '.join(pages.TEXTS)}, not {consent_language!r}")
        if page_size < 1:
            raise ValueError("page_size must be at least 1")
        self.tags = dict(DEFAULT_TAGS if tags is None else tags)
        for tag, spec in self.tags.items():
            for other in spec.share_with:
                if other not in self.tags:
                    raise ValueError(f"tag {tag!r} shares with unknown tag {other!r}")
        self.seed = seed
        self.latency_ms = latency_ms
        self.page_size = page_size
        self.require_login = require_login
        self.username = username
        self.password = password
        self.two_factor_code = two_factor_code
        self.rate_limit_every = rate_limit_every
        self.retry_after_s = retry_after_s
        self.consent_language = consent_language
        self.image_error_every = image_error_every
        self.trigger_challenge = False
        self.login_attempts = 0  # credentials submitted (form or ajax), whatever the outcome
        self.sessions_ended = 0  # sessions ended by chaos.session_ttl_s / session_expires_after_feeds
        self.chaos = chaos or Chaos()
        if self.chaos.late_dialog_language not in pages.TEXTS:
            raise ValueError(f"late_dialog_language must be one of {', '.join(pages.TEXTS)}")
        self._secret = hashlib.sha256(f"mock-instagram-{seed}".encode()).digest()
        self._stopping = threading.Event()  # releases answers that hang on purpose
        self._feed_calls = 0
        self._blocked_until: dict[str, float] = {}  # account -> time.time() the 429 block ends
        self.requests: list[tuple[str, str, int]] = []
        self.bytes_sent: dict[str, int] = {}  # bytes of answers (headers and bodies) by kind: page, api, media, static
        self._answered = 0  # requests seen (``chaos.die_after``)
        self.died = threading.Event()  # set once ``chaos.die_after`` has stopped the server
        self.base_url = ""
        self._lock = threading.Lock()
        self._sessions: dict[str, _Session] = {}
        self._pending_2fa: dict[str, str] = {}  # token -> username
        self._counters = _Counters()
        self._media: dict[tuple[str, int], bytes] = {}
        self._renders: OrderedDict[str, np.ndarray] = OrderedDict()
        self._render_locks: dict[str, threading.Lock] = {}
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        rnd = random.Random(seed)
        self.classes = {k: f"x{_token(rnd, 7)} _a{_token(rnd, 3)}" for k in pages.CLASS_KEYS}
        self._feeds, self._by_id = _build_feeds(self.tags, rnd)
        self._by_code = {p.shortcode: p for p in self._by_id.values()}

    # -- ground truth -------------------------------------------------------------

    def posts(self, tag: str) -> list[Post]:
        """The posts of ``tag``'s feed, newest first, as the site serves them."""
        return list(self._feeds[tag])

    def media_url(self, post: Post, width: int, *, fresh: bool = False) -> str:
        """The URL of ``post``'s image at ``width``: signed, with an expiry, when ``chaos.url_ttl_s`` is set;
        already expired for a share of the URLs tag pages and feeds give (``chaos.stale_url_share``)."""
        path = post.media_path(width)
        base = self.chaos.media_base_url.rstrip("/") or self.base_url
        ttl = self.chaos.url_ttl_s
        if ttl is None:
            return base + path
        expires = time.time() + ttl
        if not fresh and self.chaos.chance(self.chaos.stale_url_share):
            expires = time.time() - 1
        exp = f"{expires:.3f}"
        return f"{base}{path}?se={exp}&sig={self._sign(path, exp)}"

    def _sign(self, path: str, expires: str) -> str:
        return hmac.new(self._secret, f"{path}|{expires}".encode(), "sha256").hexdigest()[:32]

    def media_problem(self, path: str, query: dict[str, str]) -> str | None:
        """Why a media request is refused (403), or None."""
        if self.chaos.url_ttl_s is None:
            return None
        exp, sig = query.get("se", ""), query.get("sig", "")
        if not exp or not hmac.compare_digest(sig, self._sign(path, exp)):
            return "URL signature mismatch"
        try:
            if float(exp) < time.time():
                return "URL signature expired"
        except ValueError:
            return "URL signature mismatch"
        return None

    def media_json(self, post: Post) -> dict[str, Any]:
        data = post.media_json(self.base_url)
        data["image_versions2"]["candidates"] = [
            {"url": self.media_url(post, w), "width": w, "height": h} for w, h in post.sizes
        ]
        return data

    def post(self, post_id: str) -> Post:
        return self._by_id[post_id]

    def media_bytes(self, post: Post, width: int = 1080) -> bytes:
        """The JPEG the site serves for ``post`` at ``width`` (rendered on first use)."""
        key = (post.id, width)
        if key in self._media:
            return self._media[key]
        with self._lock:
            lock = self._render_locks.setdefault(post.id, threading.Lock())
        with lock:
            if key not in self._media:
                image = self._render(post)
                h = round(post.height * width / post.width)
                if width != image.shape[1]:
                    import cv2

                    interp = cv2.INTER_AREA if width < image.shape[1] else cv2.INTER_CUBIC
                    image = cv2.resize(image, (width, h), interpolation=interp)
                self._media[key] = synth.encode_jpeg(image)
        return self._media[key]

    def _render(self, post: Post) -> np.ndarray:
        source = self._by_id[post.duplicate_of] if post.duplicate_of else post
        with self._lock:
            cached = self._renders.get(source.id)
        if cached is not None:
            return cached
        w = RENDER_WIDTH
        h = round(source.height * w / source.width)
        image = synth.render(source.label, np.random.default_rng(source.seed), (w, h))
        with self._lock:
            self._renders[source.id] = image
            while len(self._renders) > 8:
                self._renders.popitem(last=False)
        return image

    # -- sessions -----------------------------------------------------------------

    def login_session(self, username: str | None = None) -> str:
        """A valid ``sessionid`` cookie value, as if the user had logged in."""
        sid = secrets.token_hex(16)
        with self._lock:
            self._sessions[sid] = _Session(username or self.username)
        return sid

    def _session(self, cookies: dict[str, str], *, feed_call: bool = False) -> _Session | None:
        """The cookies' live session (None once it ended); ``feed_call`` counts a feed API call on it."""
        sid = cookies.get("sessionid", "")
        with self._lock:
            session = self._sessions.get(sid)
            if session is None:
                return None
            if self.chaos.session_over(time.monotonic() - session.started, session.feed_calls):
                del self._sessions[sid]
                self.sessions_ended += 1
                return None
            session.feed_calls += feed_call
            return session

    # -- server -------------------------------------------------------------------

    def start(self, port: int = 0, host: str = "127.0.0.1") -> str:
        if self._server is not None:
            return self.base_url
        from .handler import Handler

        handler = type("Handler", (Handler,), {"site": self})
        self._stopping.clear()
        self._server = ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        self._server.open_sockets = set()  # type: ignore[attr-defined]
        self.base_url = f"http://{host}:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="mock-instagram", daemon=True)
        self._thread.start()
        return self.base_url

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        for sock in list(server.open_sockets):  # type: ignore[attr-defined]
            try:
                sock.shutdown(2)
            except OSError:
                pass
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def serve_forever(self) -> None:
        """Block until Ctrl-C or SIGTERM, then stop (the ``mock-site`` command); starts if needed."""
        self.start()
        previous = None
        if threading.current_thread() is threading.main_thread():
            previous = signal.signal(signal.SIGTERM, _interrupt)
        try:
            while True:
                time.sleep(3600)
        finally:
            self.stop()
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)

    def __enter__(self) -> "MockInstagram":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- request counters (called by the handler) --------------------------------

    def _next_api_is_limited(self) -> bool:
        with self._lock:
            self._counters.api += 1
            return bool(self.rate_limit_every) and self._counters.api % self.rate_limit_every == 0

    def _account_block_s(self, account: str) -> float:
        """Seconds left of ``account``'s 429 block (``chaos.account_block_after``), 0 when not blocked.
        Counts the feed calls that were not blocked; the block starts once."""
        after = self.chaos.account_block_after
        if after is None:
            return 0.0
        with self._lock:
            now = time.time()
            until = self._blocked_until.get(account)
            if until is not None:
                return max(0.0, until - now)
            if self._feed_calls >= after:
                self._blocked_until[account] = now + self.chaos.account_block_s
                return self.chaos.account_block_s
            self._feed_calls += 1
            return 0.0

    def _count_request(self) -> bool:
        """Count a request; True once it is past ``chaos.die_after``: the server then stops (once)."""
        limit = self.chaos.die_after
        if limit is None:
            return False
        with self._lock:
            self._answered += 1
            if self._answered <= limit:
                return False
            first = not self.died.is_set()
            self.died.set()
        if first:  # not from this handler's thread: stop() waits for the serving loop
            threading.Thread(target=self.stop, name="mock-instagram-dies", daemon=True).start()
        return True

    def _next_media_fails(self, path: str) -> bool:
        with self._lock:
            self._counters.media += 1
            fail = (
                bool(self.image_error_every)
                and self._counters.media % self.image_error_every == 0
                and path not in self._counters.failed_media
            )
            if fail:
                self._counters.failed_media.add(path)
            return fail


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _token(rnd: random.Random, n: int) -> str:
    return "".join(rnd.choice(string.ascii_lowercase + string.digits) for _ in range(n))


def _shortcode(post_id: int) -> str:
    chars = []
    while post_id:
        post_id, r = divmod(post_id, 64)
        chars.append(_B64[r])
    return "".join(reversed(chars))[-11:]


def _build_feeds(tags: dict[str, TagSpec], rnd: random.Random) -> tuple[dict[str, list[Post]], dict[str, Post]]:
    feeds: dict[str, list[Post]] = {}
    by_id: dict[str, Post] = {}
    now = 1_767_225_600  # 2026-01-01, fixed so runs are reproducible
    first_words = ["sunny", "mood", "weekend", "today", "coffee", "city", "golden", "hello", "studio", "natural"]

    def new_post(tag: str, label: str, seed: int, duplicate_of: str | None = None) -> Post:
        pid = rnd.randrange(3_000_000_000_000_000_000, 3_999_999_999_999_999_999)
        owner = str(rnd.randrange(10**9, 10**11))
        user = f"{rnd.choice(first_words)}_{_token(rnd, 5)}"
        width, height = (1080, 1350) if rnd.random() < 0.3 else (1080, 1080)
        if duplicate_of:
            width, height = by_id[duplicate_of].width, by_id[duplicate_of].height
        taken = now - rnd.randrange(60, 86_400 * 30)
        caption = f"{rnd.choice(first_words)} #{tag}" + (" #portrait" if label == "portrait" else "")
        post = Post(str(pid), _shortcode(pid), owner, user, taken, caption, label, width, height, seed, tag, duplicate_of)
        by_id[post.id] = post
        return post

    for tag, spec in tags.items():
        n_faces = max(spec.count - spec.noface - spec.small_face, 0)
        if spec.kind == "mixed":
            labels = ["selfie"] * (n_faces // 2) + ["portrait"] * (n_faces - n_faces // 2)
        else:
            labels = [spec.kind] * n_faces
        labels += ["noface"] * spec.noface + ["small_face"] * spec.small_face
        labels = labels[: spec.count]
        rnd.shuffle(labels)
        feeds[tag] = [new_post(tag, label, rnd.randrange(2**31)) for label in labels]
    for tag, spec in tags.items():
        original = next((p for p in feeds[tag] if p.label in ("selfie", "portrait")), None)
        for other in spec.share_with if original else ():
            repost = new_post(other, original.label, original.seed, duplicate_of=original.id)
            feeds[other].insert(min(3, len(feeds[other])), repost)
    for feed in feeds.values():
        feed.sort(key=lambda p: -p.taken_at)
    return feeds, by_id
