"""Work items: an image a remote worker loads itself (``Source.remote_items``).

A source that can name its images by something a worker can open on its own (a path on a
shared filesystem) yields :class:`WorkItem` objects instead of events, so the bytes do not
travel with the task. Any other source's events are wrapped with their bytes.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .events import ImageEvent, Origin
from .text import printable


@dataclass
class WorkItem:
    """One image to process: a path the workers can read, or the bytes themselves.

    ``content_hash``: what the source measured when it listed the item (its resume check);
    a file that changed since then fails on the worker instead of being recorded under the
    wrong hash. ``failure``: ``(step, code, reason)`` for an item the source could not list
    (an unreadable file): it is recorded as failed without touching a worker's chain.
    """

    origin: Origin
    label: str
    path: str | None = None
    data: bytes | None = None
    max_bytes: int | None = None
    content_hash: str | None = None
    failure: tuple[str, str, str] | None = None
    notes: dict[str, Any] = field(default_factory=dict)  # what the source noted (JSON-safe part)

    def load(self) -> ImageEvent:
        """The event a worker runs the chain on (rejected/failed when the bytes cannot be had)."""
        notes: dict[str, Any] = dict(self.notes)
        if self.failure is not None:
            event = ImageEvent(origin=self.origin, label=self.label, data=b"")
            event.fail(*self.failure)
            return event
        if self.data is not None:
            data = self.data
        else:
            assert self.path is not None
            path = Path(self.path)
            try:
                size = path.stat().st_size
                if self.max_bytes is not None and size > self.max_bytes:
                    data, notes["oversize"] = b"", size  # decode rejects it; the reason says why
                else:
                    data = path.read_bytes()
            except OSError as exc:
                event = ImageEvent(origin=self.origin, label=self.label, data=b"")
                event.fail("read", "read_failed", f"cannot read {printable(self.path)}: {exc.strerror or exc}")
                return event
            if self.content_hash and "oversize" not in notes and hashlib.sha256(data).hexdigest() != self.content_hash:
                event = ImageEvent(origin=self.origin, label=self.label, data=b"")
                event.fail("read", "read_failed", f"{printable(self.path)} changed while it was being processed; run again")
                return event
        event = ImageEvent(origin=self.origin, label=self.label, data=data,
                           **({"content_hash": self.content_hash} if self.content_hash else {}))
        event.notes.update(notes)
        return event
