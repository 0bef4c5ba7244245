"""Incremental runs: end a hashtag early by what the dataset already holds, or by date.

``stop_after_known = N`` (``scrape --stop-after-known N``) ends a job after N posts in a
row that the dataset already has (stored, rejected, or marked done), as gallery-dl's
abort-on-known does: a tag scraped yesterday is caught up in a page or two.

``since`` (``scrape --since DATE``) fetches no post taken before DATE. A hashtag feed
lists posts newest first, except for the few "top posts" a tag page may show first, so
an older post is skipped and the job ends once :data:`OLDER_IN_A_ROW` posts in a row are
older. A post whose date the page did not give (one read from the grid alone) is
fetched: its age is unknown, not old.

A job that ends this way is done (it found what it came for), never failed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from typing import Any

OLDER_IN_A_ROW = 3  # older posts in a row that end a job: out-of-order top posts do not


def taken_at(extra: dict[str, Any]) -> datetime | None:
    """When a post was taken, from its feed data (``taken_at``: Unix seconds), or None."""
    value = extra.get("taken_at")
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        return datetime.fromtimestamp(value, tz=timezone.utc)
    except (OverflowError, OSError, ValueError):
        return None


def describe_since(since: datetime) -> str:
    """``since`` as the user wrote it, near enough: a date alone when it is a UTC midnight."""
    if since.utcoffset() == timezone.utc.utcoffset(None) and (since.hour, since.minute, since.second) == (0, 0, 0):
        return since.date().isoformat()
    return since.isoformat()


class Incremental:
    """Decides, post by post in feed order, which to skip and when a job is done."""

    def __init__(self, stop_after_known: int | None, since: datetime | None) -> None:
        self.stop_after_known = stop_after_known
        self.since = since
        self.known_in_a_row = 0
        self.older_in_a_row = 0
        self.skipped_older = 0
        self.reason: str | None = None  # why the job ended early, in words; None while it goes on

    @property
    def active(self) -> bool:
        return self.stop_after_known is not None or self.since is not None

    async def skip(self, extra: dict[str, Any], shortcode: str, is_known: Callable[[str], Awaitable[bool]]) -> bool:
        """Whether to leave this post unfetched; sets :attr:`reason` when the job should end."""
        if self.reason is not None:
            return True
        if self.since is not None:
            when = taken_at(extra)
            if when is not None and when < self.since:
                self.older_in_a_row += 1
                self.skipped_older += 1
                if self.older_in_a_row >= OLDER_IN_A_ROW:
                    self.reason = f"reached posts older than {describe_since(self.since)}"
                return True
            self.older_in_a_row = 0
        if self.stop_after_known is not None:
            if await is_known(shortcode):
                self.known_in_a_row += 1
                if self.known_in_a_row >= self.stop_after_known:
                    self.reason = f"stopped after {self.known_in_a_row} known posts in a row"
                return True  # fetching it would be skipped anyway: the dataset has it
            self.known_in_a_row = 0
        return False
