"""Scrubbing a HAR recording: no cookie, auth header, CSRF token or credential survives.

A value found where a secret is *named* (a cookie, an auth header, a credential form or JSON
field, a token in a query string) is replaced there and everywhere else it appears: page
HTML, JSON bodies, URLs, other headers. ``tests/test_har_scrub_property.py`` places random
secrets in all those spots and checks none survives.
"""

from __future__ import annotations

import base64
import json
import re
from typing import Any, Iterable
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

REDACTED = "REDACTED"
# Header names whose values authenticate (lower case). Cookie headers are handled apart.
AUTH_HEADERS = {
    "authorization", "proxy-authorization", "x-csrftoken", "x-csrf-token", "x-xsrf-token",
    "x-ig-www-claim", "x-instagram-ajax", "x-mid", "ig-u-ds-user-id", "ig-u-rur", "ig-intended-user-id",
    "x-ig-set-www-claim", "x-web-device-id", "x-ig-device-id", "x-fb-lsd", "x-asbd-id",
}
COOKIE_HEADERS = {"cookie", "set-cookie"}
# Cookies that identify the account or device (docs/instagram.md), whatever their values look like.
SENSITIVE_COOKIES = {"sessionid", "csrftoken", "ds_user_id", "mid", "ig_did", "rur", "datr", "shbid", "shbts",
                     "ig_nrcb", "ss_2fa"}
# Form, query and JSON keys whose values are credentials or tokens (lower case).
SECRET_KEYS = {
    "username", "password", "enc_password", "passwd", "pass", "verificationcode", "csrfmiddlewaretoken",
    "csrf_token", "csrftoken", "sessionid", "ds_user_id", "mid", "ig_did", "fb_dtsg", "lsd", "jazoest",
    "access_token", "token", "two_factor_identifier", "identifier",
}
# Secret values shorter than this are not replaced inside bodies (they would hit ordinary text).
MIN_SECRET_LEN = 4
_JSON_SECRET = re.compile(
    r'("(?:' + "|".join(sorted(re.escape(k) for k in SECRET_KEYS)) + r')"\s*:\s*")([^"\\]*)(")', re.IGNORECASE
)
_TEXT_TYPES = ("text/", "application/json", "application/javascript", "application/x-www-form-urlencoded",
               "application/xml", "+json", "+xml")


def _is_text(mime: str | None) -> bool:
    mime = (mime or "").lower()
    return any(t in mime for t in _TEXT_TYPES)


def _cookie_pairs(header_value: str, set_cookie: bool) -> list[tuple[str, str]]:
    """(name, value) of a ``Cookie`` header, or of each cookie of a ``Set-Cookie`` header
    (several may be joined by newlines; their attributes are not cookies)."""
    if set_cookie:
        parts = [line.split(";")[0] for line in header_value.splitlines()]
    else:
        parts = header_value.split(";")
    pairs = []
    for part in parts:
        name, sep, value = part.strip().partition("=")
        if sep:
            pairs.append((name.strip(), value.strip().strip('"')))
    return pairs


def _token_like(name: str, value: str) -> bool:
    """Whether a cookie's value is replaced wherever it appears, not only in the cookie.

    Session cookies are tokens (long, with digits); a value like ``essential`` or
    ``undefined`` is not, and replacing it in pages and scripts would break the replay.
    The cookie itself is always redacted.
    """
    return name.lower() in SENSITIVE_COOKIES or (len(value) >= 8 and any(c.isdigit() for c in value))


def collect_secrets(har: dict[str, Any]) -> set[str]:
    """Every cookie value, auth header value and credential form value found in ``har``."""
    found: set[str] = set()
    for entry in har["log"]["entries"]:
        for part in (entry.get("request", {}), entry.get("response", {})):
            cookies = [(str(c.get("name", "")), str(c.get("value", ""))) for c in part.get("cookies") or []]
            for header in part.get("headers") or []:
                name = str(header.get("name", "")).lower()
                if name in COOKIE_HEADERS:
                    cookies += _cookie_pairs(str(header.get("value", "")), name == "set-cookie")
                elif name in AUTH_HEADERS:
                    value = str(header.get("value", ""))
                    found.add(value)
                    found.update(value.split())  # "Bearer TOKEN": the token alone is echoed elsewhere
            found.update(value for name, value in cookies if _token_like(name, value))
        request = entry.get("request", {})
        query = parse_qsl(urlsplit(str(request.get("url", ""))).query, keep_blank_values=True)
        query += [(str(q.get("name", "")), str(q.get("value", ""))) for q in request.get("queryString") or []]
        found.update(v for k, v in query if k.lower() in SECRET_KEYS)
        post = request.get("postData") or {}
        for param in post.get("params") or []:
            if str(param.get("name", "")).lower() in SECRET_KEYS:
                found.add(str(param.get("value", "")))
        text = post.get("text")
        if isinstance(text, str):
            found.update(v for k, v in _form_or_json_pairs(text) if k.lower() in SECRET_KEYS)
        content = entry.get("response", {}).get("content") or {}
        body = content.get("text")
        if isinstance(body, str) and _is_text(content.get("mimeType")) and content.get("encoding") != "base64":
            found.update(m.group(2) for m in _JSON_SECRET.finditer(body))  # e.g. a page's "csrf_token":"…"
    return {s for s in found if len(s) >= MIN_SECRET_LEN and s != REDACTED}


