"""Exit codes and the errors that map to them: one place for every command.

- 0: done;
- 1: the run failed or finished with errors (an image that failed to store, a job that
  failed, an input that could not be read);
- 2: bad usage, settings or paths (nothing was done; the message names the problem);
- 130: interrupted (what was done is saved; run the same command again to resume).
"""

from __future__ import annotations

import errno
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
    from .core.lock import RootBusy
    from .core.settings import SettingsError
    from .pipelines.model_dir import ModelDirError

    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED, "interrupted: what was done is saved; run the same command again to resume"
    if isinstance(exc, SettingsError):
        return EXIT_USAGE, exc.render()
    if isinstance(exc, (RootBusy, ModelDirError)):
        return EXIT_USAGE, str(exc)
    if isinstance(exc, OSError):
        return os_error(exc)
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
    return code, f"{path}: {exc.strerror or exc}" if path else f"{exc.strerror or exc}"
