"""Property: wherever a session's secrets sit in a recording, none survives scrubbing."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote, urlencode

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from selfiescope.core import har

# Tokens: long, with at least one digit (a cookie value like "essential" is not replaced in pages).
SECRET = st.builds(
    lambda text, digit, at: text[:at] + digit + text[at:],
    st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:%#!", min_size=11,
            max_size=39),
    st.sampled_from("0123456789"), st.integers(0, 39),
)
# Where a browser session puts a secret the first time (named by a cookie, a header or a form field).
PLACES = ["cookie_header", "set_cookie", "cookie_list", "csrf_header", "authorization", "www_claim",
          "form_password", "form_username", "form_enc_password", "json_csrf", "query_csrf"]
KEEP = "caption-kept-9f3e #selfie"  # ordinary text must survive


def recording(placed: list[tuple[str, str]]) -> dict[str, Any]:
    req_headers: list[dict[str, str]] = [{"name": "User-Agent", "value": "Chromium"}]
    resp_headers: list[dict[str, str]] = [{"name": "Content-Type", "value": "text/html"}]
    cookies, form, json_body, query = [], [], {}, []
    for i, (place, secret) in enumerate(placed):
        if place == "cookie_header":
            req_headers.append({"name": "Cookie", "value": f"c{i}={secret}; other=1"})
        elif place == "set_cookie":
            resp_headers.append({"name": "Set-Cookie", "value": f"c{i}={secret}; Path=/; HttpOnly"})
        elif place == "cookie_list":
            cookies.append({"name": f"c{i}", "value": secret})
        elif place == "csrf_header":
            req_headers.append({"name": "X-CSRFToken", "value": secret})
        elif place == "authorization":
            req_headers.append({"name": "Authorization", "value": f"Bearer {secret}"})
        elif place == "www_claim":
            resp_headers.append({"name": "x-ig-set-www-claim", "value": secret})
        elif place.startswith("form_"):
            form.append((place.removeprefix("form_"), secret))
        elif place == "json_csrf":
            json_body[f"config{i}"] = {"csrf_token": secret}  # as a page's config embeds it
        elif place == "query_csrf":
            query.append(("csrf_token", secret))
    echoes = " ".join(s for _, s in placed)  # the page repeats them: HTML, JSON, a later URL
    entries = [
        {"request": {"method": "POST", "url": "https://www.instagram.com/api/v1/web/accounts/login/ajax/",
                     "headers": req_headers, "cookies": cookies, "queryString": [],
                     "postData": {"mimeType": "application/x-www-form-urlencoded", "text": urlencode(form)}},
         "response": {"status": 200, "headers": resp_headers, "cookies": [],
                      "content": {"mimeType": "application/json", "text": json.dumps({**json_body, "ok": KEEP})}}},
        {"request": {"method": "GET", "url": "https://www.instagram.com/explore/tags/a/?" + urlencode(query),
                     "headers": [], "cookies": [], "queryString": [{"name": k, "value": v} for k, v in query]},
         "response": {"status": 200, "headers": [], "cookies": [],
                      "content": {"mimeType": "text/html; charset=utf-8", "text": f"<p>{KEEP}</p><i>{echoes}</i>"}}},
        {"request": {"method": "GET", "url": "https://www.instagram.com/p/x/?q=" + quote(echoes, safe=""),
                     "headers": [], "cookies": [], "queryString": []},
         "response": {"status": 200, "headers": [], "cookies": [], "content": {"mimeType": "image/jpeg"}}},
    ]
    return {"log": {"entries": entries}}


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(PLACES), SECRET), min_size=1, max_size=8))
def test_no_secret_survives_scrubbing(placed: list[tuple[str, str]]) -> None:
    scaffold = json.dumps(recording([(p, "PLACEHOLDER") for p, _ in placed]))
    for _, secret in placed:
        assume(secret not in scaffold and secret not in KEEP and "REDACTED" not in secret)
    clean, replaced = har.scrub(recording(placed))
    text = json.dumps(clean)
    for _, secret in placed:
        assert secret not in text
        assert quote(secret, safe="") not in text or quote(secret, safe="") == secret
    assert replaced >= len(placed)
    assert KEEP in text  # what is not a secret stays readable


def test_an_ordinary_cookie_value_is_redacted_in_the_cookie_but_not_in_scripts() -> None:
    entry = {"request": {"method": "GET", "url": "https://x.test/", "headers": [{"name": "Cookie", "value":
                         "consent=essential; flag=undefined; sessionid=abc"}], "cookies": []},
             "response": {"status": 200, "headers": [{"name": "Set-Cookie",
                                                      "value": "a=1; Path=/\nsessionid=tok3n-Value-9; HttpOnly"}],
                          "cookies": [], "content": {"mimeType": "text/javascript",
                                                     "text": "if (x === undefined) c = 'essential'; s='tok3n-Value-9'"}}}
    clean, _ = har.scrub({"log": {"entries": [entry]}})
    body = clean["log"]["entries"][0]["response"]["content"]["text"]
    assert body == "if (x === undefined) c = 'essential'; s='REDACTED'"
    assert clean["log"]["entries"][0]["request"]["headers"][0]["value"] == "REDACTED"
