"""The review app's pages and JSON endpoints. Each reads or writes through the data layer
(:class:`selfiescope.review.data.ReviewData`), one call at a time on the app's own data thread
(SQLite connections belong to the thread that opened them), each within a deadline."""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import json
import logging
import re
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.templating import Jinja2Templates

from ..core.errors import UsageError
from ..core.text import printable
from ..exits import os_error
from .data import ACTIONS, SORTS, Filters, ImageMismatch, ReviewBusy, ReviewError

log = logging.getLogger("selfiescope.review")

T = TypeVar("T")
IMAGE_ID = re.compile(r"[0-9a-f]{8,64}")
PAGE_SIZE = 120
SAVED_TILES = PAGE_SIZE * 4  # images whose saved state an action's answer carries (the page reloads for more)
MAX_IDS = 10_000  # ids in one action: a selection of a whole filtered grid, not an unbounded body
MAX_BODY = 2_000_000
QUERY_KEYS_NOT_FILTERS = ("sort", "cursor", "limit", "token")
# A forgotten image must not live on in the browser's cache: nothing the app serves is kept there.
NOT_KEPT = {"cache-control": "no-store"}
BUSY_NOTE = "changes are refused until it ends; retry then"  # what a locked root means for an edit
IMAGE_TYPES = {"image/jpeg", "image/png", "image/webp", "image/gif", "image/bmp", "image/tiff"}


class Problem(UsageError):
    """A request the app answers with one line and a status code."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class DataThread:
    """Runs data-layer calls on one thread, each within ``deadline_s`` (the storage may be a
    remote bucket): a call that does not answer in time ends the request with a 504."""

    def __init__(self, deadline_s: float) -> None:
        self.deadline_s = deadline_s
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="review-data")

    async def __call__(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        future = asyncio.get_running_loop().run_in_executor(self.pool, lambda: fn(*args, **kwargs))
        try:
            return await asyncio.wait_for(future, self.deadline_s)
        except TimeoutError:
            raise Problem(504, f"the dataset did not answer within {self.deadline_s:g} s") from None

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)  # a call under way ends on its own; the data layer serialises close


def checked_id(image_id: str) -> str:
    if not IMAGE_ID.fullmatch(image_id):
        raise Problem(404, "no such image: an image is named by its hex content hash")
    return image_id


def filter_pairs(request: Request) -> list[tuple[str, str]]:
    """The URL's filter parameters as given (each facet link adds or removes one)."""
    return [(k, v) for k, v in request.query_params.multi_items() if k not in QUERY_KEYS_NOT_FILTERS and v != ""]


def query_parts(request: Request) -> tuple[Filters, str, str | None]:
    """The grid's state from the URL: its filters, its sort and its paging cursor."""
    params: dict[str, list[str]] = {}
    for key, value in filter_pairs(request):
        params.setdefault(key, []).append(value)
    try:
        filters = Filters.from_query(params)
    except ValueError as exc:
        raise Problem(400, f"bad filter: {exc}") from None
    sort = request.query_params.get("sort", "newest")
    if sort not in SORTS:
        raise Problem(400, f"bad sort {sort!r}: one of {', '.join(SORTS)}")
    return filters, sort, request.query_params.get("cursor") or None


def plain(value: Any) -> Any:
    """A data-layer dataclass as JSON-ready values."""
    return dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value


