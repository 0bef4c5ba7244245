"""The saved browser session (Playwright's storage state) on disk, tied to the site it is for.

A session holds the cookies of one site. It records that site's origin, so a session saved
with ``login`` for one base URL is never sent to another; two local sites on one host differ
by port only, which cookies do not carry.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .secrets import write_private_json
from .settings import BrowserSettings

log = logging.getLogger("selfiescope.browser")


def session_path(settings: BrowserSettings) -> Path:
    return Path(settings.session_file).expanduser()


# The key a saved session records its site under; Playwright's own storage state has no such key.
SESSION_ORIGIN_KEY = "selfiescope_origin"


def site_origin(url: str) -> str:
    """``scheme://host[:port]`` of ``url``, lower-cased: the site a session belongs to (cookies
    carry no port, so two local sites on one host are told apart only by this)."""
    parts = urlsplit(url.strip())
    host = (parts.hostname or "").lower()
    default = {"http": 80, "https": 443}.get(parts.scheme.lower())
    port = f":{parts.port}" if parts.port and parts.port != default else ""
    return f"{parts.scheme.lower()}://{host}{port}"


def load_session(path: Path, origin: str | None = None) -> dict[str, Any] | None:
    """A saved Playwright storage state, or None. A file others can read is tightened first.

    With ``origin`` (a site's base URL), a session saved for another site, or one that names no
    site, is not returned (it is left in place: it still serves the site it was saved for)."""
    if not path.is_file():
        return None
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        log.warning("session file %s was readable by others (mode %o); setting it to 600", path, mode)
        os.chmod(path, 0o600)
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        log.warning("ignoring unreadable session file %s: %s", path, type(exc).__name__)
        return None
    if not isinstance(state, dict):
        log.warning("ignoring session file %s: it holds no saved session", path)
        return None
    saved_for = state.pop(SESSION_ORIGIN_KEY, None)
    if origin is None:
        return state
    wanted = site_origin(origin)
    if saved_for is None:  # written before sessions named their site: its cookies' domains must fit the host
        host = urlsplit(wanted).hostname or ""
        if any(_cookie_applies(str(c.get("domain", "")), host) for c in state.get("cookies", [])
               if isinstance(c, dict)):
            return state
        log.debug("ignoring the session in %s: none of its cookies belongs to %s", path, wanted)
        return None
    if saved_for != wanted:
        log.debug("ignoring the session in %s: it was saved for %s, not %s", path, saved_for, wanted)
        return None
    return state


def _cookie_applies(cookie_domain: str, host: str) -> bool:
    domain = cookie_domain.lstrip(".").lower()
    return bool(domain) and (host == domain or host.endswith("." + domain))


def save_session(path: Path, state: dict[str, Any], origin: str | None = None) -> None:
    """Write the storage state readable by the owner only (0600, folder 0700), with the site
    (``origin``, a base URL) it belongs to, so that it is used for that site only."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if origin is not None:
        state = {**state, SESSION_ORIGIN_KEY: site_origin(origin)}
    write_private_json(path, state)
