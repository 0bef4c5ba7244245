"""Image downloads on a job's image clock.

A job's :attr:`JobRun.images <.watchdog.JobRun>` clock runs only while a download waits (an
attempt, a backoff before the next), never while the feed is read, and never during a wait the
site asked for (the request budget, a 429's Retry-After). It is reset when an image arrives
or the host answers for good (404, too large). When downloads have waited ``stall_s`` in all
with no image, :class:`ImagesQuiet` says which host went quiet and how the last try ended: a
feed that keeps growing while every download hangs is no progress.
"""

from __future__ import annotations

from typing import Any, Callable
from urllib.parse import urlparse

from ...api import SiteError
from ...api.web import Fetched, TokenBucket, fetch_image
from .watchdog import JobRun, Stalled, Watchdog


class ImagesQuiet(SiteError):
    """No image for ``stall_s`` of downloading; the message says for how long and the last try."""


async def download_on_clock(request: Any, url: str, state: JobRun, watch: Watchdog, *, bucket: TokenBucket | None,
                            on_429: Callable[[float], None], **fetch_options: Any) -> Fetched:
    """:func:`~selfiescope.core.web.fetch_image` on ``state.images``; :class:`ImagesQuiet` when it runs out."""
    images = state.images

    def waiting(awaitable: Any) -> Any:  # the budget or a 429: the site asked for it, not a stall
        return watch.paused(images.paused(awaitable))

    state.media_host = urlparse(url).netloc or url.split("?")[0]  # the host only: a signed URL is a credential
    failures: list[str] = []
    try:
        return await images.counting(f"images from {state.media_host}", fetch_image(
            request, url, bucket=bucket, waiting=waiting, on_429=on_429, on_failure=failures.append,
            **fetch_options))
    except Stalled:
        waited = images.elapsed()
        last = failures[-1] if failures else f"no answer within {waited:.0f} s"
        raise ImagesQuiet(f"stopped answering: no image for {waited:.0f} s of downloading (last try: {last})") from None


def images_gone(state: JobRun, why: str) -> str:
    """The source's one line when the image host is quiet or out of reach."""
    return (f"#{state.tag}: images from {state.media_host} {why}; stopping ({state.found} posts found, "
            "what was stored is kept). Rerun when it answers again to fetch the rest")
