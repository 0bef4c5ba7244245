"""Recording one real browsing session of any browser source as a scrubbed HAR file, and
settings that replay it offline (docs/plugins.md, "Testing a browser source on a recorded
session"). It runs a whole collect pipeline, so import it where it is used (a command, a test).

::

    from selfiescope.api.recording import record, replay_settings
"""

from __future__ import annotations

from ..pipelines.collecting.record import record, replay_settings

__all__ = ["record", "replay_settings"]
