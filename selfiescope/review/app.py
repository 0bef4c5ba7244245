"""``selfiescope review``'s web app: Starlette routes over the data layer, behind the gate
(:mod:`.security`), served by uvicorn on one address.

:func:`create_app` builds the ASGI app for a :class:`~selfiescope.review.data.ReviewData`;
:func:`bind` opens the listening socket (so the URL is known before serving) and :func:`serve`
runs uvicorn on it until Ctrl-C.
"""

from __future__ import annotations

import contextlib
import functools
import signal
import socket
import threading
from dataclasses import dataclass
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import jinja2
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from .routes import Routes, problem_response
from .security import WILDCARDS, Gate, GateMiddleware

LOOPBACK = ("127.0.0.1", "::1", "localhost")


def create_app(data: Any, gate: Gate, deadline_s: float = 120.0) -> Starlette:
    env = jinja2.Environment(loader=jinja2.PackageLoader("selfiescope.review", "templates"),
                             autoescape=True, undefined=jinja2.StrictUndefined)
    routes = Routes(data, Jinja2Templates(env=env), gate.csrf, deadline_s)
    app = Starlette(
        routes=[
            Route("/", answered(routes.grid)),
            Route("/i/{image_id}", answered(routes.detail_page)),
            Route("/thumb/{image_id}", answered(routes.thumbnail)),
            Route("/image/{image_id}", answered(routes.image)),
            Route("/api/page", answered(routes.page_json)),
            Route("/api/facets", answered(routes.facets_json)),
            Route("/api/detail/{image_id}", answered(routes.detail_json)),
            Route("/api/version", answered(routes.version_json)),
            Route("/api/action", answered(routes.action), methods=["POST"]),
            Route("/api/undo", answered(routes.undo), methods=["POST"]),
            Route("/api/forget-plan", answered(routes.forget_plan), methods=["POST"]),
            Route("/api/forget", answered(routes.forget), methods=["POST"]),
            Route("/favicon.ico", _no_icon),
            Mount("/static", StaticFiles(packages=[("selfiescope.review", "static")]), name="static"),
        ],
        lifespan=_closing(routes),
    )
    app.add_middleware(GateMiddleware, gate=gate)
    return app


def answered(endpoint: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
    """Every failure of an endpoint becomes one line for the page (:func:`problem_response`),
    inside the gate, so it carries the security headers and no traceback reaches the terminal."""

    @functools.wraps(endpoint)
    async def wrapper(request: Request) -> Response:
        try:
            return await endpoint(request)
        except Exception as exc:  # noqa: BLE001 - each kind is told apart by problem_response
            return problem_response(request, exc)

    return wrapper


async def _no_icon(request: Any) -> Response:
    return Response(status_code=204)


def _closing(routes: Routes) -> Any:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        routes.call.close()

    return lifespan


@dataclass
class Address:
    sock: socket.socket
    host: str
    port: int

    @property
    def url(self) -> str:
        """Where a browser finds the app; bound to every interface, by a name or an address of
        this machine that another machine can use (never a loopback one, where there is another)."""
        host = reachable_name(self.host) if self.host in WILDCARDS else self.host
        return _http(host, self.port)

    @property
    def local_url(self) -> str | None:
        """For an app on every interface, its address on this machine's loopback."""
        if self.host not in WILDCARDS:
            return None
        return _http("::1" if self.host == "::" else "127.0.0.1", self.port)

    @property
    def loopback(self) -> bool:
        return self.host in LOOPBACK


def _http(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/"


def is_loopback(name: str) -> bool:
    import ipaddress

    lowered = name.lower().rstrip(".")
    if lowered in ("localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback") or lowered.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(lowered.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


def reachable_name(wildcard: str) -> str:
    """This machine as other machines may reach it: its fully qualified name, else its host
    name, else its first non-loopback interface address (IPv6 only for an IPv6 wildcard);
    the loopback address when it has nothing else."""
    import psutil

    for name in (socket.getfqdn(), socket.gethostname()):
        if name and not is_loopback(name):
            return name
    families = (socket.AF_INET6,) if wildcard == "::" else (socket.AF_INET, socket.AF_INET6)
    for family in families:
        for addresses in psutil.net_if_addrs().values():
            for a in addresses:
                address = a.address.split("%", 1)[0]
                if a.family == family and not is_loopback(address) and not address.startswith("fe80:"):
                    return address
    return "::1" if wildcard == "::" else "127.0.0.1"


def bind(host: str, port: int) -> Address:
    """A listening socket on ``host:port`` (port 0: a free one, chosen by the system)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, kind, proto, _, addr = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return Address(sock, host, sock.getsockname()[1])


def serve(app: Starlette, address: Address) -> None:
    """Serve until Ctrl-C (or SIGTERM, under :func:`sigterm_interrupts`); uvicorn finishes the
    requests under way (5 s at most) and raises the signal again, so it reaches the caller as
    ``KeyboardInterrupt``."""
    import uvicorn

    config = uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=5,
                            lifespan="on", server_header=False)
    uvicorn.Server(config).run(sockets=[address.sock])


@contextlib.contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """While serving, SIGTERM ends the command like a Ctrl-C (closed cleanly, exit 0), as
    mock-site does: uvicorn restores the handler it found and raises the signal again once it
    has stopped, and a SIGTERM before or after uvicorn runs meets the same handler."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt
