"""The review app's gate: every request must come from the launch's own link, to the address the
app was bound to, and every write must carry the page's CSRF token.

- The token printed with the URL (``?token=``) is traded on the first visit for an HttpOnly,
  SameSite=Strict cookie, and the browser is redirected to the same address without it, so the
  token leaves the address bar, the history and any ``Referer``.
- The ``Host`` header must name the bound address: a page on another site that resolves its own
  name to 127.0.0.1 (DNS rebinding) is refused even though the browser thinks it is same-origin.
- A POST needs the ``X-CSRF-Token`` header holding the per-launch CSRF token the page carries, and
  a JSON body: a form on another site can send neither.
- Every answer carries a strict Content-Security-Policy (no inline script, nothing from another
  server) and no Referer leaves the app.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from urllib.parse import parse_qsl, urlencode

from starlette.datastructures import Headers
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

COOKIE = "selfiescope_review"
CSRF_HEADER = "x-csrf-token"
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'")
SECURITY_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-resource-policy", b"same-origin"),
]


def new_secret() -> str:
    return secrets.token_urlsafe(24)


@dataclass(frozen=True)
class Gate:
    """What a request is checked against: the launch token, the CSRF token and the ``Host``
    values the bound address may be reached by."""

    allowed_hosts: frozenset[str]
    token: str = field(default_factory=new_secret)
    csrf: str = field(default_factory=new_secret)
    cookie: str = COOKIE

    @classmethod
    def for_address(cls, host: str, port: int, **secrets_: str) -> "Gate":
        """A cookie is not kept per port: two apps on one machine need cookies of their own names."""
        return cls(allowed_hosts=frozenset(host_names(host, port)), cookie=f"{COOKIE}_{port}", **secrets_)


LOOPBACK_NAMES = ("127.0.0.1", "::1", "localhost")
WILDCARDS = ("0.0.0.0", "::")


def host_names(host: str, port: int) -> set[str]:
    """The ``Host`` header values a browser sends for the bound address (an IPv6 literal is
    bracketed). The loopback is also reached as ``localhost``; an address on every interface
    (0.0.0.0, ::) by this machine's names and by each of its interfaces' addresses."""
    hosts = {host}
    if host in LOOPBACK_NAMES:
        hosts.update(LOOPBACK_NAMES)
    if host in WILDCARDS:
        hosts.update(LOOPBACK_NAMES)
        hosts.update(this_machine())
    return {f"[{h}]:{port}".lower() if ":" in h else f"{h}:{port}".lower() for h in hosts}


def this_machine() -> set[str]:
    """This machine's host names and interface addresses."""
    import socket

    import psutil

    names = {socket.gethostname(), socket.getfqdn()}
    for addresses in psutil.net_if_addrs().values():
        names.update(a.address.split("%", 1)[0] for a in addresses if a.family in (socket.AF_INET, socket.AF_INET6))
    return {n for n in names if n}


def same_token(given: str | None, expected: str) -> bool:
    return given is not None and secrets.compare_digest(given.encode("utf-8", "surrogateescape"), expected.encode())


class GateMiddleware:
    """Pure ASGI middleware (no body buffering, so image answers stream unchanged)."""

    def __init__(self, app: ASGIApp, gate: Gate) -> None:
        self.app = app
        self.gate = gate

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, receive, send)
            return
        if scope["type"] != "http":  # the app has no websocket: refuse one before it opens
            await send({"type": "websocket.close", "code": 1008})
            return
        refusal = self.check(scope)
        send_secured = _with_headers(send)
        if refusal is not None:
            await refusal(scope, receive, send_secured)
            return
        await self.app(scope, receive, send_secured)

    def check(self, scope: Scope) -> Response | None:
        headers = Headers(scope=scope)
        if headers.get("host", "").lower() not in self.gate.allowed_hosts:
            return PlainTextResponse("refused: this address is not the one selfiescope review is serving", 421)
        query = scope.get("query_string", b"").decode("latin-1")
        pairs = parse_qsl(query, keep_blank_values=True)
        given = next((v for k, v in pairs if k == "token"), None)
        if given is not None:
            if not same_token(given, self.gate.token):
                return _refused()
            if scope["method"] != "GET":
                return PlainTextResponse("refused: the token goes in the first GET only", 400)
            rest = urlencode([(k, v) for k, v in pairs if k != "token"])
            redirect = RedirectResponse(scope["path"] + (f"?{rest}" if rest else ""), 303)
            redirect.set_cookie(self.gate.cookie, self.gate.token, httponly=True, samesite="strict", path="/")
            return redirect
        cookie = SimpleCookie()
        try:
            cookie.load(headers.get("cookie", ""))
        except Exception:  # noqa: BLE001 - a malformed Cookie header is no credential
            return _refused()
        if self.gate.cookie not in cookie or not same_token(cookie[self.gate.cookie].value, self.gate.token):
            return _refused()
        if scope["method"] not in ("GET", "HEAD"):
            if not same_token(headers.get(CSRF_HEADER), self.gate.csrf):
                return PlainTextResponse("refused: a change needs the page's CSRF token; reload the page", 403)
            if headers.get("content-type", "").split(";")[0].strip() != "application/json":
                return PlainTextResponse("refused: a change is sent as JSON", 415)
        return None


def _refused() -> Response:
    return PlainTextResponse(
        "refused: open the link with its token that `selfiescope review` printed (each launch has a new one)", 403)


def _with_headers(send: Send) -> Send:
    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = [h for h in message.get("headers", []) if h[0].lower() not in dict(SECURITY_HEADERS)]
            if not any(h[0].lower() == b"cache-control" for h in headers):  # a forgotten image stays in no cache
                headers.append((b"cache-control", b"no-store"))
            message = {**message, "headers": headers + SECURITY_HEADERS}
        await send(message)

    return wrapped
