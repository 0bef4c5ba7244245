"""``[browser] proxy``: one proxy for the browser and everything it fetches.

The server URL lives in settings; its credentials never do: they come from
``SELFIESCOPE_PROXY_USERNAME`` / ``SELFIESCOPE_PROXY_PASSWORD`` and go straight to
Playwright. Each browser context gets the proxy (pages, feeds); image downloads go through
it as Chromium would send them (:mod:`.proxied_request`), so one setting covers pages,
feeds and images. The browser's own background requests get a closed loopback port instead.

Loopback hosts are reached directly, unless the proxy is itself on loopback (a local
forwarder, a test): then it carries loopback too.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from .secrets import credential

PROXY_USERNAME_ENV = "SELFIESCOPE_PROXY_USERNAME"
PROXY_PASSWORD_ENV = "SELFIESCOPE_PROXY_PASSWORD"
PROXY_SCHEMES = ("http", "https", "socks5", "socks4")
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")


def check_proxy_url(value: str | None) -> str | None:
    """``value`` if it is a proxy server URL Playwright takes, else ValueError saying why."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    try:
        parts = urlsplit(value if "://" in value else f"http://{value}")
        port = parts.port
    except ValueError:
        raise ValueError(f"{value!r} is not a proxy URL; write it as http://HOST:PORT") from None
    if "@" in parts.netloc:
        raise ValueError("the proxy URL holds credentials (user:password@); remove them and set "
                         f"{PROXY_USERNAME_ENV} / {PROXY_PASSWORD_ENV} in the environment instead")
    if parts.scheme not in PROXY_SCHEMES:
        raise ValueError(f"proxy scheme {parts.scheme!r} is not one of {', '.join(PROXY_SCHEMES)}")
    if not parts.hostname:
        raise ValueError(f"{value!r} names no proxy host; write it as http://HOST:PORT")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"{value!r}: a proxy URL is only scheme://HOST:PORT (no path or query)")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{parts.scheme}://{host}" + (f":{port}" if port else "")


def is_loopback_proxy(server: str) -> bool:
    return (urlsplit(server).hostname or "") in {h.strip("[]") for h in LOOPBACK_HOSTS}


def playwright_proxy(server: str | None, bypass: list[str] | None = None) -> dict[str, Any] | None:
    """The ``proxy`` argument of Playwright's launch for these settings (None: no proxy)."""
    if not server:
        return None
    proxy: dict[str, Any] = {"server": server}
    username, password = credential(PROXY_USERNAME_ENV), credential(PROXY_PASSWORD_ENV)
    if username:
        proxy["username"] = username
        proxy["password"] = password or ""
    if bypass:
        proxy["bypass"] = ",".join(bypass)
    return proxy


# Where the browser's own background requests go when ``browser.proxy`` is set: a closed
# loopback port, so they never leave the machine (pages use the proxy of their context).
BACKGROUND_PROXY: dict[str, Any] = {"server": "http://127.0.0.1:9", "bypass": "<-loopback>"}


def context_proxy(server: str | None, bypass: list[str] | None = None) -> dict[str, Any] | None:
    """The ``proxy`` argument of a browser context: :func:`playwright_proxy`, and loopback hosts go
    direct unless the proxy is itself on loopback (a local forwarder, a test), as Chromium does
    for a browser-wide proxy; Playwright would otherwise send loopback through a context's proxy."""
    if not server:
        return None
    rules = list(bypass or [])
    if not is_loopback_proxy(server):
        rules += [h for h in ("localhost", "127.0.0.1", "[::1]") if h not in rules]
    return playwright_proxy(server, rules)


# Chromium's network errors that mean the proxy, not the site, failed.
_UNREACHABLE = ("ERR_PROXY_CONNECTION_FAILED", "ERR_TUNNEL_CONNECTION_FAILED", "ERR_SOCKS_CONNECTION_FAILED",
                "ERR_SOCKS_CONNECTION_HOST_UNREACHABLE", "ERR_PROXY_CERTIFICATE_INVALID", "ERR_MANDATORY_PROXY_CONFIGURATION_FAILED")
_REFUSED = ("ERR_INVALID_AUTH_CREDENTIALS", "ERR_PROXY_AUTH_REQUESTED", "ERR_PROXY_AUTH_UNSUPPORTED",
            "ERR_PROXY_AUTH_REQUESTED_WITH_NO_CONNECTION")


def proxy_problem(error: BaseException, server: str | None) -> str | None:
    """What went wrong, in words, when ``error`` is the proxy's doing (None: it is not)."""
    if not server:
        return None
    text = str(error)
    if any(code in text for code in _UNREACHABLE):
        return (f"the proxy {server} (browser.proxy) could not be reached or could not connect onwards; check "
                "that it is up and the address is right, or remove browser.proxy")
    if any(code in text for code in _REFUSED):
        if credential(PROXY_USERNAME_ENV):
            return (f"the proxy {server} (browser.proxy) refused the credentials in {PROXY_USERNAME_ENV} / "
                    f"{PROXY_PASSWORD_ENV} (HTTP 407); check them")
        return (f"the proxy {server} (browser.proxy) asks for credentials (HTTP 407): set {PROXY_USERNAME_ENV} "
                f"and {PROXY_PASSWORD_ENV}")
    return None
