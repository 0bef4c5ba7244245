"""Downloads through an HTTP proxy the way the browser makes them.

Playwright's request API (``context.request``) reaches every URL through a proxy by a
``CONNECT`` tunnel, ``http://`` ones included; many corporate proxies forward plain
absolute-URI GETs and answer ``CONNECT`` with 501 (or allow it only to port 443). Chromium
itself sends ``GET http://host/path`` to the proxy. :class:`ProxiedRequest` answers the
same calls as ``context.request`` (``get``, ``fetch``) with aiohttp, which does what
Chromium does (a plain GET for ``http://``, ``CONNECT`` only for ``https://``), carrying the
context's cookies for the URL, the proxy's credentials and ``browser.proxy_bypass``.

Every failure is a :class:`~selfiescope.core.web.RequestFailed` whose message is one plain
sentence; aiohttp's own words go to the debug log.
"""

from __future__ import annotations

import asyncio
import base64
import fnmatch
import logging
from typing import Any
from urllib.parse import urlsplit

from .har import StoredResponse
from .proxy import LOOPBACK_HOSTS, is_loopback_proxy, playwright_proxy
from .web import RequestFailed, unreachable_reason, within

log = logging.getLogger("selfiescope.web")

MAX_BODY_BYTES = 256 * 1024 * 1024  # a bound on one answer held in memory; callers cap images far lower


def proxy_needs_plain_gets(server: str | None) -> bool:
    """Whether downloads should go as Chromium sends them (an http(s) proxy), not through Playwright."""
    return bool(server) and urlsplit(server or "").scheme in ("http", "https")


def bypassed(url: str, server: str, bypass: list[str]) -> bool:
    """Whether ``url`` goes direct: a ``proxy_bypass`` entry (``.corp.example``, ``*.corp``, a host)
    matches its host, or it is a loopback host and the proxy is not (Chromium's own rule)."""
    host = (urlsplit(url).hostname or "").lower()
    if host in {h.strip("[]") for h in LOOPBACK_HOSTS} and not is_loopback_proxy(server):
        return True
    for rule in bypass:
        rule = rule.strip().lower()
        if not rule:
            continue
        if rule.startswith("."):
            if host.endswith(rule) or host == rule[1:]:
                return True
        elif fnmatch.fnmatch(host, rule) or host == rule:
            return True
    return False


