"""Record a browsing session as a HAR file, scrub its secrets, and replay it offline.

Playwright records what the *page* loads (``record_har_path``) and replays it
(``route_from_har``), but neither covers a context's ``APIRequestContext``
(``context.request``), which is how sources download images. :class:`RecordingRequest`
and :class:`ReplayRequest` close that gap: the first adds those downloads to the
recording, the second answers them from the HAR, so a replayed run touches no network.

A recorded session holds secrets: cookies, auth headers, CSRF tokens, the login form's
username and password. :func:`~selfiescope.core.har_scrub.scrub` removes them everywhere they can appear (headers,
cookies, query strings, form bodies, response bodies) before the file is written.
"""

from __future__ import annotations

import asyncio
import base64
import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from .errors import UsageError
from .regular_files import read_regular
from .secrets import write_private_json
from .text import printable
from .har_scrub import REDACTED, _is_text, collect_secrets, scrub  # noqa: F401 - the module's API


class HarError(UsageError, ValueError):
    """A file that is not a HAR this module can read; the message says why."""


MAX_HAR_BYTES = 4 << 30  # a recording is read whole: anything larger is not one of ours


def load(path: Path) -> dict[str, Any]:
    shown = printable(path)
    try:
        data = json.loads(read_regular(path, MAX_HAR_BYTES).decode("utf-8"))
    except FileNotFoundError:
        raise HarError(f"{shown}: no such file") from None
    except OSError as exc:
        raise HarError(f"{shown}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise HarError(f"{shown}: not a HAR file ({type(exc).__name__}: {exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("log"), dict) \
            or not isinstance(data["log"].get("entries"), list):
        raise HarError(f"{shown}: not a HAR file (no log.entries)")
    return data


def save(path: Path, har: dict[str, Any]) -> None:
    """Write ``har`` readable by the owner only: even scrubbed, it shows what the account saw."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_private_json(path, har)


def meta(har: dict[str, Any]) -> dict[str, Any]:
    """What selfiescope noted about the recording (``log._selfiescope``): base URL, targets."""
    value = har["log"].get("_selfiescope")
    return value if isinstance(value, dict) else {}


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

    A URL the HAR does not hold raises :class:`~selfiescope.core.web.NotRecorded` at once (the
    page's requests are aborted by ``route_from_har(not_found="abort")``): a replay has
    nothing more to give, so nothing retries it.
    """

    def __init__(self, har: dict[str, Any]) -> None:
        self._by_url: dict[str, dict[str, Any]] = {}
        for entry in for_replay(har["log"]["entries"]):
            method, url, _ = _key(entry)
            if method == "GET":
                self._by_url[url] = entry

    async def get(self, url: str, **kwargs: Any) -> StoredResponse:
        from .web import NotRecorded

        entry = self._by_url.get(url)
        if entry is None:
            raise NotRecorded("not in the recording (offline replay)")
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
