"""Record a browsing session as a HAR file, scrub its secrets, and replay it offline.

Playwright records what the *page* loads (``record_har_path``) and replays it
(``route_from_har``), but neither covers a context's ``APIRequestContext``
(``context.request``), which is how sources download images. :class:`RecordingRequest`
and :class:`ReplayRequest` close that gap: the first adds those downloads to the
recording, the second answers them from the HAR, so a replayed run touches no network.

A recorded session holds secrets: cookies, auth headers, CSRF tokens, the login form's
username and password. :func:`scrub` removes them everywhere they can appear (headers,
cookies, query strings, form bodies, response bodies) before the file is written.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
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


class HarError(ValueError):
    """A file that is not a HAR this module can read; the message says why."""


def load(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise HarError(f"{path}: no such file") from None
    except (OSError, ValueError) as exc:
        raise HarError(f"{path}: not a HAR file ({type(exc).__name__}: {exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("log"), dict) \
            or not isinstance(data["log"].get("entries"), list):
        raise HarError(f"{path}: not a HAR file (no log.entries)")
    return data


def save(path: Path, har: dict[str, Any]) -> None:
    """Write ``har`` readable by the owner only: even scrubbed, it shows what the account saw."""
    import os

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(har, fh)
    os.replace(tmp, path)


def meta(har: dict[str, Any]) -> dict[str, Any]:
    """What selfiescope noted about the recording (``log._selfiescope``): base URL, targets."""
    value = har["log"].get("_selfiescope")
    return value if isinstance(value, dict) else {}


# --- scrubbing ------------------------------------------------------------------------------
def _is_text(mime: str | None) -> bool:
    mime = (mime or "").lower()
    return any(t in mime for t in _TEXT_TYPES)


def _cookie_values(header_value: str) -> list[str]:
    """Values of a ``Cookie`` or ``Set-Cookie`` header (attributes of Set-Cookie excluded)."""
    values = []
    parts = header_value.split(";") if "\n" not in header_value else header_value.splitlines()
    for part in parts:
        name, sep, value = part.strip().partition("=")
        if sep and name.lower() not in ("path", "domain", "expires", "max-age", "samesite"):
            values.append(value.strip().strip('"'))
    return values


def collect_secrets(har: dict[str, Any]) -> set[str]:
    """Every cookie value, auth header value and credential form value found in ``har``."""
    found: set[str] = set()
    for entry in har["log"]["entries"]:
        for part in (entry.get("request", {}), entry.get("response", {})):
            for cookie in part.get("cookies") or []:
                found.add(str(cookie.get("value", "")))
            for header in part.get("headers") or []:
                name = str(header.get("name", "")).lower()
                if name in COOKIE_HEADERS:
                    if name == "set-cookie":
                        first = str(header.get("value", "")).split(";")[0]
                        found.update(_cookie_values(first))
                    else:
                        found.update(_cookie_values(str(header.get("value", ""))))
                elif name in AUTH_HEADERS:
                    value = str(header.get("value", ""))
                    found.add(value)
                    found.update(value.split())  # "Bearer TOKEN": the token alone is echoed elsewhere
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


# --- merging recordings ---------------------------------------------------------------------
def _key(entry: dict[str, Any]) -> tuple[str, str, str]:
    req = entry.get("request") or {}
    body = (req.get("postData") or {}).get("text") or ""
    return str(req.get("method", "GET")).upper(), str(req.get("url", "")), body


def _rank(entry: dict[str, Any]) -> int:
    """Which answer a replay should give for a URL seen several times: a success over a
    redirect to the login page, over a rate limit or an error."""
    status = int((entry.get("response") or {}).get("status") or 0)
    location = next((h.get("value", "") for h in (entry.get("response") or {}).get("headers") or []
                     if str(h.get("name", "")).lower() == "location"), "")
    if 200 <= status < 300:
        return 3
    if 300 <= status < 400 and not any(p in location for p in ("/accounts/login", "/challenge", "/checkpoint")):
        return 2
    if status >= 400 and status != 429:
        return 1
    return 0


def for_replay(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per request (method, URL, body), in recorded order.

    Playwright's replay answers a request with the first matching entry, so a recording
    where the first try met a login wall or a 429 and the retry succeeded would replay the
    failure forever. The best answer is kept (the latest among equals); entries that never
    got a response (aborted, blocked) are dropped.
    """
    best: dict[tuple[str, str, str], tuple[int, int]] = {}
    for i, entry in enumerate(entries):
        status = int((entry.get("response") or {}).get("status") or 0)
        if status <= 0:
            continue
        key, rank = _key(entry), _rank(entry)
        if key not in best or rank >= best[key][0]:
            best[key] = (rank, i)
    keep = sorted(i for _, i in best.values())
    return [entries[i] for i in keep]


def merge(parts: list[dict[str, Any]], extra_entries: list[dict[str, Any]] = (),
          note: dict[str, Any] | None = None) -> dict[str, Any]:
    """One HAR from several contexts' recordings plus entries added by :class:`RecordingRequest`."""
    entries: list[dict[str, Any]] = [e for part in parts for e in part["log"]["entries"]]
    entries += list(extra_entries)
    entries.sort(key=lambda e: str(e.get("startedDateTime", "")))
    creator = parts[0]["log"].get("creator") if parts else None
    log: dict[str, Any] = {
        "version": "1.2",
        "creator": creator or {"name": "selfiescope", "version": "1"},
        "browser": parts[0]["log"].get("browser") if parts else None,
        "pages": [p for part in parts for p in part["log"].get("pages") or []],
        "entries": for_replay(entries),
    }
    if log["browser"] is None:
        log.pop("browser")
    if note:
        log["_selfiescope"] = note
    return {"log": log}


# --- context.request: record and replay -----------------------------------------------------
def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class StoredResponse:
    """What a source reads from an ``APIResponse``: status, headers, body."""

    url: str
    status: int
    headers: dict[str, str]
    data: bytes
    _real: Any = None

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    async def body(self) -> bytes:
        return self.data

    async def text(self) -> str:
        return self.data.decode("utf-8", "replace")

    async def json(self) -> Any:
        return json.loads(self.data)

    async def dispose(self) -> None:
        if self._real is not None:
            await self._real.dispose()


def _entry(method: str, url: str, req_headers: dict[str, str], resp: StoredResponse, started: str,
           elapsed_ms: float) -> dict[str, Any]:
    mime = resp.headers.get("content-type", "")
    if _is_text(mime):
        content = {"size": len(resp.data), "mimeType": mime, "text": resp.data.decode("utf-8", "replace")}
    else:
        content = {"size": len(resp.data), "mimeType": mime, "text": base64.b64encode(resp.data).decode(),
                   "encoding": "base64"}
    query = [{"name": k, "value": v} for k, v in parse_qsl(urlsplit(url).query, keep_blank_values=True)]
    return {
        "startedDateTime": started, "time": elapsed_ms,
        "request": {"method": method, "url": url, "httpVersion": "HTTP/1.1", "cookies": [],
                    "headers": [{"name": k, "value": v} for k, v in req_headers.items()],
                    "queryString": query, "headersSize": -1, "bodySize": 0},
        "response": {"status": resp.status, "statusText": "", "httpVersion": "HTTP/1.1", "cookies": [],
                     "headers": [{"name": k, "value": v} for k, v in resp.headers.items()],
                     "content": content, "redirectURL": "", "headersSize": -1, "bodySize": len(resp.data)},
        "cache": {}, "timings": {"send": 0, "wait": elapsed_ms, "receive": 0},
        "_selfiescope": "context.request",
    }


@dataclass
class RecordingRequest:
    """Wraps a context's ``APIRequestContext``: GETs go through and are noted as HAR entries."""

    real: Any
    timeout_s: float
    entries: list[dict[str, Any]] = field(default_factory=list)

    async def get(self, url: str, **kwargs: Any) -> StoredResponse:
        started, t0 = _now(), asyncio.get_running_loop().time()
        resp = await self.real.get(url, **kwargs)
        try:
            data = await asyncio.wait_for(resp.body(), self.timeout_s)
        except asyncio.TimeoutError:
            await resp.dispose()
            raise
        stored = StoredResponse(url, resp.status, {k.lower(): v for k, v in resp.headers.items()}, data, resp)
        elapsed = (asyncio.get_running_loop().time() - t0) * 1000
        self.entries.append(_entry("GET", url, dict(kwargs.get("headers") or {}), stored, started, elapsed))
        return stored

    def save(self, path: Path) -> None:
        save(path, {"log": {"version": "1.2", "creator": {"name": "selfiescope", "version": "1"},
                            "entries": self.entries}})


class ReplayRequest:
    """Answers a context's ``APIRequestContext`` GETs from a HAR file, offline.

    A URL the HAR does not hold fails like a refused connection (Playwright's ``Error``),
    the same as ``route_from_har(not_found="abort")`` does for the page.
    """

    def __init__(self, har: dict[str, Any]) -> None:
        self._by_url: dict[str, dict[str, Any]] = {}
        for entry in for_replay(har["log"]["entries"]):
            method, url, _ = _key(entry)
            if method == "GET":
                self._by_url[url] = entry

    async def get(self, url: str, **kwargs: Any) -> StoredResponse:
        from playwright.async_api import Error as PlaywrightError

        entry = self._by_url.get(url)
        if entry is None:
            raise PlaywrightError(f"net::ERR_FAILED (offline replay: {url} is not in the HAR)")
        response = entry["response"]
        content = response.get("content") or {}
        text = content.get("text") or ""
        data = base64.b64decode(text) if content.get("encoding") == "base64" else text.encode("utf-8")
        headers = {str(h["name"]).lower(): str(h["value"]) for h in response.get("headers") or []}
        return StoredResponse(url, int(response.get("status") or 0), headers, data)

    async def dispose(self) -> None:
        return None


# --- recordings made by the browser pool ----------------------------------------------------
def parts_dir(har_path: Path) -> Path:
    """Where a pool recording into ``har_path`` leaves one file per browser context."""
    har_path = Path(har_path)
    return har_path.with_name(har_path.name + ".parts")


def read_parts(har_path: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The contexts' page recordings and the entries of their ``context.request`` calls."""
    folder = parts_dir(har_path)
    pages, api = [], []
    for path in sorted(folder.glob("*.har")) if folder.is_dir() else []:
        part = load(path)
        if path.name.startswith("api-"):
            api += part["log"]["entries"]
        else:
            pages.append(part)
    return pages, api