class Routes:
    def __init__(self, data: Any, templates: Jinja2Templates, csrf: str, deadline_s: float = 120.0) -> None:
        self.data = data
        self.templates = templates
        self.csrf = csrf
        self.call = DataThread(deadline_s)

    # --- pages ----------------------------------------------------------------------------
    async def grid(self, request: Request) -> Response:
        filters, sort, _ = query_parts(request)
        version = await self.call(self.data.version)  # before the reads: a change made meanwhile shows as news
        page = await self.call(self.data.page, filters, sort, None, PAGE_SIZE)
        facets = await self.call(self.data.facets, filters)
        labels = await self.call(self.data.labels)
        model_note = await self.call(self.data.model_note)
        query = filter_pairs(request)
        return self.templates.TemplateResponse(request, "grid.html", {
            "page": page, "facets": facets, "labels": labels, "model_note": model_note, "sort": sort,
            "sorts": SORTS, "csrf": self.csrf, "version": version, "query": urlencode(query),
            "active": set(query), "toggle": lambda facet, value: _toggled(query, sort, facet, value),
            "sorted_by": lambda s: "?" + urlencode([*query, ("sort", s)]),
            "page_json": json.dumps({"next_cursor": page.next_cursor, "total": page.total}),
        })

    async def detail_page(self, request: Request) -> Response:
        image_id = checked_id(request.path_params["image_id"])
        version = await self.call(self.data.version)
        detail = await self.call(self.data.detail, image_id)
        if detail is None:
            raise Problem(404, "no such image in this dataset")
        labels = await self.call(self.data.labels)
        back = "/?" + request.url.query if request.url.query else "/"
        return self.templates.TemplateResponse(request, "detail.html", {
            "d": detail, "labels": labels, "csrf": self.csrf, "version": version, "back": back,
            "box_of": lambda face: dict(zip(("x", "y", "w", "h"), face)),
        })

    # --- reads ----------------------------------------------------------------------------
    async def page_json(self, request: Request) -> Response:
        filters, sort, cursor = query_parts(request)
        try:
            limit = min(max(int(request.query_params.get("limit", PAGE_SIZE)), 0), 1000)
        except ValueError:
            raise Problem(400, "bad limit: a whole number") from None
        try:
            page = await self.call(self.data.page, filters, sort, cursor, limit)
        except ValueError as exc:
            raise Problem(400, f"bad cursor: {exc}") from None
        return JSONResponse(plain(page))

    async def facets_json(self, request: Request) -> Response:
        filters, _, _ = query_parts(request)
        return JSONResponse([plain(f) for f in await self.call(self.data.facets, filters)])

    async def detail_json(self, request: Request) -> Response:
        detail = await self.call(self.data.detail, checked_id(request.path_params["image_id"]))
        if detail is None:
            raise Problem(404, "no such image in this dataset")
        return JSONResponse(plain(detail))

    async def version_json(self, request: Request) -> Response:
        """What the open page polls: whether the dataset changed, and which run holds it now.
        The lock is probed last and off the data thread, so the answer says who holds it at the
        moment it is sent, not before a long read of the manifest or queued thumbnails."""
        version = await self.call(self.data.version)
        busy_of = getattr(self.data, "busy", None)
        busy = await asyncio.wait_for(asyncio.to_thread(busy_of), self.call.deadline_s) if busy_of else None
        return JSONResponse({"version": version, "busy": busy, "busy_note": f"{busy}: {BUSY_NOTE}" if busy else None})

    async def thumbnail(self, request: Request) -> Response:
        body = await self.call(self.data.thumbnail, checked_id(request.path_params["image_id"]))
        if body is None:
            raise Problem(404, "no thumbnail: the image's bytes are not reachable")
        return Response(body, media_type="image/jpeg", headers=NOT_KEPT)

    async def image(self, request: Request) -> Response:
        found = await self.call(self.data.image, checked_id(request.path_params["image_id"]))
        if found is None:
            raise Problem(404, "the image's bytes are not reachable")
        body, media_type = found
        if media_type not in IMAGE_TYPES:
            raise Problem(404, "not an image a browser shows")
        body, media_type = without_metadata(body, media_type)
        return Response(body, media_type=media_type, headers=NOT_KEPT)

    # --- writes ---------------------------------------------------------------------------
    async def action(self, request: Request) -> Response:
        body = await _json_body(request)
        action = body.get("action")
        if action not in ACTIONS:
            raise Problem(400, f"bad action {action!r}: one of {', '.join(ACTIONS)}")
        ids = _ids(body)
        value, note = _text(body, "value"), _text(body, "note")
        if action == "relabel" and not value:
            raise Problem(400, "relabel needs a value: the new label")
        result = await self.call(self.data.apply, action, ids, value, note)
        return await self._saved(result, ids)

    async def undo(self, request: Request) -> Response:
        await _json_body(request)
        result = await self.call(self.data.undo)
        return JSONResponse({**plain(result), "tiles": []})

    async def forget_plan(self, request: Request) -> Response:
        ids = _ids(await _json_body(request))
        return JSONResponse({"plan": await self.call(self.data.forget_plan, ids)})

    async def forget(self, request: Request) -> Response:
        ids = _ids(await _json_body(request))
        result = await self.call(self.data.forget, ids)
        return JSONResponse({**plain(result), "tiles": [], "forgotten": ids})

    async def _saved(self, result: Any, ids: list[str]) -> Response:
        """The action's result with the images' state as stored now (what the page shows)."""
        details = [await self.call(self.data.detail, i) for i in ids[:SAVED_TILES]]
        tiles = [plain(d.tile) for d in details if d is not None]
        return JSONResponse({**plain(result), "tiles": tiles, "tiles_limited": len(ids) > SAVED_TILES})


