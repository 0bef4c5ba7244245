"""A tiny HTTP forward proxy on 127.0.0.1 that counts what it forwards, optionally asking for
Basic credentials as a corporate proxy does. It takes absolute-URI requests (what Chromium
sends for http) and CONNECT tunnels (what Playwright's request API opens); the local site
is plain http, so the request lines inside a tunnel are read and counted too."""

from __future__ import annotations

import base64
import http.client
import re
import select
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

REQUEST_LINE = re.compile(rb"(?:^|\r\n)(?:GET|POST|HEAD|PUT|DELETE) (\S+) HTTP/1\.[01]\r\n")
HOP_HEADERS = {"proxy-authorization", "proxy-connection", "connection", "keep-alive", "transfer-encoding"}


class CountingProxy:
    def __init__(self, credentials: tuple[str, str] | None = None, *, connect: bool = True,
                 media_status: int | None = None, chunk_bytes: int | None = None,
                 cut_media: bool = False) -> None:
        self.credentials = credentials
        self.connect = connect  # False: CONNECT answers 501, as a proxy that only forwards plain GETs
        self.media_status = media_status  # an answer of the proxy's own to every /media/ request
        # set: forwarded answers go chunked (Transfer-Encoding), in writes of this many bytes with a
        # pause between, as a streaming proxy relays a body while it arrives
        self.chunk_bytes = chunk_bytes
        self.cut_media = cut_media  # True: every /media/ answer loses its second half (framed as whole)
        self.seen: list[str] = []  # every request the proxy was asked for: "CONNECT host:port" or "GET http://..."
        self.authorizations: list[str] = []  # every Proxy-Authorization value it was sent
        self.tunnels_refused = 0
        self.tunnels: list[str] = []  # the host:port of every CONNECT asked for
        self.forwarded: list[str] = []  # the paths of requests passed on
        self.refused = 0  # requests without the right Proxy-Authorization
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> "CountingProxy":
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

            def parse_request(self) -> bool:  # every request, before any check: what reached the proxy
                parsed = super().parse_request()
                if parsed:
                    with proxy._lock:
                        proxy.seen.append(f"{self.command} {self.path}")
                        if self.headers.get("Proxy-Authorization"):
                            proxy.authorizations.append(self.headers["Proxy-Authorization"])
                return parsed

            def _authorized(self) -> bool:
                if proxy.credentials is None:
                    return True
                token = base64.b64encode(":".join(proxy.credentials).encode()).decode()
                return self.headers.get("Proxy-Authorization", "") == f"Basic {token}"

            def _refuse(self) -> None:
                with proxy._lock:
                    proxy.refused += 1
                self.send_response(407)
                self.send_header("Proxy-Authenticate", 'Basic realm="corp"')
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_CONNECT(self) -> None:  # noqa: N802
                with proxy._lock:
                    proxy.tunnels.append(self.path)
                if not self._authorized():
                    return self._refuse()
                if not proxy.connect:
                    with proxy._lock:
                        proxy.tunnels_refused += 1
                    self.send_response(501, "Not Implemented")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                host, _, port = self.path.rpartition(":")
                upstream = socket.create_connection((host, int(port)), timeout=30)
                self.send_response(200, "Connection established")
                self.end_headers()
                self.close_connection = True
                client = self.connection
                try:
                    while True:
                        ready, _, _ = select.select([client, upstream], [], [], 30)
                        if not ready:
                            return
                        for sock in ready:
                            data = sock.recv(65536)
                            if not data:
                                return
                            if sock is client:
                                with proxy._lock:
                                    proxy.forwarded += [m.decode() for m in REQUEST_LINE.findall(data)]
                            (upstream if sock is client else client).sendall(data)
                finally:
                    upstream.close()

            def _forward(self) -> None:
                if not self._authorized():
                    return self._refuse()
                target = urlsplit(self.path)
                if not target.hostname:  # not a proxy request
                    self.send_error(400)
                    return
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                path = target.path + (f"?{target.query}" if target.query else "")
                if proxy.media_status is not None and target.path.startswith("/media/"):
                    self.send_response(proxy.media_status)
                    self.send_header("Content-Type", "text/html")
                    self.send_header("Content-Length", "27")
                    self.end_headers()
                    self.wfile.write(b"<html>proxy says no</html>\n")
                    return
                conn = http.client.HTTPConnection(target.hostname, target.port or 80, timeout=30)
                try:
                    headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_HEADERS}
                    conn.request(self.command, path or "/", body=body, headers=headers)
                    resp = conn.getresponse()
                    data = resp.read()
                except OSError:  # no such host (the browser's own background requests), or it went away
                    self.send_error(502)
                    return
                finally:
                    conn.close()
                with proxy._lock:
                    proxy.forwarded.append(path or "/")
                if proxy.cut_media and target.path.startswith("/media/"):
                    data = data[: len(data) // 2]
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in HOP_HEADERS and k.lower() != "content-length":
                        self.send_header(k, v)
                if proxy.chunk_bytes is None:
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    return
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                self.wfile.flush()
                for start in range(0, len(data), proxy.chunk_bytes):
                    piece = data[start:start + proxy.chunk_bytes]
                    self.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
                    self.wfile.flush()
                    time.sleep(0.002)  # each piece its own packet: the client sees a body that trickles in
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()

            do_GET = do_POST = do_HEAD = _forward

        return Handler
