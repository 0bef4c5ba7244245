"""The local Instagram-like site over real HTTP (urllib), and in a real Chromium."""

from __future__ import annotations

import http.cookiejar
import io
import json
import shutil
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

import numpy as np
import pytest
from PIL import Image

from selfiescope.testing import synth
from selfiescope.testing.site import DEFAULT_TAGS, MockInstagram, TagSpec

SMALL = {"a": TagSpec(7, "selfie", noface=1, small_face=1, share_with=("b",)), "b": TagSpec(5, "portrait")}


class Client:
    """urllib with a cookie jar; redirects are returned, not followed, unless asked."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.jar = http.cookiejar.CookieJar()

    def request(self, path: str, data: dict[str, str] | None = None, follow: bool = False,
                headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes, str]:
        handlers: list[Any] = [urllib.request.HTTPCookieProcessor(self.jar)]
        if not follow:
            class NoRedirect(urllib.request.HTTPRedirectHandler):
                def redirect_request(self, *args: Any, **kwargs: Any) -> None:
                    return None
            handlers.append(NoRedirect())
        opener = urllib.request.build_opener(*handlers)
        body = urllib.parse.urlencode(data).encode() if data is not None else None
        req = urllib.request.Request(self.base + path, data=body, headers=headers or {})
        try:
            with opener.open(req, timeout=30) as resp:
                return resp.status, dict(resp.headers), resp.read(), resp.url
        except urllib.error.HTTPError as err:
            return err.code, dict(err.headers), err.read(), err.url

    def text(self, path: str, **kw: Any) -> tuple[int, str]:
        status, _, body, _ = self.request(path, **kw)
        return status, body.decode()

    def json(self, path: str) -> tuple[int, dict[str, str], Any]:
        status, headers, body, _ = self.request(path)
        return status, headers, json.loads(body)

    def login(self, username: str = "demo", password: str = "demo", next_url: str = "/") -> int:
        status, _, _, _ = self.request("/accounts/login/ajax/",
                                       {"username": username, "password": password, "next": next_url})
        return status

    def cookie(self, name: str) -> http.cookiejar.Cookie | None:
        return next((c for c in self.jar if c.name == name), None)


@pytest.fixture
def site():
    with MockInstagram(tags=SMALL, page_size=3) as s:
        yield s


def test_tag_page_without_session_is_a_login_wall(site):
    client = Client(site.base_url)
    status, headers, _, _ = client.request("/explore/tags/a/")
    assert status == 302 and headers["Location"] == "/accounts/login/?next=/explore/tags/a/"
    status, page = client.text("/accounts/login/?next=/explore/tags/a/")
    assert status == 200
    assert '<input name="username" autocomplete="username" aria-label="Phone number, username, or email"' in page
    assert 'name="password" type="password"' in page and 'aria-label="Password"' in page
    assert '<button type="submit"' in page and ">Log in</button>" in page
    status, _, body = client.json("/api/v1/tags/a/sections/?max_id=")
    assert status == 401 and body == {"message": "login_required", "require_login": True, "status": "fail"}


def test_wrong_password_gives_the_message_and_no_session(site):
    client = Client(site.base_url)
    status, page = client.text("/accounts/login/ajax/", data={"username": "demo", "password": "nope", "next": "/"})
    assert status == 200 and "Sorry, your password was incorrect." in page
    assert client.cookie("sessionid") is None


def test_login_sets_an_httponly_session_and_goes_to_next(site):
    client = Client(site.base_url)
    status, headers, _, _ = client.request("/accounts/login/ajax/",
                                           {"username": "demo", "password": "demo", "next": "/explore/tags/a/"})
    assert status == 302 and headers["Location"] == "/explore/tags/a/"
    assert "HttpOnly" in headers["Set-Cookie"] and client.cookie("sessionid") is not None
    status, page = client.text("/explore/tags/a/")
    assert status == 200
    assert page.count("<article") == 3
    first = site.posts("a")[0]
    assert f'href="/p/{first.shortcode}/"' in page and f'alt="Photo by {first.username}"' in page
    assert f"/media/{first.id}_150.jpg 150w" in page and f"/media/{first.id}_1080.jpg 1080w" in page
    # pop-ups: consent (no cookie yet), then once each: save login info, notifications
    assert page.count('role="dialog"') == 3
    for label in ("Allow the use of cookies", "Save your login info?", "Turn on Notifications"):
        assert f'aria-label="{label}' in page
    _, again = client.text("/explore/tags/a/")
    assert "Save your login info?" not in again and "Turn on Notifications" not in again


def test_no_open_redirect_after_login(site):
    client = Client(site.base_url)
    status, headers, _, _ = client.request("/accounts/login/ajax/",
                                           {"username": "demo", "password": "demo", "next": "//evil.example/"})
    assert status == 302 and headers["Location"] == "/"


def test_api_pages_through_the_whole_feed_in_order(site):
    client = Client(site.base_url)
    client.login()
    seen, cursor, pages = [], "", 0
    while True:
        status, _, body = client.json(f"/api/v1/tags/b/sections/?max_id={cursor}")
        assert status == 200 and body["status"] == "ok"
        for section in body["sections"]:
            for item in section["layout_content"]["medias"]:
                media = item["media"]
                assert media["id"] == f'{media["pk"]}_{media["user"]["pk"]}'
                candidates = media["image_versions2"]["candidates"]
                assert [c["width"] for c in candidates] == [1080, 640, 320, 150]
                assert candidates[0]["url"].startswith(site.base_url + "/media/")
                assert candidates[0]["height"] == media["original_height"]
                seen.append(media["code"])
        pages += 1
        if not body["more_available"]:
            assert body["next_max_id"] is None
            break
        cursor = body["next_max_id"]
    assert seen == [p.shortcode for p in site.posts("b")]
    assert len(seen) == 6 and pages == 2  # 5 posts + the repost from "a"
    status, _, body = client.json("/api/v1/tags/b/sections/?max_id=garbage!")
    assert status == 400 and body["status"] == "fail"


def test_every_nth_api_request_is_rate_limited_with_retry_after():
    with MockInstagram(tags=SMALL, rate_limit_every=3, retry_after_s=7) as site:
        client = Client(site.base_url)
        client.login()
        statuses = []
        for _ in range(6):
            status, headers, body = client.json("/api/v1/tags/a/sections/?max_id=")
            statuses.append(status)
            if status == 429:
                assert headers["Retry-After"] == "7"
                assert body == {"message": "Please wait a few minutes before you try again.", "status": "fail"}
        assert statuses == [200, 200, 429, 200, 200, 429]


def test_unknown_tag_is_404_and_known_routes_are_logged(site):
    client = Client(site.base_url)
    client.login()
    status, page = client.text("/explore/tags/nosuchtag/")
    assert status == 404 and "Sorry, this page isn't available." in page
    assert ("GET", "/explore/tags/nosuchtag/", 404) in site.requests
    assert ("POST", "/accounts/login/ajax/", 302) in site.requests


def test_media_is_jpeg_at_each_width_and_reposts_are_identical(site):
    client = Client(site.base_url)
    post = site.posts("a")[0]
    for width in (1080, 640, 150):
        status, headers, body, _ = client.request(post.media_path(width))
        assert status == 200 and headers["Content-Type"] == "image/jpeg"
        img = Image.open(io.BytesIO(body))
        assert img.format == "JPEG" and img.size == (width, round(post.height * width / post.width))
    assert client.request(f"/media/{post.id}_999.jpg")[0] == 404
    repost = next(p for p in site.posts("b") if p.duplicate_of)
    original = site.post(repost.duplicate_of)
    assert original.tag == "a" and repost.id != original.id and repost.username != original.username
    assert client.request(repost.media_path(640))[2] == client.request(original.media_path(640))[2]


def test_media_errors_happen_once_and_retries_succeed():
    with MockInstagram(tags=SMALL, image_error_every=2) as site:
        client = Client(site.base_url)
        paths = [p.media_path(150) for p in site.posts("a")[:4]]
        first = [client.request(p)[0] for p in paths]
        assert first == [200, 500, 200, 500]
        assert [client.request(p)[0] for p, s in zip(paths, first) if s == 500] == [200, 200]


def test_challenge_redirects_tag_pages_and_blocks_the_api(site):
    client = Client(site.base_url)
    client.login()
    site.trigger_challenge = True
    status, headers, _, _ = client.request("/explore/tags/a/")
    assert status == 302 and headers["Location"] == "/challenge/"
    status, page = client.text("/challenge/")
    assert "We detected an unusual login attempt" in page and "Help us confirm it" in page
    assert client.json("/api/v1/tags/a/sections/?max_id=")[2]["message"] == "checkpoint_required"
    site.trigger_challenge = False
    assert client.request("/explore/tags/a/")[0] == 200


def test_two_factor_login():
    with MockInstagram(tags=SMALL, two_factor_code="123456") as site:
        client = Client(site.base_url)
        status, headers, _, _ = client.request("/accounts/login/ajax/",
                                               {"username": "demo", "password": "demo", "next": "/explore/tags/a/"})
        assert status == 302 and headers["Location"].startswith("/accounts/login/two_factor/")
        assert client.cookie("sessionid") is None
        status, page = client.text(headers["Location"])
        assert 'aria-label="Security Code"' in page and ">Confirm</button>" in page
        status, page = client.text("/accounts/login/two_factor/", data={"verificationCode": "000000", "next": "/"})
        assert "check the security code" in page and client.cookie("sessionid") is None
        status, headers, _, _ = client.request("/accounts/login/two_factor/",
                                               {"verificationCode": "123456", "next": "/explore/tags/a/"})
        assert status == 302 and headers["Location"] == "/explore/tags/a/" and client.cookie("sessionid")


@pytest.mark.parametrize("lang, allow, later", [
    ("fr", "Autoriser tous les cookies", "Plus tard"),
    ("de", "Alle Cookies erlauben", "Jetzt nicht"),
])
def test_pop_ups_speak_the_chosen_language(lang, allow, later):
    with MockInstagram(tags=SMALL, consent_language=lang) as site:
        client = Client(site.base_url)
        client.login(next_url="/explore/tags/a/")
        _, page = client.text("/explore/tags/a/")
        assert f">{allow}</button>" in page and f">{later}</button>" in page and "Allow all cookies" not in page
    with pytest.raises(ValueError, match="consent_language"):
        MockInstagram(consent_language="xx")


def test_latency_delays_every_response():
    with MockInstagram(tags=SMALL, latency_ms=150) as site:
        client = Client(site.base_url)
        start = time.perf_counter()
        for _ in range(3):
            client.request("/")
        assert time.perf_counter() - start >= 0.45


def test_no_login_mode_serves_tags_directly():
    with MockInstagram(tags=SMALL, require_login=False) as site:
        assert Client(site.base_url).request("/explore/tags/a/")[0] == 200


def test_default_site_has_the_issue_s_mix():
    site = MockInstagram()
    assert set(DEFAULT_TAGS) == {"selfie", "selfies", "portrait", "portraitphotography"}
    for tag in DEFAULT_TAGS:
        labels = [p.label for p in site.posts(tag)]
        assert len(labels) >= 30 and "noface" in labels and "small_face" in labels
    assert {p.label for p in site.posts("selfie")} == {"selfie", "noface", "small_face"}
    shared = [p for p in site.posts("portrait") if p.duplicate_of]
    assert shared and site.post(shared[0].duplicate_of).tag == "selfie"
    assert site.media_bytes(shared[0], 320) == site.media_bytes(site.post(shared[0].duplicate_of), 320)
    ids = [p.id for tag in DEFAULT_TAGS for p in site.posts(tag)]
    assert len(ids) == len(set(ids))


def test_served_photos_match_their_labels(site):
    """Large faces for selfies, small faces under 10 %, no face for no-face posts (OpenCV Haar)."""
    by_label = {p.label: p for p in site.posts("a")}
    for label, check in [("selfie", lambda f: f is not None and f > 0.3),
                         ("small_face", lambda f: f is None or f < 0.1),
                         ("noface", lambda f: f is None)]:
        img = np.asarray(Image.open(io.BytesIO(site.media_bytes(by_label[label], 320))).convert("RGB"))
        assert check(synth.largest_face_fraction(img)), label


# -- a real Chromium ----------------------------------------------------------------

CHROMIUM = shutil.which("chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]


@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH")
async def test_chromium_logs_in_closes_pop_ups_and_scrolls_for_more():
    from playwright.async_api import async_playwright

    tags = {"a": TagSpec(20, "mixed", noface=2, small_face=2)}
    with MockInstagram(tags=tags, page_size=6, rate_limit_every=2, retry_after_s=0.2) as site:
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            try:
                page = await browser.new_page(viewport={"width": 900, "height": 700})
                await page.route("**/media/**", lambda route: route.abort())  # no images needed here
                await page.goto(site.base_url + "/explore/tags/a/")
                assert page.url.endswith("/accounts/login/?next=/explore/tags/a/")
                consent = page.get_by_role("dialog", name="Allow the use of cookies from Instagram on this browser?")
                await consent.get_by_role("button", name="Allow all cookies").click()
                await consent.wait_for(state="detached")
                await page.get_by_label("Phone number, username, or email").fill("demo")
                await page.get_by_label("Password").fill("demo")
                await page.get_by_role("button", name="Log in").click()
                await page.wait_for_url("**/explore/tags/a/")

                articles = page.locator("main article")
                assert await articles.count() == 6
                save = page.get_by_role("dialog", name="Save your login info?")
                notif = page.get_by_role("dialog", name="Turn on Notifications")
                assert await save.is_visible() and await notif.is_visible()
                # While a pop-up is open, scrolling loads nothing.
                await page.evaluate("window.scrollTo(0, document.body.scrollHeight)")
                await page.wait_for_timeout(500)
                assert await articles.count() == 6
                await save.get_by_role("button", name="Not now").click()
                await notif.get_by_role("button", name="Not Now").click()
                await page.get_by_role("dialog").first.wait_for(state="detached")

                heights = []
                for _ in range(30):
                    if await articles.count() == len(site.posts("a")):
                        break
                    heights.append(await page.evaluate("document.body.scrollHeight"))
                    await page.mouse.wheel(0, 3000)
                    await page.wait_for_timeout(300)
                count = await articles.count()
                assert count == len(site.posts("a"))
                assert heights == sorted(heights) and heights[-1] > heights[0]
                await page.get_by_text("No more posts").wait_for()
                codes = await page.locator("main article a").evaluate_all("els => els.map(a => a.getAttribute('href'))")
                assert codes == [f"/p/{p.shortcode}/" for p in site.posts("a")]
                statuses = [s for m, path, s in site.requests if path.startswith("/api/")]
                assert 429 in statuses and statuses.count(200) == 3  # rate limited, then retried
            finally:
                await browser.close()
