"""``selfiescope record`` and ``scrape --replay``: one real session as a scrubbed HAR, replayed offline.

Recording runs the source as a scrape would, into a scratch dataset (so nothing already
collected is skipped and the user's dataset is untouched), with every browser context
recording into a part file (:mod:`selfiescope.core.har`). The parts are merged, reduced to
one answer per request, scrubbed of secrets and written mode 600.

Replaying sets ``browser.replay_har``: the pool answers every request from the file and
aborts the rest, so the run never reaches the network.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...core import har
from ...core.app import App
from ...core.secrets import credential
from ...core.browser import load_session, session_path
from ...core.components import Source
from ...core.manifest import Manifest
from ...core.plugins import Registry
from ...core.settings import DECODE_STEP, SCRAPE_SOURCE, STORE_STEP
from ...core.stats import RunStats
from .collect import collect
from .scrape import scrape_pipeline

log = logging.getLogger("selfiescope.record")


def source_class(registry: Registry, source: str) -> type[Source] | None:
    """The class of source ``source``; what record and replay need of it are its capabilities
    (``credential_env``, ``replay_options``, ``url_option``), never its name."""
    return registry.sources.get(source)


@dataclass
class Recording:
    har_path: Path
    stats: RunStats
    entries: int
    redactions: int
    posts: list[str] = field(default_factory=list)  # post ids the session fetched

    def summary(self) -> dict[str, Any]:
        return {"har": str(self.har_path), "entries": self.entries, "redactions": self.redactions,
                "posts": len(self.posts), "status": self.stats.status, "errors": list(self.stats.errors)}


def _secrets(app: App, source: str) -> set[str]:
    """Values that must not survive in the file even where no header names them: the source's
    credentials (its ``credential_env``) and the saved session's cookies."""
    settings = app.settings
    cls = source_class(app.registry, source)
    found = {value for k in (cls.credential_env if cls else ()) if (value := credential(k))}
    state = load_session(session_path(settings.browser))
    for cookie in (state or {}).get("cookies", []):
        found.add(str(cookie.get("value", "")))
    return found


async def record(app: App, tags: list[str], har_path: Path, *, source: str = SCRAPE_SOURCE,
                 base_url: str | None = None, limit: int | None = 30, label: str = "recorded") -> Recording:
    """Scrape ``tags`` once through a real browser and save the session to ``har_path``.

    The app's plugins observe the run as they would a scrape (the CLI's progress display)."""
    settings = app.settings
    har_path = Path(har_path)
    if har_path.exists():  # never overwrite what the user owns
        raise FileExistsError(f"{har_path} exists; choose another file name or remove it first")
    if har.parts_dir(har_path).exists():
        shutil.rmtree(har.parts_dir(har_path))
    scratch = Path(tempfile.mkdtemp(prefix="selfiescope-record-"))
    try:
        recording_settings = settings.model_copy(update={
            "storage": settings.storage.model_copy(update={"root": scratch / "data"}),
            "browser": settings.browser.model_copy(update={"record_har": har_path, "replay_har": None}),
        })
        pipeline = scrape_pipeline(app.registry, tags, label, limit=limit, source=source, base_url=base_url,
                                   chain=[DECODE_STEP, STORE_STEP])
        stats = await collect(app.with_settings(recording_settings), "record", pipeline=pipeline)
        posts = _stored_posts(scratch / "data", source)
        pages, api = har.read_parts(har_path)
        note = {"source": source, "targets": tags, "base_url": _base_url(app, source, base_url),
                "limit": limit, "posts": posts}
        merged = har.merge(pages, api, note)
        scrubbed, redactions = har.scrub(merged, _secrets(app, source))
        har.save(har_path, scrubbed)
        log.info("recorded %d requests into %s (%d values redacted)", len(scrubbed["log"]["entries"]),
                 har_path, redactions)
        return Recording(har_path, stats, len(scrubbed["log"]["entries"]), redactions, posts)
    finally:
        shutil.rmtree(har.parts_dir(har_path), ignore_errors=True)  # unscrubbed: never left behind
        shutil.rmtree(scratch, ignore_errors=True)


def _stored_posts(root: Path, source: str) -> list[str]:
    manifest = Manifest.at_root(root)
    try:
        rows = manifest.query("SELECT DISTINCT post_id FROM images WHERE source=? ORDER BY post_id", (source,))
        return [r["post_id"] for r in rows]
    finally:
        manifest.close()


def _base_url(app: App, source: str, base_url: str | None) -> str | None:
    if base_url:
        return base_url.rstrip("/")
    settings = app.settings
    cls = source_class(app.registry, source)
    if cls is None or not cls.url_option:
        return None
    field = cls.Options.model_fields.get(cls.url_option)
    default = None if field is None or field.is_required() else field.default
    value = settings.plugins.get(source, {}).get(cls.url_option) or default
    return str(value).rstrip("/") if value else None


def replay_settings(app: App, har_path: Path, source: str = SCRAPE_SOURCE) -> tuple[App, str | None]:
    """The app under settings that answer every browser request from ``har_path``; and the
    recorded base URL.

    Raises :class:`~selfiescope.core.har.HarError` for a file that is not a HAR.
    """
    settings = app.settings
    data = har.load(Path(har_path))
    plugins = dict(settings.plugins)
    cls = source_class(app.registry, source)
    if cls is not None and cls.replay_options:
        plugins[source] = {**plugins.get(source, {}), **cls.replay_options}
    updated = settings.model_copy(update={
        "browser": settings.browser.model_copy(update={"replay_har": Path(har_path), "record_har": None}),
        "plugins": plugins,
    })
    return app.with_settings(updated), har.meta(data).get("base_url")