class ProxiedRequest:
    """``context.request`` for downloads through an HTTP proxy (see the module's docstring)."""

    def __init__(self, context: Any, server: str, bypass: list[str], timeout_s: float) -> None:
        self.context = context
        self.server = server
        self.bypass = bypass
        self.timeout_s = timeout_s
        self._session: Any = None
        self._user_agent: str | None = None
        self.proxy_name = urlsplit(server).netloc

    async def _client(self) -> Any:
        import aiohttp

        if self._session is None:
            self._session = aiohttp.ClientSession(auto_decompress=True, trust_env=False,
                                                  cookie_jar=aiohttp.DummyCookieJar())
        return self._session

    async def _headers(self, url: str, extra: dict[str, str] | None) -> dict[str, str]:
        """The context's cookies for ``url`` and the browser's user agent, as the page would send them."""
        headers = dict(extra or {})
        cookies = await within(self.timeout_s, self.context.cookies(url), "reading the session's cookies")
        if cookies:
            headers["Cookie"] = "; ".join(f"{c['name']}={c['value']}" for c in cookies)
        if self._user_agent is None:
            browser = self.context.browser
            version = browser.version if browser is not None else ""
            self._user_agent = (f"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
                                f"Chrome/{version} Safari/537.36")
        headers.setdefault("User-Agent", self._user_agent)
        return headers

    async def get(self, url: str, **kwargs: Any) -> StoredResponse:
        return await self.fetch(url, method="GET", **kwargs)

    async def fetch(self, url: str, *, method: str = "GET", headers: dict[str, str] | None = None,
                    data: Any = None, timeout: float | None = None, fail_on_status_code: bool = False,
                    **_: Any) -> StoredResponse:
        import aiohttp

        seconds = (timeout / 1000) if timeout else self.timeout_s
        settings = playwright_proxy(self.server)  # the credentials, from the environment
        assert settings is not None
        direct = bypassed(url, self.server, self.bypass)
        proxy_headers = None
        if settings.get("username") and not direct:
            token = base64.b64encode(f"{settings['username']}:{settings.get('password', '')}".encode()).decode()
            proxy_headers = {"Proxy-Authorization": f"Basic {token}"}
        bare = url.split("?")[0]
        session = await self._client()
        sent = await self._headers(url, headers)
        if proxy_headers and urlsplit(url).scheme == "http":  # a plain GET carries it itself; CONNECT in proxy_headers
            sent.update(proxy_headers)
        try:
            async with session.request(
                method, url, headers=sent, data=data,
                proxy=None if direct else self.server, proxy_headers=proxy_headers,
                timeout=aiohttp.ClientTimeout(total=seconds), allow_redirects=True,
            ) as resp:
                body = await _whole_body(resp, MAX_BODY_BYTES)
                answer = StoredResponse(url, resp.status, {k.lower(): v for k, v in resp.headers.items()}, body)
        except RequestFailed:  # the body's own check, worded already (it is an OSError too)
            raise
        except aiohttp.ClientHttpProxyError as exc:  # the proxy answered, with a refusal
            log.debug("GET %s through %s: %s", bare, self.proxy_name, _described(exc, url, bare))
            raise RequestFailed(self._refusal(exc.status), proxy=True) from None
        except aiohttp.ClientProxyConnectionError as exc:
            log.debug("GET %s through %s: %s", bare, self.proxy_name, _described(exc, url, bare))
            raise RequestFailed(f"the proxy at {self.proxy_name} could not be reached for the image download "
                                "(connection refused)", proxy=True) from None
        except (asyncio.TimeoutError, TimeoutError):
            raise RequestFailed(f"no answer within {seconds:g} s") from None
        except aiohttp.ClientConnectorError as exc:
            log.debug("GET %s: %s", bare, _described(exc, url, bare))
            raise RequestFailed("the host cannot be reached", unreachable=unreachable_reason(
                _errno_words(exc)) or "connection refused") from None
        except (aiohttp.ClientError, OSError) as exc:
            log.debug("GET %s: %s", bare, _described(exc, url, bare))
            raise RequestFailed("the connection broke off before the answer") from None
        if answer.status == 407 and not direct:  # the proxy's answer, not the site's
            raise RequestFailed(self._refusal(407), proxy=True)
        if fail_on_status_code and not 200 <= answer.status < 300:
            raise RequestFailed(f"HTTP {answer.status}")
        return answer

    def _refusal(self, status: int) -> str:
        if status == 407:
            return (f"the proxy at {self.proxy_name} asks for credentials for the image download (HTTP 407): set "
                    "SELFIESCOPE_PROXY_USERNAME and SELFIESCOPE_PROXY_PASSWORD")
        return f"the proxy at {self.proxy_name} refused the image download (HTTP {status})"

    async def dispose(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()


async def _whole_body(resp: Any, limit: int) -> bytes:
    """Every byte of the body, to its end. ``content.read(n)`` returns what has arrived so far, which
    through a proxy that relays in pieces (chunked, small writes) is a prefix. aiohttp raises
    ``ClientPayloadError`` when the connection ends before the length or the last chunk it announced."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in resp.content.iter_any():
        size += len(chunk)
        if size > limit:
            raise RequestFailed(f"the answer is larger than {limit} bytes")
        chunks.append(chunk)
    body = b"".join(chunks)
    length = resp.headers.get("Content-Length", "")
    if length.isdigit() and not resp.headers.get("Content-Encoding") and int(length) != len(body):
        raise RequestFailed(f"the answer was cut off ({len(body)} of {int(length)} bytes)")
    return body


def _described(exc: BaseException, url: str, bare: str) -> str:
    """An aiohttp error for the debug log. Never its ``repr``: that holds the request's headers
    (the proxy's credentials, the session cookie); a signed URL's query is cut too."""
    import aiohttp

    if isinstance(exc, aiohttp.ClientResponseError):
        return f"{type(exc).__name__} (HTTP {exc.status} {exc.message})"
    return f"{type(exc).__name__}: {exc}".replace(url, bare)


def _errno_words(exc: Any) -> str:
    """A connector error in the words :func:`~selfiescope.core.web.unreachable_reason` knows."""
    import errno

    code = getattr(exc, "errno", None) or getattr(getattr(exc, "os_error", None), "errno", None)
    if code == errno.ECONNREFUSED:
        return "ECONNREFUSED"
    if code in (errno.EHOSTUNREACH, errno.ENETUNREACH):
        return "EHOSTUNREACH"
    if "Name or service not known" in str(exc) or "nodename nor servname" in str(exc) or code == -2:
        return "ENOTFOUND"
    return str(exc)
