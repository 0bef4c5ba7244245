"""Store intents: a write to storage is noted in the manifest before it happens.

The ``store`` step writes the image, then the engine records its row: a process killed
between the two (or a write a deadline gave up on that lands later) leaves a stored file
that no row names. Nothing would ever remove it: a rerun may reject that photo (as a
near-duplicate of a copy stored meanwhile) and ``forget`` only deletes what rows name.

So the step first notes ``(id, label)`` in ``store_intents`` (a committed row), then
writes. A run that ends drops the intents its rows settled; the next run, holding the
root's lock before it collects anything, sweeps what is left: an intent whose image has
no accepted row is a write nobody recorded, and the files the backend holds for it
(:meth:`Storage.locate`) are deleted. Storage and manifest then agree again, whatever
was killed where.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from .components import Storage
    from .events import ImageEvent
    from .manifest import Manifest

log = logging.getLogger("selfiescope.storage")

_SETTLED = (
    "SELECT 1 FROM images i WHERE i.id = store_intents.id AND i.label = store_intents.label"
    " AND i.decision = 'accepted' AND i.location IS NOT NULL"
)


def note_intent(manifest: "Manifest", event: "ImageEvent", run_id: int | None) -> None:
    """Commit "this image is about to be written" (call before ``Storage.write``)."""
    manifest.execute(
        "INSERT OR REPLACE INTO store_intents(content_hash, id, label, run_id, at) VALUES (?,?,?,?,?)",
        (event.content_hash, event.id, event.label, run_id, time.time()),
    )


def drop_settled(manifest: "Manifest") -> int:
    """Forget the intents whose image was recorded as stored (the end of a run). Returns how many."""
    return manifest.execute(f"DELETE FROM store_intents WHERE EXISTS ({_SETTLED})").rowcount


async def sweep(manifest: "Manifest", storage: "Storage") -> int:
    """Delete what unrecorded writes left in storage (call holding the root's lock, before
    collecting). Returns how many files were removed."""
    removed = 0
    # Files first, rows after: on a full disk the deletions free the room the manifest's write needs.
    for row in manifest.query(f"SELECT id, label FROM store_intents WHERE NOT EXISTS ({_SETTLED})"):
        kept = {r[0] for r in manifest.query(
            "SELECT location FROM images WHERE decision='accepted' AND location IS NOT NULL AND id=? AND label=?",
            (row["id"], row["label"]))}
        for stored in await storage.locate(row["id"], row["label"]):
            if stored.location not in kept and await storage.delete(stored):
                removed += 1
    manifest.execute("DELETE FROM store_intents")
    if removed:
        log.warning("removed %d stored file(s) that a killed run wrote but never recorded", removed)
    return removed
