"""The HTTP handler of :class:`~selfiescope.testing.site.MockInstagram` (routes and pages)."""

from __future__ import annotations

import base64
import http.cookies
import json
import secrets
import socket
import time
from html import escape
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from importlib import resources
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, quote, urlsplit

from . import pages
from .site import MEDIA_WIDTHS

if TYPE_CHECKING:  # pragma: no cover
    from .site import MockInstagram


APP_ID = "936619743392459"


def _cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(f"QVFD:{offset}".encode()).decode().rstrip("=")


def _offset(cursor: str) -> int | None:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        prefix, _, num = raw.partition(":")
        return int(num) if prefix == "QVFD" and int(num) >= 0 else None
    except ValueError:
        return None


def _safe_next(url: str | None) -> str:
    """Only same-site paths are followed after login (no open redirect)."""
    if url and url.startswith("/") and not url.startswith("//") and "\\" not in url:
        return url
    return "/"


def _broken_media(media: dict[str, Any], breakage: set[str]) -> dict[str, Any]:
    if "image_versions" in breakage:
        media.pop("image_versions2", None)
    elif "candidates" in breakage:
        media["image_versions2"] = {"candidates": []}
    return media


class Handler(BaseHTTPRequestHandler):
    site: MockInstagram
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes: without this every keep-alive
    # response waits ~40 ms for a delayed ACK.
    disable_nagle_algorithm = True
    server_version = "MockInstagram/1.0"
    timeout = 30

    def setup(self) -> None:
        super().setup()
        self.server.open_sockets.add(self.connection)  # type: ignore[attr-defined]

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.open_sockets.discard(self.connection)  # type: ignore[attr-defined]

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet by default
        pass

    # -- helpers ------------------------------------------------------------------

    @property
    def cookies(self) -> dict[str, str]:
        jar = http.cookies.SimpleCookie()
        try:
            jar.load(self.headers.get("Cookie", ""))
        except http.cookies.CookieError:
            return {}
        return {k: m.value for k, m in jar.items()}

    def send(self, status: int, body: bytes | str = b"", ctype: str = "text/html; charset=utf-8",
             headers: dict[str, str] | None = None, cookies: list[str] = ()) -> None:
        self.delay()
        data = body.encode() if isinstance(body, str) else body
        with self.site._lock:  # logged before the client can see the answer
            self.site.requests.append((self.command, self.path, int(status)))
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store" if not ctype.startswith("image/") else "max-age=3600")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        for c in cookies:
            self.send_header("Set-Cookie", c)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
        self.count_bytes(len(data) + 200)  # the status line and headers: about 200 bytes

    def count_bytes(self, n: int) -> None:
        path = urlsplit(self.path).path
        kind = ("media" if path.startswith("/media/") else "api" if path.startswith("/api/")
                else "static" if path.startswith("/static/") else "page")
        with self.site._lock:
            self.site.bytes_sent[kind] = self.site.bytes_sent.get(kind, 0) + n

    def gone(self) -> bool:
        """Past ``chaos.die_after``: drop the connection without an answer (the server is stopping)."""
        if not self.site._count_request():
            return False
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        return True

    def delay(self) -> None:
        wait = self.site.latency_ms / 1000 + self.site.chaos.first_byte_delay_s()
        if wait:
            time.sleep(wait)

    def hang(self, ctype: str = "application/json; charset=utf-8") -> None:
        """Send the headers and a few bytes of the body, then nothing (until the site stops)."""
        self.delay()
        with self.site._lock:
            self.site.requests.append((self.command, self.path, 200))
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", "4096")
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(b'{"status":')
        self.wfile.flush()
        self.site._stopping.wait(600)
        self.close_connection = True

    def silent(self) -> None:
        """Take the request and never answer, not even a status line (until the site stops)."""
        with self.site._lock:
            self.site.requests.append((self.command, self.path, 0))
        self.site._stopping.wait(600)
        self.close_connection = True

    def cut_off(self, data: bytes, ctype: str) -> None:
        """Send the headers and half the body, then close the connection."""
        self.delay()
        with self.site._lock:
            self.site.requests.append((self.command, self.path, 200))
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data[: len(data) // 2])
        self.wfile.flush()
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def csrf_cookie(self) -> list[str]:
        """Every page sets ``csrftoken`` (readable by scripts) when the browser has none."""
        if "csrftoken" in self.cookies:
            return []
        return [f"csrftoken={secrets.token_hex(16)}; Path=/; SameSite=Lax"]

    def api_headers_problem(self) -> str | None:
        if not self.site.chaos.require_api_headers:
            return None
        token = self.cookies.get("csrftoken")
        if not token or self.headers.get("X-CSRFToken") != token:
            return "CSRF token missing or incorrect"
        if self.headers.get("X-IG-App-ID") != APP_ID:
            return "missing app id"
        return None

    def send_json(self, status: int, obj: Any, headers: dict[str, str] | None = None, cookies: list[str] = ()) -> None:
        self.send(status, json.dumps(obj), "application/json; charset=utf-8", headers, cookies)

    def redirect(self, location: str, cookies: list[str] = ()) -> None:
        self.send(HTTPStatus.FOUND, b"", headers={"Location": location}, cookies=cookies)

    def html(self, title: str, body: str, *, status: int = 200, dialogs: list[str] | None = None,
             config: dict[str, Any] | None = None, cookies: list[str] = (), head: str = "",
             hang_after_tiles: int = 0) -> None:
        site = self.site
        lang = "xx-broken" if "popup_buttons" in site.breakage else site.consent_language
        shown = list(dialogs or [])  # later in the document = on top: consent, then save-login, then these
        session = site._session(self.cookies)
        if session is not None and session.save_prompt:
            session.save_prompt = False
            shown.append(pages.save_login_dialog(lang, site.classes))
        if "consent" not in self.cookies:
            consent = pages.unknown_consent_dialog if site.chaos.unknown_consent else None
            shown.append(consent(site.classes) if consent else pages.consent_dialog(lang, site.classes))
        config = {**(config or {}), "chaos": site.chaos.client_config(), "app_id": APP_ID,
                  "late_dialog": pages.notifications_dialog(site.chaos.late_dialog_language, site.classes)}
        text = pages.page(title, body, site.classes, dialogs=shown, config=config, lang=lang, head=head)
        if hang_after_tiles:
            return self.hang_midway(text, hang_after_tiles)
        self.send(status, text, cookies=[*cookies, *self.csrf_cookie()])

    def hang_midway(self, text: str, tiles: int) -> None:
        """Send the page up to the end of its ``tiles``-th grid tile, then nothing (until the site stops)."""
        data, cut = text.encode(), 0
        for _ in range(tiles):
            found = data.find(b"</article>", cut)
            if found < 0:
                break
            cut = found + len(b"</article>")
        self.delay()
        with self.site._lock:
            self.site.requests.append((self.command, self.path, 200))
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(data[:cut])
        self.wfile.flush()
        self.site._stopping.wait(600)
        self.close_connection = True

    def not_found(self) -> None:
        self.html("Page not found • Instagram", "<h1>Sorry, this page isn't available.</h1>"
                  '<p>The link you followed may be broken, or the page may have been removed.</p>', status=404)

    def read_form(self) -> dict[str, str]:
        try:
            length = max(int(self.headers.get("Content-Length") or 0), 0)
        except ValueError:
            length = 0
        raw = self.rfile.read(min(length, 1 << 20)).decode("utf-8", "replace")
        if self.headers.get("Content-Type", "").startswith("application/json"):
            try:
                data = json.loads(raw)
                return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}
            except json.JSONDecodeError:
                return {}
        return {k: v[0] for k, v in parse_qs(raw).items()}

    def logged_in(self) -> bool:
        return not self.site.require_login or self.site._session(self.cookies) is not None

    # -- routing ------------------------------------------------------------------

    def do_GET(self) -> None:  # noqa: N802 - http.server naming
        url = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        parts = [p for p in url.path.split("/") if p]
        if self.gone():
            return
        try:
            if not parts:
                return self.home()
            if parts[0] == "static" and len(parts) == 2:
                return self.static(parts[1])
            if parts[:2] == ["accounts", "login"] and len(parts) == 2:
                return self.login_page(query.get("next"))
            if parts[:3] == ["accounts", "login", "two_factor"]:
                return self.two_factor_page(query.get("next"))
            if parts[:2] == ["accounts", "logout"]:
                return self.redirect("/", cookies=["sessionid=; Path=/; Max-Age=0; HttpOnly"])
            if parts == ["challenge"]:
                return self.challenge()
            if parts[:2] == ["explore", "tags"] and len(parts) == 3:
                return self.tag_page(parts[2])
            if parts[0] == "p" and len(parts) == 2:
                return self.post_page(parts[1])
            if parts[:3] == ["api", "v1", "tags"] and len(parts) == 5 and parts[4] == "sections":
                return self.tag_api(parts[3], query.get("max_id", ""))
            if parts[:3] == ["api", "v1", "media"] and len(parts) == 5 and parts[4] == "info":
                return self.media_info(parts[3])
            if parts == ["api", "v1", "web", "activity"]:
                return self.hang()  # the page cancels this one
            if parts[0] == "media" and len(parts) == 2:
                return self.media(parts[1], query)
            return self.not_found()
        except (BrokenPipeError, ConnectionResetError):
            pass
        except Exception as exc:  # a bug here must show as a 500, not a dropped connection
            self.send(500, f"{type(exc).__name__}: {exc}", "text/plain; charset=utf-8")

    do_HEAD = do_GET  # noqa: N815

    def do_POST(self) -> None:  # noqa: N802
        path = urlsplit(self.path).path
        if self.gone():
            return
        try:
            if path in ("/accounts/login/ajax/", "/accounts/login/"):
                return self.login_submit(self.read_form())
            if path == "/accounts/login/two_factor/":
                return self.two_factor_submit(self.read_form())
            parts = [p for p in path.split("/") if p]
            if parts[:3] == ["api", "v1", "tags"] and len(parts) == 5 and parts[4] == "sections":
                # the web app's own call: POST with max_id, page, tab, surface (docs/instagram.md)
                return self.tag_api(parts[3], self.read_form().get("max_id", ""))
            if path == "/api/v1/web/consent/update/":  # a keepalive beacon whose answer never ends
                self.read_form()
                return self.hang()
            self.read_form()
            return self.send_json(405, {"message": "method not allowed", "status": "fail"})
        except (BrokenPipeError, ConnectionResetError):
            pass

    # -- pages --------------------------------------------------------------------

    def home(self) -> None:
        links = "".join(f'<li><a href="/explore/tags/{quote(t)}/">#{t}</a></li>' for t in self.site.tags)
        who = self.site._session(self.cookies)
        greeting = f"<p>Logged in as {who.username}</p>" if who else '<p><a href="/accounts/login/">Log in</a></p>'
        self.html("Instagram", f"<h1>Instagram</h1>{greeting}<ul>{links}</ul>")

    def static(self, name: str) -> None:
        if name == "ss-sans.woff2":  # ``chaos.heavy_page``'s font: bytes only a browser that renders text wants
            return self.send(200, b"wOF2" + bytes(60_000), "font/woff2")
        types = {"site.js": "text/javascript; charset=utf-8", "site.css": "text/css; charset=utf-8"}
        if name not in types:
            return self.not_found()
        data = resources.files("selfiescope.testing").joinpath("static", name).read_bytes()
        self.send(200, data, types[name])

    def login_page(self, next_url: str | None, error: str | None = None) -> None:
        if error is None and self.site._session(self.cookies) is not None:
            return self.redirect(_safe_next(next_url))
        site, safe = self.site, _safe_next(next_url)
        if "login_fields" in site.breakage:
            return self.html("Login • Instagram", pages.unlabelled_login_form(site.classes, safe))
        if site.chaos.login_variant == "unknown":
            return self.html("Login • Instagram", pages.login_form_unknown(site.classes, safe))
        if site.chaos.js_login and error is None:
            body, config = pages.login_placeholder(site.chaos.login_variant, site.consent_language, safe)
            return self.html("Login • Instagram", body, config=config)
        if error is not None and site.chaos.login_error_dialog:  # the error as a pop-up, not under the form
            dialogs, error = [pages.dialog("Incorrect password", error, [("Try again", None)], site.classes)], None
        else:
            dialogs = []
        if site.chaos.login_variant == "labels":
            form = pages.login_form_labels(site.classes, safe, site.consent_language, error)
        else:
            form = pages.login_form(site.classes, safe, error)
        self.html("Login • Instagram", form, dialogs=dialogs)

    def login_submit(self, form: dict[str, str]) -> None:
        site, next_url = self.site, _safe_next(form.get("next"))
        if "login_fields" in site.breakage:  # the renamed fields of pages.unlabelled_login_form
            form = {**form, "username": form.get("f_a8x1", ""), "password": form.get("f_b3k9", "")}
        ajax = self.headers.get("X-Requested-With") == "XMLHttpRequest"
        with site._lock:
            site.login_attempts += 1
        if ajax and (problem := self.api_headers_problem()):
            return self.send_json(403, {"message": problem, "status": "fail"})
        username = form.get("username", form.get("email", form.get("em")))
        password = form.get("password", form.get("pass", form.get("pw")))
        if username != site.username or password != site.password:
            if ajax:
                return self.send_json(400, {"authenticated": False, "message": "Sorry, your password was incorrect.", "status": "fail"})
            return self.login_page(next_url, "Sorry, your password was incorrect. Please double-check your password.")
        if site.two_factor_code:
            token = secrets.token_hex(16)
            with site._lock:
                site._pending_2fa[token] = site.username
            cookie = f"ss_2fa={token}; Path=/; HttpOnly; SameSite=Lax"
            if ajax:
                return self.send_json(400, {"two_factor_required": True, "message": "", "status": "fail"}, cookies=[cookie])
            return self.redirect(f"/accounts/login/two_factor/?next={quote(next_url)}", cookies=[cookie])
        self.logged_in_redirect(next_url, ajax)

    def logged_in_redirect(self, next_url: str, ajax: bool) -> None:
        cookie = f"sessionid={self.site.login_session()}; Path=/; HttpOnly; SameSite=Lax"
        if ajax:
            return self.send_json(200, {"authenticated": True, "user": True, "status": "ok"}, cookies=[cookie])
        self.redirect(next_url, cookies=[cookie])

    def two_factor_page(self, next_url: str | None, error: str | None = None) -> None:
        if self.cookies.get("ss_2fa") not in self.site._pending_2fa:
            return self.redirect("/accounts/login/")
        self.html("Security code • Instagram", pages.two_factor_form(self.site.classes, _safe_next(next_url), error))

    def two_factor_submit(self, form: dict[str, str]) -> None:
        token = self.cookies.get("ss_2fa", "")
        if token not in self.site._pending_2fa:
            return self.redirect("/accounts/login/")
        if form.get("verificationCode", "").strip() != self.site.two_factor_code:
            return self.two_factor_page(form.get("next"), "Please check the security code and try again.")
        with self.site._lock:
            self.site._pending_2fa.pop(token, None)
        self.logged_in_redirect(_safe_next(form.get("next")), False)

    def challenge(self) -> None:
        self.html("Challenge • Instagram", "<h1>We detected an unusual login attempt</h1>"
                  "<p>Help us confirm it's you. To secure your account, we need you to verify your identity.</p>")

    def tag_page(self, tag: str) -> None:
        site = self.site
        if not self.logged_in():
            return self.redirect(f"/accounts/login/?next={quote(self.path)}")
        if site.trigger_challenge:
            return self.redirect("/challenge/")
        if tag not in site.tags or "tag_page" in site.breakage:
            return self.not_found()
        if site.chaos.tag_page_429_s:
            text = ("<!doctype html><html><head><title>Error • Instagram</title></head><body>"
                    f"<p>{escape(site.chaos.tag_page_429_message)}</p></body></html>")
            return self.send(429, text, headers={"Retry-After": f"{site.chaos.tag_page_429_s:g}"})
        feed = site._feeds[tag]
        first = [] if site.chaos.client_feed else feed[: site.page_size]  # the app loads its first page itself
        tiles = [pages.Tile(p.shortcode, p.username, [(site.media_url(p, w), w) for w in sorted(MEDIA_WIDTHS)],
                            p.taken_at if site.chaos.tile_dates else None)
                 for p in first]
        dialogs = []
        session = site._session(self.cookies)
        if session is not None and session.notifications_prompt:
            session.notifications_prompt = False
            lang = "xx-broken" if "popup_buttons" in site.breakage else site.consent_language
            dialogs.append(pages.notifications_dialog(lang, site.classes))
        more = len(feed) > len(first)
        config = {"tag": tag, "next_max_id": _cursor(len(first)) if more else None, "more_available": more,
                  "first_from_api": bool(site.chaos.client_feed)}
        body, head = pages.tag_body(tag, len(feed), tiles, site.classes), ""
        if site.chaos.heavy_page:
            head = ("<style>@font-face{font-family:SsSans;src:url(/static/ss-sans.woff2) format('woff2')}"
                    "body{font-family:SsSans,sans-serif}</style>")
            body += '<video src="/media/preview.mp4" autoplay muted loop playsinline width="320"></video>'
        self.html(f"#{tag} hashtag on Instagram • Photos and videos", body, dialogs=dialogs, config=config, head=head,
                  hang_after_tiles=site.chaos.tag_page_hangs_after_tiles)

    def post_page(self, code: str) -> None:
        if not self.logged_in():
            return self.redirect(f"/accounts/login/?next={quote(self.path)}")
        post = self.site._by_code.get(code)
        if post is None:
            return self.not_found()
        if self.site.chaos.client_post_page:  # the page's script fetches the data and draws it
            return self.html(f"{post.username} on Instagram", '<article class="post" id="ss-post"><p>Loading…</p></article>',
                             config={"post": {"media_id": post.id, "code": post.shortcode}})
        image = self.site.media_url(post, 1080, fresh=True)  # a post page always gives a fresh URL
        body = pages.post_body(image, post.username, post.caption, post.width, post.height, post.taken_at)
        head = f'<meta property="og:image" content="{escape(image)}">'
        self.html(f"{post.username} on Instagram", body, head=head)

    def tag_api(self, tag: str, max_id: str) -> None:
        site = self.site
        session = site._session(self.cookies, feed_call=True)
        if site.require_login and session is None:
            return self.send_json(401, {"message": "login_required", "require_login": True, "status": "fail"})
        if site.trigger_challenge:
            return self.send_json(400, {"message": "checkpoint_required", "checkpoint_url": "/challenge/", "status": "fail"})
        if problem := self.api_headers_problem():
            return self.send_json(403, {"message": problem, "status": "fail"})
        blocked = site._account_block_s(session.username if session else "anonymous")
        if blocked:
            return self.send_json(
                429, {"message": "Please wait a few minutes before you try again.", "status": "fail"},
                headers={"Retry-After": f"{max(1, round(blocked))}"},
            )
        if site._next_api_is_limited():
            return self.send_json(
                429, {"message": "Please wait a few minutes before you try again.", "status": "fail"},
                headers={"Retry-After": f"{site.retry_after_s:g}"},
            )
        if tag not in site.tags:
            return self.send_json(404, {"message": "tag not found", "status": "fail"})
        start = _offset(max_id) if max_id else 0
        if start is None:
            return self.send_json(400, {"message": "invalid max_id", "status": "fail"})
        if tag in site.chaos.hung_feed_tags or site.chaos.every("hung_feed", site.chaos.hung_feed_every, f"{tag}:{start}"):
            return self.hang()
        feed = site._feeds[tag]
        chunk = feed[start : start + site.page_size]
        end = start + len(chunk)
        more = end < len(feed)
        medias = [{"media": _broken_media(site.media_json(p), site.breakage)} for p in chunk]
        if "feed_shape" in site.breakage:
            return self.send_json(200, {"items_v2": medias, "status": "ok"})
        page = {
            "sections": [{"layout_type": "media_grid", "layout_content": {"medias": medias}}] if medias else [],
            "more_available": more,
            "next_max_id": _cursor(end) if more else None,
            "next_page": start // site.page_size + 1 if more else None,
        }
        if site.chaos.web_info:
            return self.send_json(200, {"data": {"top": {"sections": [], "more_available": False, "next_max_id": None},
                                                  "recent": page}, "status": "ok"})
        self.send_json(200, {**page, "status": "ok"})

    def media_info(self, media_id: str) -> None:
        """A post's data as the web app fetches it for a post page (fresh image URLs)."""
        if not self.logged_in():
            return self.send_json(401, {"message": "login_required", "require_login": True, "status": "fail"})
        if problem := self.api_headers_problem():
            return self.send_json(403, {"message": problem, "status": "fail"})
        post = self.site._by_id.get(media_id)
        if post is None:
            return self.send_json(404, {"message": "Media not found or unavailable", "status": "fail"})
        media = self.site.media_json(post)
        media["image_versions2"]["candidates"] = [
            {"url": self.site.media_url(post, w, fresh=True), "width": w, "height": h} for w, h in post.sizes]
        self.send_json(200, {"items": [media], "num_results": 1, "status": "ok"})

    def media(self, name: str, query: dict[str, str]) -> None:
        site, chaos = self.site, self.site.chaos
        if name == "preview.mp4":  # ``chaos.heavy_page``'s video preview
            return self.send(200, bytes(400_000), "video/mp4")
        stem, _, ext = name.partition(".")
        post_id, _, width = stem.rpartition("_")
        post = site._by_id.get(post_id)
        if ext != "jpg" or post is None or not width.isdigit() or int(width) not in MEDIA_WIDTHS:
            return self.send(404, b"not found", "text/plain")
        path = urlsplit(self.path).path
        if chaos.media_silent_now():
            return self.silent()
        if chaos.media_needs_session and site.require_login and site._session(self.cookies) is None:
            return self.send_json(401, {"message": "login_required", "require_login": True, "status": "fail"})
        if problem := site.media_problem(path, query):
            return self.send(403, problem.encode(), "text/plain")
        if site._next_media_fails(path):
            return self.send(500, b"temporary media error", "text/plain")
        if chaos.every("image_429", chaos.image_429_every, path):
            return self.send(429, b"Please wait a few minutes before you try again.", "text/plain",
                             headers={"Retry-After": f"{chaos.image_retry_after_s:g}"})
        data = site.media_bytes(post, int(width))
        if chaos.every("drop", chaos.drop_image_every, path):
            return self.cut_off(data, "image/jpeg")
        if chaos.every("wrong_type", chaos.wrong_type_every, path):
            if chaos.chance(0.5):
                return self.send(200, data, "application/octet-stream")
            return self.send(200, "<html><body>Something went wrong. Please try again.</body></html>")
        self.send(200, data, "image/jpeg")