def _form_or_json_pairs(text: str) -> list[tuple[str, str]]:
    try:
        data = json.loads(text)
    except ValueError:
        return parse_qsl(text, keep_blank_values=True)
    return [(str(k), str(v)) for k, v in data.items()] if isinstance(data, dict) else []


class _Scrubber:
    def __init__(self, secrets: Iterable[str]) -> None:
        # longest first, so a secret containing another is replaced whole
        self.secrets = sorted({s for s in secrets if s and len(s) >= MIN_SECRET_LEN}, key=len, reverse=True)
        self.replaced = 0

    def text(self, value: str) -> str:
        for secret in self.secrets:
            for form in {secret, quote(secret, safe=""), quote(secret)}:
                if form in value:
                    self.replaced += value.count(form)
                    value = value.replace(form, REDACTED)
        value, n = _JSON_SECRET.subn(lambda m: m.group(1) + REDACTED + m.group(3), value)
        self.replaced += n
        return value

    def url(self, url: str) -> str:
        parts = urlsplit(url)
        if parts.query:
            pairs = [(k, REDACTED if k.lower() in SECRET_KEYS else self.text(v))
                     for k, v in parse_qsl(parts.query, keep_blank_values=True)]
            parts = parts._replace(query=urlencode(pairs, safe="/:,"))
        return self.text(urlunsplit(parts))

    def headers(self, headers: list[dict[str, Any]]) -> list[dict[str, Any]]:
        out = []
        for header in headers or []:
            name = str(header.get("name", ""))
            low = name.lower()
            if low in COOKIE_HEADERS or low in AUTH_HEADERS:
                out.append({**header, "value": REDACTED})
                self.replaced += 1
            else:
                out.append({**header, "value": self.text(str(header.get("value", "")))})
        return out

    def cookies(self, cookies: list[dict[str, Any]]) -> list[dict[str, Any]]:
        self.replaced += len(cookies or [])
        return [{**c, "value": REDACTED} for c in cookies or []]

    def post_data(self, post: dict[str, Any]) -> dict[str, Any]:
        post = dict(post)
        if post.get("params"):
            post["params"] = [
                {**p, "value": REDACTED if str(p.get("name", "")).lower() in SECRET_KEYS
                 else self.text(str(p.get("value", "")))}
                for p in post["params"]
            ]
        text = post.get("text")
        if isinstance(text, str) and text:
            mime = str(post.get("mimeType", "")).lower()
            if "json" in mime:
                try:
                    data = json.loads(text)
                except ValueError:
                    data = None
                if isinstance(data, dict):
                    text = json.dumps({k: REDACTED if k.lower() in SECRET_KEYS else v for k, v in data.items()})
            elif "x-www-form-urlencoded" in mime or ("=" in text and " " not in text):
                pairs = parse_qsl(text, keep_blank_values=True)
                if pairs:
                    text = urlencode([(k, REDACTED if k.lower() in SECRET_KEYS else v) for k, v in pairs])
            post["text"] = self.text(text)
        return post

    def content(self, content: dict[str, Any]) -> dict[str, Any]:
        content = dict(content)
        text = content.get("text")
        if not isinstance(text, str) or not _is_text(content.get("mimeType")):
            return content
        if content.get("encoding") == "base64":
            try:
                decoded = base64.b64decode(text).decode("utf-8")
            except (ValueError, UnicodeDecodeError):
                return content
            scrubbed = self.text(decoded)
            if scrubbed != decoded:
                content["text"] = base64.b64encode(scrubbed.encode()).decode()
                content["size"] = len(scrubbed.encode())
            return content
        scrubbed = self.text(text)
        if scrubbed != text:
            content["text"] = scrubbed
            content["size"] = len(scrubbed.encode())
        return content


def scrub(har: dict[str, Any], extra_secrets: Iterable[str] = ()) -> tuple[dict[str, Any], int]:
    """A copy of ``har`` without cookies, auth headers, CSRF tokens or credentials.

    Every value found in a cookie, an auth header or a credential field is also replaced
    wherever else it appears (URLs, bodies, other headers), with ``extra_secrets`` (the
    environment's password, a saved session's cookies). Returns the copy and the number
    of replacements.
    """
    scrubber = _Scrubber({*collect_secrets(har), *extra_secrets})
    entries = []
    for entry in har["log"]["entries"]:
        entry = dict(entry)
        request = dict(entry.get("request") or {})
        request["url"] = scrubber.url(str(request.get("url", "")))
        request["headers"] = scrubber.headers(request.get("headers") or [])
        request["cookies"] = scrubber.cookies(request.get("cookies") or [])
        request["queryString"] = [
            {**q, "value": REDACTED if str(q.get("name", "")).lower() in SECRET_KEYS
             else scrubber.text(str(q.get("value", "")))}
            for q in request.get("queryString") or []
        ]
        if request.get("postData"):
            request["postData"] = scrubber.post_data(request["postData"])
        response = dict(entry.get("response") or {})
        response["headers"] = scrubber.headers(response.get("headers") or [])
        response["cookies"] = scrubber.cookies(response.get("cookies") or [])
        if response.get("redirectURL"):
            response["redirectURL"] = scrubber.url(str(response["redirectURL"]))
        if response.get("content"):
            response["content"] = scrubber.content(response["content"])
        entry["request"], entry["response"] = request, response
        entries.append(entry)
    log = {**har["log"], "entries": entries}
    return {**har, "log": log}, scrubber.replaced
