"""What the doctor sees besides what the source reads: every HTTP 429 the site answers, with its
``Retry-After`` and the site's own message, so a check that fails under a rate limit names it."""

from __future__ import annotations

import asyncio
import logging
from typing import Any
from urllib.parse import urlparse

from ...api.web import Lease, parse_retry_after, within
from .doctor_report import site_message

log = logging.getLogger("selfiescope.doctor")


class RateLimitWatch:
    """Listens to a browser context's responses (``context.on("response", watch.on_response)``)."""

    def __init__(self, base_url: str, timeout_s: float) -> None:
        self.host = urlparse(base_url).netloc
        self.timeout_s = timeout_s
        self.lease: Lease | None = None  # set once the browser is up: asks a dropped 429 again
        self.seen: list[tuple[str, float, str]] = []  # path, Retry-After, the site's message
        self._reads: set[asyncio.Task[None]] = set()

    def on_response(self, response: Any) -> None:
        if response.status != 429 or urlparse(response.url).netloc != self.host:
            return
        task = asyncio.ensure_future(self._read(response))
        self._reads.add(task)
        task.add_done_callback(self._reads.discard)

    async def _read(self, response: Any) -> None:
        path = urlparse(response.url).path
        message, wait = "", 30.0
        try:
            wait = parse_retry_after(response.headers.get("retry-after"))  # no round trip to the browser
            # a body the page never read never reaches Playwright: bounded
            message = site_message(await within(min(self.timeout_s, 2.0), response.text(), "reading a 429"))
        except Exception as exc:  # noqa: BLE001 - asked again below
            log.debug("the body of a 429 at %s is unreadable: %s", path, exc)
        if not message and not any(m for _, _, m in self.seen):
            message = await self._ask_again(response.request)
        self.seen.append((path, wait, message))

    async def _ask_again(self, request: Any) -> str:
        """The site's message for a 429 whose body the page dropped: the same request, once more."""
        if self.lease is None:
            return ""
        try:
            # the headers the page's script set (CSRF token, app id); the context adds its cookies
            headers = {k: v for k, v in request.headers.items()
                       if not k.startswith(":") and k not in ("cookie", "content-length", "host")}
            again = await within(self.timeout_s + 5, self.lease.request.fetch(
                request.url, method=request.method, headers=headers, data=request.post_data,
                fail_on_status_code=False, timeout=self.timeout_s * 1000), "asking for the 429's message")
            if again.status != 429:
                return ""
            return site_message(await within(self.timeout_s, again.text(), "reading a 429"))
        except Exception as exc:  # noqa: BLE001 - the 429 is named without its message
            log.debug("asking again for the 429's message failed: %s", exc)
            return ""

    async def settle(self) -> None:
        """Wait (bounded) for the 429s already answered to be read."""
        if self._reads:
            await asyncio.wait(list(self._reads), timeout=self.timeout_s + 1)

    def note(self) -> str:
        """The last 429 that carried a message (else the last one), said in one line; "" if none."""
        if not self.seen:
            return ""
        path, wait, message = next((r for r in reversed(self.seen) if r[2]), self.seen[-1])
        return f"HTTP 429 at {path} (Retry-After {wait:g} s)" + (f": {message!r}" if message else "")

    def cancel(self) -> None:
        for task in list(self._reads):
            task.cancel()
