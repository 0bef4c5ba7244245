"""The command line: parses, calls a pipeline, prints. No logic of its own.

Exit codes: 0 done; 1 the run failed or finished with errors; 2 bad usage or settings;
130 interrupted (rerun the same command to resume).

Modules: :mod:`.common` (the guard, options, settings loading), :mod:`.collect` (run,
import, clean, scrape, demo), :mod:`.record` (record), :mod:`.model` (train, predict),
:mod:`.info` (pipelines, plugins, settings, stats, mock-site), :mod:`.maintenance` (fsck),
:mod:`.privacy` (forget, card, export), :mod:`.review` (review) and :mod:`.build`, which builds :data:`app` from them plus the loaded plugins'
``selfiescope_commands`` (on first use of ``app``).
"""

from __future__ import annotations

from typing import Any

from .build import build_app, main, make_app

__all__ = ["app", "build_app", "commands_info", "main", "make_app"]


def __getattr__(name: str) -> Any:  # PEP 562: the application is built on first use
    if name in ("app", "commands_info"):
        from . import build

        return getattr(build, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
