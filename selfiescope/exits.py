"""Exit codes and the errors that map to them: one place for every command.

- 0: done;
- 1: the run failed or finished with errors (an image that failed to store, a job that
  failed, an input that could not be read);
- 2: bad usage, settings or paths (nothing was done; the message names the problem);
- 130: interrupted (what was done is saved; run the same command again to resume).
"""

from __future__ import annotations

import sqlite3
import sys
from collections.abc import Iterable

from .core.errors import EXIT_FAILED, EXIT_USAGE, RUN_ERRNOS, SelfiescopeError, os_error_outcome

EXIT_OK, EXIT_INTERRUPTED = 0, 130
__all__ = ["EXIT_FAILED", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_USAGE", "RUN_ERRNOS", "classify", "code_for", "os_error"]


def code_for(errors: Iterable[str]) -> int:
    """The exit code of a run that ended normally with these error lines."""
    return EXIT_FAILED if any(True for _ in errors) else EXIT_OK


def classify(exc: BaseException) -> tuple[int, str] | None:
    """``(exit code, message)`` for an exception a command may end with, or None for a bug
    (which keeps its traceback)."""
    from .core.text import printable

    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED, "interrupted: what was done is saved; run the same command again to resume"
    if isinstance(exc, SelfiescopeError):  # every error of ours says its own code and line
        # an error is never "done" (0) nor an interrupt: a code outside the rules is a failed run
        code = exc.exit_code if exc.exit_code in (EXIT_FAILED, EXIT_USAGE) else EXIT_FAILED
        return code, exc.user_message()
    if (pydantic := sys.modules.get("pydantic")) is not None and isinstance(exc, pydantic.ValidationError):
        from .core.settings import format_validation_error  # a value from the command line, put into a model

        return EXIT_USAGE, "; ".join(format_validation_error(exc))
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
    return os_error_outcome(exc)


def _database_problem(exc: BaseException) -> tuple[int, str]:
    """A SQLite error (the dataset's manifest): the disk or the file failed the run (1), or the
    file cannot be used at all, such as a read-only or corrupt manifest (2)."""
    text = str(exc)
    failed = any(word in text for word in ("disk is full", "disk I/O error", "out of memory"))
    return (EXIT_FAILED if failed else EXIT_USAGE), f"the dataset's manifest: {text}"
