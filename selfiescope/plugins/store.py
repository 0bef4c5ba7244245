"""The ``store`` step (last in the chain): hand accepted bytes to the storage backend.

The id comes from the content hash, or with ``id_from = "post"`` from the source and
post id (plus a content prefix: one post can hold several images), always reduced to a
safe alphabet; never from a remote file name.
"""

from __future__ import annotations

import re
from typing import Literal

from ..core.components import Options, Step, StorageError
from ..core.events import ImageEvent, Reject
from ..core.hookspecs import hookimpl
from ..core.text import printable

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


class StoreOptions(Options):
    id_from: Literal["content", "post"] = "content"


def image_id(event: ImageEvent, id_from: str = "content") -> str:
    """A filesystem-safe, stable id: ``<sha256[:16]>`` or ``<source>-<post id>-<sha256[:8]>``."""
    if id_from == "post" and event.origin.post_id:
        source, post = (_UNSAFE.sub("_", part).strip("_-") for part in (event.origin.source, event.origin.post_id))
        if source and post:
            return f"{source}-{post}"[:100] + f"-{event.content_hash[:8]}"
    return event.content_hash[:16]


class StoreStep(Step):
    name = "store"
    Options = StoreOptions

    async def process(self, event: ImageEvent) -> None:
        if self.run.storage is None:
            raise Reject("no_storage", "no storage backend is configured")
        if event.format is None:
            raise Reject("not_decoded", "store needs the decode step earlier in the chain")
        event.id = event.id or image_id(event, self.options.id_from)
        try:
            event.location = await self.run.storage.write(event)
        except Exception as exc:  # noqa: BLE001 - whatever the backend raised, the image was not stored
            detail = f"{type(exc).__name__}: {exc.strerror}" if isinstance(exc, OSError) and exc.strerror else f"{type(exc).__name__}: {exc}"
            raise StorageError(f"{detail} (writing under {printable(self.run.root)})") from exc


@hookimpl
def selfiescope_steps():
    return [StoreStep]
