"""The one place that settles an image: record its outcome, count it, tell the observers.

Every executor (the local engine, the Dask client, the pytest runner for plugin authors)
calls :func:`settle` once per image, so the three outcomes mean the same everywhere:

- ``accepted``: the image passed the chain (and is stored when the chain stores);
- ``rejected``: a step decided against it (a :class:`Reject`); final, kept in the manifest;
- ``failed``: something broke (a write, a read, a plugin bug). Not a decision: the
  manifest's ``failures`` table keeps it, the run ends with errors (exit 1), and running
  the same command again retries the image.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from .events import Decision, ImageEvent

if TYPE_CHECKING:  # pragma: no cover
    from .context import RunContext

log = logging.getLogger("selfiescope.engine")


async def settle(run: "RunContext", event: ImageEvent, job: str) -> None:
    """Record ``event``'s outcome in the manifest, count it under ``job`` and fire the hooks."""
    if event.decision is Decision.PENDING:  # the chain ran to its end
        event.decision = Decision.ACCEPTED
    loop = asyncio.get_running_loop()
    try:
        await loop.run_in_executor(run.executor, run.manifest.record, event, run.run_id)
    except Exception as exc:  # noqa: BLE001 - a manifest problem is this image's failure, not the run's end
        log.error("cannot record %s in the manifest: %s: %s", event.describe(), type(exc).__name__, exc)
        event.fail("manifest", "record_failed", f"{type(exc).__name__}: {exc}")
    outcome = event.decision
    run.stats.count(job, outcome.value, event.reject_code, event.size, event.reject_reason)
    if outcome is Decision.FAILED:
        log.warning("%s failed in %s: %s", event.describe(), event.rejected_by, event.reject_reason)
    hook = {
        Decision.ACCEPTED: run.hook.selfiescope_image_accepted,
        Decision.REJECTED: run.hook.selfiescope_image_rejected,
        Decision.FAILED: run.hook.selfiescope_image_failed,
    }[outcome]
    try:
        hook(event=event, run=run)
    except Exception as exc:  # noqa: BLE001 - an observer's bug must not stop the run
        log.error("a plugin's %s hook failed on %s: %s: %s", outcome.value, event.describe(), type(exc).__name__, exc)
        run.stats.errors.append(f"an observer plugin failed on {event.describe()}: {type(exc).__name__}: {exc}")
