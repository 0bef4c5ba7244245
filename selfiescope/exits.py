"""Exit codes and the errors that map to them: one place for every command.

- 0: done;
- 1: the run failed or finished with errors (an image that failed to store, a job that
  failed, an input that could not be read);
- 2: bad usage, settings or paths (nothing was done; the message names the problem);
- 130: interrupted (what was done is saved; run the same command again to resume).
"""

from __future__ import annotations

import errno
import sqlite3
import sys
from collections.abc import Iterable

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

# OS errors that say the machine failed the run (not that the user named a wrong path).
RUN_ERRNOS = {errno.ENOSPC, errno.EIO, errno.EDQUOT, errno.ENOMEM}


def code_for(errors: Iterable[str]) -> int:
    """The exit code of a run that ended normally with these error lines."""
    return EXIT_FAILED if any(True for _ in errors) else EXIT_OK


def classify(exc: BaseException) -> tuple[int, str] | None:
    """``(exit code, message)`` for an exception a command may end with, or None for a bug
    (which keeps its traceback)."""
    from .core.settings import SettingsError
    from .core.text import printable

    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED, "interrupted: what was done is saved; run the same command again to resume"
    if isinstance(exc, SettingsError):
        return EXIT_USAGE, exc.render()
    if (pydantic := sys.modules.get("pydantic")) is not None and isinstance(exc, pydantic.ValidationError):
        from .core.settings import format_validation_error  # a value from the command line, put into a model

        return EXIT_USAGE, "; ".join(format_validation_error(exc))
    for kinds, code in _known_errors():
        if isinstance(exc, kinds):
            return code, printable(exc)
    if isinstance(exc, OSError):
        return os_error(exc)
    if (browser := sys.modules.get("playwright.async_api")) is not None and isinstance(exc, browser.Error):
        first = (str(exc).strip().splitlines() or ["(no message)"])[0]
        return EXIT_FAILED, f"the browser failed: {printable(first)} (-vv shows its log)"
    if isinstance(exc, sqlite3.DatabaseError):
        return _database_problem(exc)
    if isinstance(exc, MemoryError):
        return EXIT_FAILED, "out of memory: the run stopped (what was done is saved)"
    # A path the operating system cannot take, met deep inside a library (the entry checks
    # catch the ones the user typed): the message names the problem, never a traceback.
    if isinstance(exc, ValueError) and "embedded null byte" in str(exc):
        return EXIT_USAGE, "a path contains a NUL character, which no file name can hold"
    if isinstance(exc, RuntimeError) and "home directory" in str(exc):
        return EXIT_USAGE, "a path starts with ~ but that home folder is unknown on this machine"
    if isinstance(exc, RuntimeError) and str(exc).startswith("Symlink loop"):  # pathlib's resolve()
        return EXIT_USAGE, f"{printable(exc)}: a symbolic link that points back at itself names no file"
    return None


def os_error(exc: OSError) -> tuple[int, str]:
    """``(exit code, one line)`` for a filesystem error: a full disk is the run's failure (1),
    a read-only or forbidden path the user's to fix (2)."""
    from .core.text import printable

    path = printable(exc.filename) if exc.filename else ""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return EXIT_FAILED, f"disk full: {path or 'a file of this run'}"
    if exc.errno == errno.EROFS:
        return EXIT_USAGE, f"{path or 'a path of this run'} is on a read-only filesystem: nothing could be written there"
    code = EXIT_FAILED if exc.errno in RUN_ERRNOS else EXIT_USAGE
    detail = printable(exc.strerror or exc)
    return code, f"{path}: {detail}" if path else detail


# The errors that carry a message for the user, by module, and their exit codes.
_USER_ERRORS = {
    EXIT_USAGE: [("core.lock", "RootBusy"), ("pipelines.model_dir", "ModelDirError"), ("core.har", "HarError"),
                 ("pipelines.export", "ExportError"), ("pipelines.forget", "ForgetError"),
                 ("core.privacy", "PrivacyError"), ("pipelines.predict", "ModelError"),
                 ("pipelines.fsck", "FsckError"), ("core.manifest_readonly", "ManifestUnreadable"),
                 ("core.plugin_state", "StateError")],
    EXIT_FAILED: [("pipelines.dataset", "DatasetError"), ("core.components", "StorageError"),
                  ("core.browser_lookup", "BrowserNotFound"), ("core.browser", "BrowserCrashed"),
                  ("core.browser", "BrowserStartTimeout"),
                  ("core.web", "Deadline")],
}


def _known_errors() -> list[tuple[tuple[type[BaseException], ...], int]]:
    """The user-facing error classes whose modules are loaded (an exception of a module that
    was never imported cannot have been raised, and importing them all would take seconds)."""
    found = []
    for code, names in _USER_ERRORS.items():
        kinds = tuple(getattr(sys.modules[f"selfiescope.{module}"], name) for module, name in names
                      if f"selfiescope.{module}" in sys.modules)
        found.append((kinds, code))
    return found


def _database_problem(exc: BaseException) -> tuple[int, str]:
    """A SQLite error (the dataset's manifest): the disk or the file failed the run (1), or the
    file cannot be used at all, such as a read-only or corrupt manifest (2)."""
    text = str(exc)
    failed = any(word in text for word in ("disk is full", "disk I/O error", "out of memory"))
    return (EXIT_FAILED if failed else EXIT_USAGE), f"the dataset's manifest: {text}"