def without_metadata(body: bytes, media_type: str) -> tuple[bytes, str]:
    """The image as the page may show it: no metadata but its orientation (no GPS, no text a
    camera or a person put there), the pixels untouched. A rejected import is served from its
    original file, which may still carry all of it; a format that cannot be rewritten in place
    and still says where it was taken is re-encoded as PNG."""
    from ..core.metadata import has_location, strip_metadata

    kind = media_type.split("/", 1)[1]
    stripped = strip_metadata(body, kind, "all")
    if not has_location(stripped):
        return stripped, media_type
    import io

    from PIL import Image, ImageOps

    with Image.open(io.BytesIO(body)) as im:
        out = io.BytesIO()
        ImageOps.exif_transpose(im).save(out, "PNG")
    return out.getvalue(), "image/png"


def _toggled(query: list[tuple[str, str]], sort: str, facet: Any, value: str) -> str:
    """The grid address with the facet's ``value`` switched on or off. Values of a facet of
    alternatives add up; a yes/no or range facet holds one value at a time."""
    pair = (facet.name, value)
    if pair in query:
        pairs = [p for p in query if p != pair]
    elif getattr(facet, "kind", "values") == "values":
        pairs = [*query, pair]
    else:
        pairs = [p for p in query if p[0] != facet.name] + [pair]
    return "?" + urlencode([*pairs, ("sort", sort)])


async def _json_body(request: Request) -> dict[str, Any]:
    declared = request.headers.get("content-length", "0")
    if not declared.isdigit() or int(declared) > MAX_BODY:
        raise Problem(413, "the request is too large")
    raw = b""
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_BODY:
            raise Problem(413, "the request is too large")
    try:
        body = json.loads(raw or b"{}")
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise Problem(400, "the request body is not JSON (or nested too deep)") from None
    if not isinstance(body, dict):
        raise Problem(400, "the request body must be a JSON object")
    return body


def _ids(body: dict[str, Any]) -> list[str]:
    ids = body.get("ids")
    if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
        raise Problem(400, "ids: a non-empty list of image ids")
    if len(ids) > MAX_IDS:
        raise Problem(400, f"ids: at most {MAX_IDS} images in one action")
    return list(dict.fromkeys(checked_id(i) for i in ids))


def _text(body: dict[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > 2000:
        raise Problem(400, f"{key}: a text of at most 2000 characters")
    return value.strip() or None


def problem_response(request: Request, exc: Exception) -> Response:
    """One line for the page (JSON for the script's calls, text for a page): a refused request,
    a busy dataset, a bad value; anything else is logged on the terminal, never shown raw."""
    busy = isinstance(exc, ReviewBusy)
    if isinstance(exc, Problem):
        status, message = exc.status, str(exc)
    elif isinstance(exc, ImageMismatch):
        status, message = 404, str(exc)
    elif busy:
        status, message = 409, str(exc)
    elif isinstance(exc, ReviewError | ValueError):
        status, message = 400, str(exc)
    elif isinstance(exc, OSError):
        status, message = (507 if exc.errno in (errno.ENOSPC, errno.EDQUOT) else 500), os_error(exc)[1]
    elif isinstance(exc, sqlite3.DatabaseError):
        status, message = (507 if "disk is full" in str(exc) else 500), f"the dataset's manifest: {printable(exc)}"
    else:
        log.error("review request %s failed: %s (-vv shows where)", request.url.path, type(exc).__name__)
        log.debug("review request %s failed", request.url.path, exc_info=exc)
        status, message = 500, "the server failed on this request (the terminal's log says why)"
    if status >= 500 and isinstance(exc, OSError | sqlite3.DatabaseError):
        log.error("review request %s: %s", request.url.path, message)
    if request.url.path.startswith("/api/"):
        return JSONResponse({"error": message, "busy": busy}, status)
    return PlainTextResponse(message, status)
