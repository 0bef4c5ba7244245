"""Recording one real browsing session of any browser source as a scrubbed HAR file, an
application that replays it offline, and ``collect`` to run a pipeline on it (docs/plugins.md,
"Testing a browser source on a recorded session"). It runs a whole collect pipeline, so import
it where it is used (a command, a test).

::

    from selfiescope.api.recording import collect, record, replay_settings
"""

from __future__ import annotations

from ..pipelines.collecting.collect import collect
from ..pipelines.collecting.record import record, replay_settings

__all__ = ["collect", "record", "replay_settings"]
