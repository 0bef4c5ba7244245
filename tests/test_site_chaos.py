"""Each chaos knob of the local site does what it says (over HTTP, and in a real Chromium)."""

from __future__ import annotations

import http.client
import re
import shutil
import time
from html import unescape
from urllib.parse import urlsplit

import pytest

from selfiescope.core.web import choose_dismiss_button, sniff_image_type
from selfiescope.testing.chaos import Chaos
from selfiescope.testing.site import MockInstagram, TagSpec
from test_site import Client

TAGS = {"a": TagSpec(7, "selfie", noface=1, small_face=1), "b": TagSpec(5, "portrait")}


def site_with(**knobs) -> MockInstagram:
    return MockInstagram(tags=TAGS, page_size=3, require_login=False, chaos=Chaos(**knobs))


def raw_get(base: str, path: str, timeout: float = 5.0, headers: dict[str, str] | None = None,
            method: str = "GET", body: str | None = None) -> tuple[int, dict[str, str], bytes]:
    host = urlsplit(base)
    conn = http.client.HTTPConnection(host.hostname, host.port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


def first_api_url(client: Client, tag: str = "a") -> str:
    status, _, data = client.json(f"/api/v1/tags/{tag}/sections/")
    assert status == 200, data
    return data["sections"][0]["layout_content"]["medias"][0]["media"]["image_versions2"]["candidates"][0]["url"]


def test_parse_reads_the_mock_site_flag() -> None:
    chaos = Chaos.parse("hung_beacons, url_ttl_s=5, stale_url_share=0.5, login_variant=labels, hung_feed_every=3", seed=4)
    assert chaos.hung_beacons and chaos.url_ttl_s == 5 and chaos.stale_url_share == 0.5
    assert chaos.login_variant == "labels" and chaos.hung_feed_every == 3 and chaos.seed == 4
    with pytest.raises(ValueError, match="unknown chaos knob"):
        Chaos.parse("nonsense")
    with pytest.raises(ValueError, match="needs a value"):
        Chaos.parse("url_ttl_s")
    with pytest.raises(ValueError, match="needs url_ttl_s"):
        Chaos(stale_url_share=0.3)


def test_hung_feed_answers_send_headers_then_nothing_until_the_site_stops() -> None:
    with site_with(hung_feed_every=1) as site:
        with pytest.raises((TimeoutError, OSError)):
            raw_get(site.base_url, "/api/v1/tags/a/sections/", timeout=1.0)
        status, _, body = raw_get(site.base_url, "/api/v1/tags/a/sections/")  # once per page
        assert status == 200 and b'"status": "ok"' in body
        with pytest.raises((TimeoutError, OSError)):  # the beacon and the activity fetch hang too
            raw_get(site.base_url, "/api/v1/web/consent/update/", timeout=1.0, method="POST", body="x")
        with pytest.raises((TimeoutError, OSError)):
            raw_get(site.base_url, "/api/v1/web/activity/", timeout=1.0)
    started = time.monotonic()
    site.stop()
    assert time.monotonic() - started < 5


def test_signed_urls_expire_and_post_pages_give_fresh_ones() -> None:
    with site_with(url_ttl_s=60, stale_url_share=1.0) as site:
        client = Client(site.base_url)
        stale = first_api_url(client)
        path = stale[len(site.base_url):]
        status, _, body = raw_get(site.base_url, path)
        assert status == 403 and body == b"URL signature expired"
        post = site.posts("a")[0]
        _, page = client.text(f"/p/{post.shortcode}/")
        fresh = unescape(re.search(r'property="og:image" content="([^"]+)"', page).group(1))
        status, headers, body = raw_get(site.base_url, fresh[len(site.base_url):])
        assert status == 200 and headers["Content-Type"] == "image/jpeg" and body == site.media_bytes(post)
        tampered = re.sub(r"sig=\w+", "sig=" + "0" * 32, fresh[len(site.base_url):])
        assert raw_get(site.base_url, tampered)[2] == b"URL signature mismatch"
        assert raw_get(site.base_url, post.media_path(1080))[0] == 403  # unsigned


def test_images_are_cut_off_or_mislabelled_once_per_url() -> None:
    with site_with(drop_image_every=1) as site:
        path = site.posts("a")[0].media_path(320)
        with pytest.raises(http.client.IncompleteRead):
            raw_get(site.base_url, path)
        assert raw_get(site.base_url, path)[0] == 200
    with site_with(wrong_type_every=1, seed=1) as site:
        kinds = set()
        for post in site.posts("a"):
            status, headers, body = raw_get(site.base_url, post.media_path(150))
            kinds.add(headers["Content-Type"].split(";")[0])
            if headers["Content-Type"] == "application/octet-stream":
                assert sniff_image_type(body) == "image/jpeg"
            again = raw_get(site.base_url, post.media_path(150))
            assert again[1]["Content-Type"] == "image/jpeg"
        assert kinds == {"application/octet-stream", "text/html"}


def test_api_calls_need_the_csrf_token_and_the_app_id() -> None:
    with site_with(require_api_headers=True) as site:
        client = Client(site.base_url)
        client.request("/")  # sets csrftoken
        token = next(c.value for c in client.jar if c.name == "csrftoken")
        assert client.request("/api/v1/tags/a/sections/")[0] == 403
        assert client.request("/api/v1/tags/a/sections/", headers={"X-CSRFToken": token})[0] == 403
        ok = client.request("/api/v1/tags/a/sections/", headers={"X-CSRFToken": token, "X-IG-App-ID": "936619743392459"})
        assert ok[0] == 200


def test_an_account_block_answers_429_for_every_tag_until_it_ends() -> None:
    with site_with(account_block_after=1, account_block_s=1.0) as site:
        client = Client(site.base_url)
        assert client.request("/api/v1/tags/a/sections/")[0] == 200
        status, headers, _, _ = client.request("/api/v1/tags/b/sections/")
        assert status == 429 and headers["Retry-After"] == "1"
        assert client.request("/api/v1/tags/a/sections/")[0] == 429
        time.sleep(1.1)
        assert client.request("/api/v1/tags/b/sections/")[0] == 200


def test_slow_first_bytes_delay_some_answers() -> None:
    with site_with(slow_first_byte_ms=400, seed=2) as site:
        took = []
        for _ in range(9):
            started = time.monotonic()
            raw_get(site.base_url, "/")
            took.append(time.monotonic() - started)
        assert max(took) > 0.05 and min(took) < 0.05


def test_login_form_variants() -> None:
    with MockInstagram(tags=TAGS, consent_language="fr", chaos=Chaos(login_variant="labels")) as site:
        _, page = Client(site.base_url).text("/accounts/login/")
        assert '<label for="ss-f1">Numéro de mobile' in page and 'name="username"' not in page
        assert Client(site.base_url).request("/accounts/login/ajax/", {"email": "demo", "pass": "demo"})[0] == 302
    with MockInstagram(tags=TAGS, chaos=Chaos(js_login=True)) as site:
        _, page = Client(site.base_url).text("/accounts/login/")
        assert "<input" not in page and '"login_form"' in page  # only the script draws the form


def test_unknown_consent_dialog_and_the_generic_choice() -> None:
    with MockInstagram(tags=TAGS, chaos=Chaos(unknown_consent=True)) as site:
        _, page = Client(site.base_url).text("/")
        assert "Continue with necessary cookies only" in page and "Decline optional cookies" not in page
    pick = choose_dismiss_button
    assert pick(["×", "Accept all and continue", "Continue with necessary cookies only"], []) == 2
    assert pick(["Alle akzeptieren", "Nur notwendige Cookies verwenden"], []) == 1
    assert pick(["Tout accepter", "Fermer"], []) == 1
    assert pick(["Allow all cookies", "OK"], []) is None  # nothing that declines: never accept
    assert pick(["Turn On", "Not Now"], ["Not Now"]) == 1


# -- a real Chromium ----------------------------------------------------------------
CHROMIUM = shutil.which("chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]


@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH")
async def test_in_chromium_js_login_late_dialog_client_feed_and_virtual_grid() -> None:
    from playwright.async_api import async_playwright

    tags = {"a": TagSpec(30, "mixed", noface=2, small_face=2)}
    chaos = Chaos(js_login=True, late_dialog_ms=800, late_dialog_language="fr", client_feed=True, virtual_grid=2,
                  require_api_headers=True)
    with MockInstagram(tags=tags, page_size=6, chaos=chaos) as site:
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            try:
                page = await browser.new_page(viewport={"width": 900, "height": 700})
                await page.route("**/media/**", lambda route: route.abort())
                await page.goto(site.base_url + "/accounts/login/?next=/explore/tags/a/")
                await page.get_by_role("dialog").get_by_role("button", name="Decline optional cookies").click()
                button = page.get_by_role("button", name="Log in")
                await button.wait_for()
                assert await button.is_disabled()  # until both fields are typed
                await page.get_by_label("Phone number, username, or email").fill("demo")
                assert await button.is_disabled()
                await page.get_by_label("Password").fill("demo")
                assert await button.is_enabled()
                await button.click()
                await page.wait_for_url("**/explore/tags/a/")
                articles = page.locator("main article")
                await articles.first.wait_for()  # the first page came from the API, behind the pop-ups
                assert await articles.count() == 6
                late = page.get_by_role("dialog", name="Activer les notifications")
                await late.wait_for()
                while await page.get_by_role("dialog").count():
                    await page.get_by_role("dialog").last.get_by_role("button").last.click()
                seen: set[str] = set()
                for _ in range(40):
                    hrefs = await page.locator("main article a").evaluate_all("els => els.map(a => a.getAttribute('href'))")
                    seen.update(hrefs)
                    if len(seen) == 30:
                        break
                    await page.mouse.wheel(0, 1500)
                    await page.wait_for_timeout(250)
                assert len(seen) == 30
                assert await articles.count() < 30  # rows far above the viewport left the DOM
            finally:
                await browser.close()


def test_mock_site_command_rejects_an_unknown_knob() -> None:
    from typer.testing import CliRunner

    from selfiescope.cli import app

    result = CliRunner().invoke(app, ["mock-site", "--port", "0", "--chaos", "hung_beacons,teleport=1"])
    assert result.exit_code == 2 and "unknown chaos knob 'teleport'" in result.output


def test_a_session_ends_after_its_feed_calls_and_the_site_counts_logins() -> None:
    with MockInstagram(tags=TAGS, page_size=3, chaos=Chaos(session_expires_after_feeds=2)) as site:
        client = Client(site.base_url)
        assert client.login("demo", "wrong") == 200 and site.login_attempts == 1  # the form again, with an alert
        assert client.login() == 302 and site.login_attempts == 2
        for _ in range(2):
            assert client.json("/api/v1/tags/a/sections/")[0] == 200
        status, _, data = client.json("/api/v1/tags/a/sections/")
        assert status == 401 and data["message"] == "login_required"
        assert site.sessions_ended == 1
        status, headers, _, _ = client.request("/explore/tags/a/")
        assert status == 302 and headers["Location"].startswith("/accounts/login/")  # the session is gone
        assert site.sessions_ended == 1  # counted once


def test_a_session_ends_after_its_time() -> None:
    with MockInstagram(tags=TAGS, page_size=3, chaos=Chaos(session_ttl_s=0.5)) as site:
        client = Client(site.base_url)
        assert client.login() == 302
        assert client.json("/api/v1/tags/a/sections/")[0] == 200
        time.sleep(0.6)
        assert client.json("/api/v1/tags/a/sections/")[0] == 401 and site.sessions_ended == 1


def test_a_client_rendered_post_page_has_no_image_in_its_html_and_its_data_has_fresh_urls() -> None:
    with MockInstagram(tags=TAGS, page_size=3, chaos=Chaos(client_post_page=True, url_ttl_s=60,
                                                           stale_url_share=1.0)) as site:
        client = Client(site.base_url)
        client.login()
        post = site.posts("a")[0]
        status, html = client.text(f"/p/{post.shortcode}/")
        assert status == 200 and "og:image" not in html and "<img" not in html and post.id in html
        status, _, data = client.json(f"/api/v1/media/{post.id}/info/")
        assert status == 200 and data["items"][0]["code"] == post.shortcode
        url = data["items"][0]["image_versions2"]["candidates"][0]["url"]
        assert raw_get(site.base_url, url[len(site.base_url):])[0] == 200  # fresh, unlike the feed's
        assert raw_get(site.base_url, first_api_url(client)[len(site.base_url):])[0] == 403
