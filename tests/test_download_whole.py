"""A download that arrives cut short is a transient failure (retried, then ``failed``), never an
image handed on to be rejected as truncated: whatever the cut point, with or without the
``Content-Length`` that would have told."""

from __future__ import annotations

import asyncio
from functools import lru_cache

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from selfiescope.core.har import StoredResponse
from selfiescope.core.web import DownloadError, fetch_image
from selfiescope.testing.site import MockInstagram, TagSpec

URL = "http://images.example/media/a_1080.jpg"
HEADER_BYTES = 1024  # a cut inside the JPEG header leaves no image to open: "not an image" or the length says it


@lru_cache(maxsize=1)
def jpeg() -> bytes:
    with MockInstagram(tags={"t": TagSpec(1, "selfie", noface=0, small_face=0)}) as site:
        return site.media_bytes(site.posts("t")[0], 1080)


class Answers:
    """``request.get`` answering with the given bodies in turn (the last one again after that)."""

    def __init__(self, *bodies: tuple[bytes, dict[str, str]]) -> None:
        self.bodies = list(bodies)
        self.calls = 0

    async def get(self, url: str, **_: object) -> StoredResponse:
        data, headers = self.bodies[min(self.calls, len(self.bodies) - 1)]
        self.calls += 1
        return StoredResponse(url, 200, {"content-type": "image/jpeg", **headers}, data)


async def no_sleep(_: float) -> None:
    return None


def fetch(request: Answers, retries: int = 1):
    return fetch_image(request, URL, bucket=None, max_bytes=10**7, retries=retries, backoff_s=0, sleep=no_sleep)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(fraction=st.floats(min_value=0.0, max_value=1.0, exclude_max=True), announced=st.booleans())
def test_a_body_cut_anywhere_is_a_transient_failure(fraction: float, announced: bool) -> None:
    whole = jpeg()
    cut = min(len(whole) - 1, int(len(whole) * fraction))
    if not announced:
        cut = max(cut, HEADER_BYTES)
    headers = {"content-length": str(len(whole))} if announced else {}
    request = Answers((whole[:cut], headers))
    with pytest.raises(DownloadError) as exc:
        asyncio.run(fetch(request))
    assert exc.value.transient, "a cut-off download is tried again later, never rejected for good"
    assert request.calls == 2, "it was retried"


def test_a_cut_answer_then_a_whole_one_gives_the_whole_image() -> None:
    whole = jpeg()
    request = Answers((whole[: len(whole) // 2], {}), (whole, {"content-length": str(len(whole))}))
    got = asyncio.run(fetch(request, retries=2))
    assert got.data == whole and got.attempts == 2


def test_a_decoded_body_is_not_measured_against_its_encoded_length() -> None:
    whole = jpeg()
    request = Answers((whole, {"content-length": "1000", "content-encoding": "gzip"}))
    assert asyncio.run(fetch(request)).data == whole


class _Context:
    """What :class:`ProxiedRequest` reads of a browser context: cookies and the browser's version."""

    browser = None

    async def cookies(self, url: str) -> list[dict[str, str]]:
        return [{"name": "sessionid", "value": "SESSION-COOKIE-VALUE"}]


@pytest.mark.parametrize("url", ["https://images.example/a.jpg?sig=SIGNED", "http://127.0.0.1:9/a.jpg?sig=SIGNED"])
def test_a_failed_proxied_download_logs_no_credential(
    url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    import base64

    from proxy_helpers import CountingProxy
    from selfiescope.core.proxied_request import ProxiedRequest
    from selfiescope.core.proxy import PROXY_PASSWORD_ENV, PROXY_USERNAME_ENV
    from selfiescope.core.web import RequestFailed

    caplog.set_level("DEBUG")
    monkeypatch.setenv(PROXY_USERNAME_ENV, "corp-user")
    monkeypatch.setenv(PROXY_PASSWORD_ENV, "Pr0xy-S3cret!")
    token = base64.b64encode(b"corp-user:Pr0xy-S3cret!").decode()

    async def attempt() -> None:
        request = ProxiedRequest(_Context(), proxy.url, [], 10)
        try:
            await request.get(url)
        finally:
            await request.dispose()

    with CountingProxy(credentials=("corp-user", "Pr0xy-S3cret!"), connect=False, media_status=None) as proxy:
        try:
            asyncio.run(attempt())
        except RequestFailed:
            pass
    logged = "\n".join(r.getMessage() for r in caplog.records)
    for secret in (token, "Pr0xy-S3cret!", "SESSION-COOKIE-VALUE", "SIGNED"):
        assert secret not in logged


def test_a_proxied_answer_shorter_than_its_length_is_named_as_cut_off() -> None:
    """A proxy that closes the connection early, after announcing the whole length."""
    import socket
    import threading

    from selfiescope.core.proxied_request import ProxiedRequest
    from selfiescope.core.web import RequestFailed

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)

    def serve() -> None:
        conn, _ = listener.accept()
        conn.recv(65536)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nContent-Length: 5000\r\n\r\n" + b"\xff\xd8\xff" * 100)
        conn.close()

    threading.Thread(target=serve, daemon=True).start()

    async def attempt() -> None:
        request = ProxiedRequest(_Context(), f"http://127.0.0.1:{listener.getsockname()[1]}", [], 10)
        try:
            await request.get("http://127.0.0.1:1/media/a.jpg")
        finally:
            await request.dispose()

    with pytest.raises(RequestFailed, match="broke off|cut off"):
        asyncio.run(attempt())
    listener.close()
