"""The ``store`` step (last in the chain): hand accepted bytes to the storage backend.

The id comes from the content hash, or with ``id_from = "post"`` from the source and
post id (plus a content prefix: one post can hold several images), always reduced to a
safe alphabet; never from a remote file name. Location metadata is removed from the
stored copy (``[privacy] strip_metadata``) *after* the id is fixed: the id, the content
hash and the pixels are those of the original bytes, so an image keeps its id across
the strip and a rerun recognises it.
"""

from __future__ import annotations

import hashlib
import re
from typing import Literal

from ..api import ImageEvent, Options, Reject, Step, StorageError, hookimpl, printable
from ..api.dataset import STORED, has_location, note_intent, strip_metadata

STORED_SHA256 = "stored_sha256"  # event.notes key: the stored copy's hash, where it is not the content hash
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
    requires = frozenset({"format"})  # the file extension comes from the decoded format
    provides = frozenset({STORED})

    @classmethod
    def working_side(cls, options: Options) -> int | None:
        return 0  # writes the original bytes: needs no pixels (one decode per image)

    async def process(self, event: ImageEvent) -> None:
        if self.run.storage is None:
            raise Reject("no_storage", "no storage backend is configured")
        if event.format is None:
            raise Reject("not_decoded", "store needs the decode step earlier in the chain")
        event.id = event.id or image_id(event, self.options.id_from)
        mode = self.run.settings.privacy.strip_metadata
        if mode != "none":
            stripped = strip_metadata(event.data, event.format, mode)
            if stripped != event.data:
                event.notes["metadata_removed"] = len(event.data) - len(stripped)
                event.notes[STORED_SHA256] = hashlib.sha256(stripped).hexdigest()  # what fsck checks the copy against
                event.data = stripped
            if has_location(stripped):  # a format or a damaged file we cannot rewrite losslessly
                raise Reject("location_metadata", f"its {event.format} file keeps GPS or place metadata that cannot be removed "
                             "without re-encoding; set [privacy] strip_metadata = \"none\" to store such files as they are")
        try:
            # Noted before the write: a process killed before the row commits leaves an intent the next run sweeps.
            # One short INSERT, made here: a trip through the thread pool would queue it behind decodes.
            if self.run.manifest is not None:
                note_intent(self.run.manifest, event, self.run.run_id)
            event.location = await self.run.storage.write(event)
        except Exception as exc:  # noqa: BLE001 - whatever the backend raised, the image was not stored
            detail = f"{type(exc).__name__}: {exc.strerror}" if isinstance(exc, OSError) and exc.strerror else f"{type(exc).__name__}: {exc}"
            raise StorageError(f"{detail} (writing under {printable(self.run.root)})") from exc


@hookimpl
def selfiescope_steps():
    return [StoreStep]
