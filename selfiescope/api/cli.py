"""For the commands a plugin adds through ``selfiescope_commands``: the options, settings
loading, output consoles, exit codes and run progress the built-in commands use, so a
plugin's command looks and ends like theirs (docs/plugins.md, "Adding commands"). It loads
typer and rich: import it inside the hook or in the commands' own module.

::

    from selfiescope.api.cli import JsonOpt, SettingsOpt, emit_json, fail, load
"""

from __future__ import annotations

from ..cli.collect import ProgressObserver
from ..cli.collect import _progress as progress_bar
from ..cli.common import JsonOpt, SettingsOpt, checked_base_url, console, emit_json, fail, load, load_app, out, tagged
from ..core.settings import format_validation_error
from ..exits import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE

__all__ = [
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "JsonOpt",
    "ProgressObserver",
    "SettingsOpt",
    "checked_base_url",
    "console",
    "emit_json",
    "fail",
    "format_validation_error",
    "load",
    "load_app",
    "out",
    "progress_bar",
    "tagged",
]
