"""``selfiescope login --from-browser``: take the session of the user's own browser profile.

The cookies come from the profile's cookie store through ``browser_cookie3`` (the
``browser`` extra): it reads Firefox's ``cookies.sqlite`` and Chromium's and Chrome's
``Cookies`` database, decrypting the latter with the key the browser keeps in the
system keyring (or Chromium's built-in one when it uses none). Playwright's persistent
context was the other choice; it was not taken because it opens Chromium profiles only
(not Firefox's), cannot open a profile the browser has open, and runs Chromium with its
own key store, so the cookies a real Chrome encrypted with the keyring stay unreadable.

Only cookies the site's host would be sent are kept (the host of the configured base
URL, and its parent domains), and only when one of them is the session cookie; they are
saved in Playwright's storage-state form to the same 0600 file ``selfiescope login``
writes. Cookie values are never logged or printed.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.cookiejar import Cookie
from pathlib import Path
from typing import Any
from unittest.mock import patch
from urllib.parse import urlsplit

from ...api import RunFailed, Settings, UsageError
from ...api.web import save_session, session_path

log = logging.getLogger("selfiescope.instagram")

BROWSERS = ("chrome", "chromium", "firefox")
SESSION_COOKIE = "sessionid"
EXTRA = "browser"  # pip install 'selfiescope[browser]'
# Where a profile keeps its cookies, relative to a profile folder (newer Chromium: Network/).
COOKIE_FILES = {"firefox": ("cookies.sqlite",), "chrome": ("Network/Cookies", "Cookies"),
                "chromium": ("Network/Cookies", "Cookies")}
# The table each browser keeps its cookies in: a file without it is no cookie store.
COOKIE_TABLES = {"firefox": "moz_cookies", "chrome": "cookies", "chromium": "cookies"}
SQLITE_MAGIC = b"SQLite format 3\x00"
# A Chromium user-data folder holds profiles; the first one is "Default".
CHROMIUM_PROFILES = ("Default",)


class BrowserImportError(RunFailed, RuntimeError):
    """No session could be taken from the browser profile; the message says why and what to do."""


class ProfileNotFound(UsageError, BrowserImportError):
    """``--profile`` names no browser profile (a usage error)."""


def cookie_file(browser: str, profile: Path | None) -> Path | None:
    """The cookie database of ``profile`` (a cookie file, a profile folder, or a Chromium
    user-data folder); None: the browser's default profile, which browser_cookie3 finds."""
    if profile is None:
        return None
    profile = profile.expanduser()
    if profile.is_file():
        return checked_cookie_store(browser, profile, profile)
    if not profile.is_dir():
        if profile.exists():  # a device, a pipe, a socket: nothing a browser keeps cookies in
            raise ProfileNotFound(f"--profile {profile}: not a profile folder or a cookie file")
        raise ProfileNotFound(f"--profile {profile}: no such file or folder")
    folders = [profile]
    if browser != "firefox":  # a user-data folder: its first profile, then the others in name order
        folders += [profile / p for p in CHROMIUM_PROFILES] + sorted(profile.glob("Profile *"))
    for folder in folders:
        for name in COOKIE_FILES[browser]:
            if (folder / name).is_file():
                return checked_cookie_store(browser, folder / name, profile)
    wanted = " or ".join(COOKIE_FILES[browser])
    raise ProfileNotFound(f"--profile {profile}: no {browser} cookie store ({wanted}) in it; give the profile "
                             "folder (Firefox: about:profiles; Chromium/Chrome: chrome://version, 'Profile Path')")


def checked_cookie_store(browser: str, path: Path, given: Path) -> Path:
    """``path`` itself when it is a readable SQLite database with ``browser``'s cookie table;
    anything else (``/etc/passwd``, another browser's store, a folder without access) is a
    wrong ``--profile``, said in one line that names it."""
    wrong = f"--profile {given}:"
    hint = "give the profile folder (Firefox: about:profiles; Chromium/Chrome: chrome://version, 'Profile Path')"
    try:
        with path.open("rb") as handle:
            magic = handle.read(len(SQLITE_MAGIC))
    except OSError as exc:
        raise ProfileNotFound(f"{wrong} {path} cannot be read ({exc.strerror or exc})") from None
    if magic != SQLITE_MAGIC:
        raise ProfileNotFound(f"{wrong} {path} is not a {browser} cookie store (not an SQLite database); {hint}")
    table = COOKIE_TABLES[browser]
    try:  # immutable: a store the browser holds open is read without waiting on its lock
        with sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro&immutable=1", uri=True, timeout=5) as db:
            found = db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (table,)).fetchone()
    except sqlite3.Error as exc:
        log.debug("opening %s as a cookie store failed", path, exc_info=True)
        raise ProfileNotFound(f"{wrong} {path} is not a readable {browser} cookie store ({type(exc).__name__}); "
                              f"{hint}") from None
    if found is None:
        raise ProfileNotFound(f"{wrong} {path} is an SQLite database without {browser}'s cookie table ({table}); "
                              f"{hint}")
    return path


