"""docs/instagram.md is what the source, the local site and the scrubber follow: check they agree."""

from __future__ import annotations

import json
import re
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from selfiescope.core import har
from selfiescope.plugins.instagram import find_medias, post_from_media
from selfiescope.plugins.instagram.doctor import MEDIA_FIELDS, PAGE_FIELDS
from selfiescope.testing.site import MockInstagram, TagSpec

DOC = (Path(__file__).resolve().parents[1] / "docs" / "instagram.md").read_text(encoding="utf-8")


def doc_feed_page() -> dict[str, Any]:
    block = re.search(r"```json feed-page\n(.*?)```", DOC, re.S)
    assert block, "docs/instagram.md lost its documented feed page"
    return json.loads(block.group(1))


def doc_table(heading: str) -> list[str]:
    """First-column code names of the table under ``heading``."""
    section = DOC.split(heading, 1)[1].split("\n## ", 1)[0]
    rows = [line.split("|")[1] for line in section.splitlines() if line.startswith("| `")]
    return [name for cell in rows for name in re.findall(r"`([^`]+)`", cell)]


def shape(value: Any) -> Any:
    """Keys, recursively (first element of lists): what a reader of the JSON depends on."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shape(value[0])] if value else []
    return None


def missing(documented: Any, actual: Any, path: str = "") -> list[str]:
    if isinstance(documented, dict):
        if not isinstance(actual, dict):
            return [path or "/"]
        return [m for k, v in documented.items()
                for m in ([f"{path}.{k}"] if k not in actual else missing(v, actual[k], f"{path}.{k}"))]
    if isinstance(documented, list) and documented:
        return missing(documented[0], actual[0], path + "[]") if isinstance(actual, list) and actual else [path + "[]"]
    return []


def test_the_source_reads_the_documented_media() -> None:
    page = doc_feed_page()
    medias = find_medias(page)
    assert len(medias) == 1
    post = post_from_media(medias[0])
    assert post is not None and post.shortcode == "CupJ3k1Lz4o"
    assert post.width == 1080 and "oe=6576D61D" in post.image_url  # the largest candidate
    assert post.extra["pk"] == "3143473842199042536" and post.extra["owner"] == "sunny_ab12c"
    assert post.extra["caption"] == "sunny #selfie" and post.extra["taken_at"] == 1767139200


def test_the_doctor_checks_what_the_doc_documents() -> None:
    documented = set(doc_table("### A media object"))
    for name in (*MEDIA_FIELDS, *PAGE_FIELDS):
        assert any(name == d or d.startswith(name) for d in documented), name


def test_recordings_are_scrubbed_of_every_documented_cookie_and_auth_header() -> None:
    cookies = doc_table("## Cookies")
    assert {"sessionid", "csrftoken", "ds_user_id", "mid", "ig_did"} <= set(cookies)
    headers = [h for h in doc_table("## Headers the web app sends") if h.lower() not in
               ("x-ig-app-id", "x-requested-with")]  # public constants, kept for replay
    values = {name: f"secret-{i:04d}-value" for i, name in enumerate(cookies + headers)}
    entry = {"request": {"method": "GET", "url": "https://www.instagram.com/api/v1/tags/a/sections/",
                         "headers": [{"name": "Cookie", "value": "; ".join(f"{c}={values[c]}" for c in cookies)}]
                         + [{"name": h.split(",")[0], "value": values[h]} for h in headers if "," not in h],
                         "cookies": [{"name": c, "value": values[c]} for c in cookies]},
             "response": {"status": 200, "headers": [{"name": "Set-Cookie", "value": f"{c}={values[c]}; Path=/"}
                                                      for c in cookies],
                          "cookies": [], "content": {"mimeType": "text/html",
                                                     "text": " ".join(values[c] for c in cookies)}}}
    clean, _ = har.scrub({"log": {"entries": [entry]}})
    text = json.dumps(clean)
    leaked = [name for name, value in values.items() if value in text and name not in ("Referer", "Sec-Fetch-*")]
    assert not leaked


@pytest.fixture(scope="module")
def site():
    with MockInstagram(tags={"alpha": TagSpec(9, "selfie")}, page_size=4) as s:
        yield s


def fetch_json(site: MockInstagram, path: str, form: dict[str, str] | None = None) -> Any:
    data = "&".join(f"{k}={v}" for k, v in form.items()).encode() if form is not None else None
    csrf = "dOcUmEnTeD0123456789csrf"  # as the documented client sends it: cookie and header agree
    request = urllib.request.Request(site.base_url + path, data=data, headers={
        "Cookie": f"sessionid={site.login_session()}; csrftoken={csrf}", "X-CSRFToken": csrf,
        "X-IG-App-ID": "936619743392459", "X-Requested-With": "XMLHttpRequest"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def test_the_local_site_answers_the_documented_feed_shape(site: MockInstagram) -> None:
    documented = shape(doc_feed_page())
    first = fetch_json(site, "/api/v1/tags/alpha/sections/")
    assert missing(documented, first) == []
    # The web app's own call is a POST with a form (gallery-dl's tags_sections): answered the same.
    second = fetch_json(site, "/api/v1/tags/alpha/sections/",
                        {"include_persistent": "0", "max_id": first["next_max_id"], "page": str(first["next_page"]),
                         "surface": "grid", "tab": "recent"})
    assert missing(documented, second) == []
    codes = [m["media"]["code"] for s in first["sections"] + second["sections"] for m in s["layout_content"]["medias"]]
    assert codes == [p.shortcode for p in site.posts("alpha")][: len(codes)] and len(codes) == 8
    for section in first["sections"]:
        for item in section["layout_content"]["medias"]:
            widths = [c["width"] for c in item["media"]["image_versions2"]["candidates"]]
            assert widths == sorted(widths, reverse=True)  # largest first, as on the real site


@pytest.mark.browser
async def test_the_local_sites_page_sends_the_documented_headers(site: MockInstagram, tmp_path: Path) -> None:
    from selfiescope.core.browser import BrowserPool
    from selfiescope.core.settings import BrowserSettings
    from selfiescope.core.web import click_dialog_buttons, scroll_and_wait

    app_id = re.search(r"^\| `X-IG-App-ID` \| `(\d+)`", DOC, re.M)
    assert app_id, "the documented app id"
    pool = BrowserPool(BrowserSettings(timeout_s=10, session_file=tmp_path / "s.json"))
    cookie = {"name": "sessionid", "value": site.login_session(), "domain": "127.0.0.1", "path": "/"}
    try:
        async with pool.lease(storage_state={"cookies": [cookie], "origins": []}) as lease:
            page = await lease.page()
            async with page.expect_request(lambda r: "/api/v1/tags/alpha/sections/" in r.url, timeout=10_000) as info:
                await lease.goto(f"{site.base_url}/explore/tags/alpha/")
                await click_dialog_buttons(page, ["Decline optional cookies", "Not Now", "Not now"])
                await scroll_and_wait(page, 2.0)
            request = await info.value
            headers = await request.all_headers()
            jar = {c["name"]: c["value"] for c in await lease.context.cookies()}
    finally:
        await pool.close()
    assert headers.get("x-ig-app-id") == app_id.group(1)
    if "csrftoken" in jar:  # documented: the header echoes the cookie wherever the site sets one
        assert headers.get("x-csrftoken") == jar["csrftoken"]


def test_paging_is_found_where_the_documented_answers_keep_it() -> None:
    """The sections answer keeps paging at the top level; the ``__a=1`` / web_info answers under
    ``data.top`` and ``data.recent``: the source (and the doctor) read it in every one."""
    from selfiescope.plugins.instagram.feed import feed_paging

    page = doc_feed_page()
    assert [p["next_max_id"] for p in feed_paging(page)] == [page["next_max_id"]]
    nested = {"data": {"top": {"sections": [], "more_available": False, "next_max_id": None},
                       "recent": {"sections": page["sections"], "more_available": True, "next_max_id": "QVFE"}},
              "status": "ok"}
    pagings = feed_paging(nested)
    assert len(pagings) == 2 and any(p["more_available"] for p in pagings)
    assert feed_paging({"items": [], "status": "ok"}) == []