def applies_to(cookie_domain: str, host: str) -> bool:
    """Whether a cookie of ``cookie_domain`` is sent to ``host`` (RFC 6265 domain match)."""
    domain = cookie_domain.lstrip(".").lower()
    host = host.lower()
    return host == domain or host.endswith("." + domain)


def read_cookies(browser: str, profile: Path | None, host: str) -> list[Cookie]:
    """The cookies of ``browser``'s profile that ``host`` would be sent."""
    if browser not in BROWSERS:
        raise BrowserImportError(f"--from-browser {browser}: use one of {', '.join(BROWSERS)}")
    try:
        import browser_cookie3
    except ImportError:
        raise BrowserImportError(
            f"--from-browser needs the browser_cookie3 package: pip install 'selfiescope[{EXTRA}]'") from None
    path = cookie_file(browser, profile)
    reader = getattr(browser_cookie3, browser)
    # browser_cookie3 filters with a substring match on the host; the exact match is ours below
    domain = host.removeprefix("www.")
    try:
        with _builtin_key_without_session_bus(browser_cookie3, browser):
            jar = reader(cookie_file=str(path) if path else None, domain_name=domain)
    except Exception as exc:  # noqa: BLE001 - its errors (sqlite, keyring, a missing profile) become one line
        log.debug("reading %s cookies from %s failed", browser, path or "the default profile", exc_info=True)
        where = str(path) if path else f"the default {browser} profile"
        raise BrowserImportError(f"could not read {browser} cookies from {where} ({type(exc).__name__}); if "
                                 f"{browser} is open, close it and retry, or give --profile PATH") from None
    now = time.time()  # an expired cookie is one the browser would not send either
    return [c for c in jar if applies_to(c.domain, host) and not (c.expires and c.expires < now)]


@contextmanager
def _builtin_key_without_session_bus(module: Any, browser: str) -> Iterator[None]:
    """With no D-Bus session bus there is no keyring, so Chromium encrypts with its built-in
    key (its "basic" store); browser_cookie3 looks for the bus anyway and fails (KeyError).
    Then its keyring lookup is answered with the built-in key, for this read only."""
    manager = getattr(module, "_LinuxPasswordManager", None)
    builtin = getattr(module, "CHROMIUM_DEFAULT_PASSWORD", None)
    if (browser == "firefox" or not sys.platform.startswith("linux") or os.environ.get("DBUS_SESSION_BUS_ADDRESS")
            or manager is None or builtin is None):
        yield
        return
    with patch.object(manager, "get_password", lambda self, name: builtin):
        yield


def storage_state(cookies: list[Cookie]) -> dict[str, Any]:
    """Cookies in Playwright's storage-state form (what ``selfiescope login`` saves)."""
    out = []
    for c in cookies:
        rest = {k.lower(): v for k, v in getattr(c, "_rest", {}).items()}
        out.append({
            "name": c.name, "value": c.value or "", "domain": c.domain, "path": c.path or "/",
            "expires": float(c.expires) if c.expires else -1, "httpOnly": "httponly" in rest,
            "secure": bool(c.secure), "sameSite": "Lax",
        })
    return {"cookies": out, "origins": []}


def import_session(settings: Settings, browser: str, profile: Path | None, base_url: str) -> tuple[Path, int]:
    """Save the browser profile's session for ``base_url``; returns the session file and the cookie count."""
    host = urlsplit(base_url).hostname
    if not host:
        raise BrowserImportError(f"base URL {base_url!r} names no host")
    cookies = read_cookies(browser, profile, host)
    if not any(c.name == SESSION_COOKIE and c.value for c in cookies):
        raise BrowserImportError(
            f"no logged-in session for {host} in that {browser} profile ({len(cookies)} other cookies): log in to "
            f"{base_url} in {browser} first, or give the profile you use with --profile PATH")
    path = session_path(settings.browser)
    try:
        save_session(path, storage_state(cookies), base_url)
    except OSError as exc:
        raise BrowserImportError(f"could not write the session file {path}: {exc.strerror or exc}") from None
    log.info("imported %d cookies for %s from %s into %s", len(cookies), host, browser, path)
    return path, len(cookies)
