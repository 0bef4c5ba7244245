"""Every error selfiescope raises on purpose, by family, with its exit code and its message.

A command ends through :func:`selfiescope.exits.classify`, which needs to know nothing of the
classes below: a :class:`SelfiescopeError` carries its own ``exit_code`` (0 done, 1 the run
failed, 2 bad usage, settings or paths) and :meth:`~SelfiescopeError.user_message` (one line,
already phrased for the user: never a library's raw text, never a traceback).

The project's exceptions stay in the modules that raise them and subclass one family here;
a class that callers also catch as a built-in (``OSError``, ``ValueError``, ``TimeoutError``)
keeps that base as well, so an ``except`` written against it goes on working.

:class:`selfiescope.api.Reject` is not among them on purpose: it is a step's decision about an
image, not something that went wrong.
"""

from __future__ import annotations

import errno
from typing import Any, ClassVar

from .text import printable

EXIT_FAILED, EXIT_USAGE = 1, 2

# OS errors that say the machine failed the run (not that the user named a wrong path).
RUN_ERRNOS = frozenset({errno.ENOSPC, errno.EIO, errno.EDQUOT, errno.ENOMEM})


def one_line(text: object) -> str:
    """``text`` as one printable line: undecodable bytes escaped, line breaks and runs of
    blanks folded into single spaces."""
    return " ".join(printable(text).split())


class SelfiescopeError(Exception):
    """The base of every error selfiescope raises on purpose.

    ``exit_code``: what a command that ends with it exits with (1 unless a family says
    otherwise). :meth:`user_message`: what it prints, one line."""

    exit_code: ClassVar[int] = EXIT_FAILED

    def user_message(self) -> str:
        return one_line(self) or type(self).__name__

    def __reduce__(self) -> tuple[Any, ...]:
        # Rebuilt from its message and attributes, whatever its __init__ takes: an error raised
        # on a Dask worker or in a child process arrives whole (the default calls cls(*args)).
        return _rebuilt, (type(self), self.args, self.__dict__)


def _rebuilt(cls: type[SelfiescopeError], args: tuple[Any, ...], state: dict[str, Any]) -> SelfiescopeError:
    exc = cls.__new__(cls, *args)
    exc.args = args
    exc.__dict__.update(state)
    return exc


class UsageError(SelfiescopeError):
    """The request cannot be carried out as asked (a bad option, a path that cannot be used,
    a folder that is not the expected one): nothing was done, the user has something to fix."""

    exit_code: ClassVar[int] = EXIT_USAGE


class SettingsError(UsageError):
    """A settings problem, already phrased for the user (key path: problem)."""

    def __init__(self, problems: list[str], source: str = "settings") -> None:
        self.problems = problems
        self.source = source
        super().__init__(f"{source}: " + "; ".join(problems))

    def render(self) -> str:
        lines = [f"Invalid settings in {self.source}:"]
        lines += [f"  - {p}" for p in self.problems]
        return "\n".join(lines)

    def user_message(self) -> str:
        # the one message of several lines: a list of problems, each naming its key
        return printable(self.render())


class RunFailed(SelfiescopeError):
    """The run could not be finished (or finished with errors): what was done is kept."""


class StorageError(RunFailed):
    """Writing to storage failed (disk full, no permission, a network error): a failure of
    the run, never a rejection of the image. The engine reads ``code``."""

    code = "store_failed"


class FilesystemError(SelfiescopeError, OSError):
    """A file operation the operating system refused; built like an :class:`OSError`
    (``errno, strerror, filename``). A full disk fails the run (1); a read-only or forbidden
    path is the user's to fix (2)."""

    @property  # type: ignore[override]
    def exit_code(self) -> int:  # noqa: D102 - the errno decides
        return os_error_outcome(self)[0]

    def user_message(self) -> str:
        return os_error_outcome(self)[1]


class BrowserError(RunFailed):
    """Chromium cannot be found, started or kept running."""


class SiteError(RunFailed):
    """The site refused or failed the run: rate-limited, a login refused, a challenge, a page
    or a download that did not come, a host out of reach."""


class DeadlineExceeded(RunFailed):
    """Something took longer than its limit. ``what`` says what was awaited, ``limit_s`` the
    limit and ``setting`` (when one sets it) the key that raises it."""

    def __init__(self, what: str, limit_s: float, setting: str | None = None, *, message: str | None = None) -> None:
        self.what, self.limit_s, self.setting = what, limit_s, setting
        super().__init__(message or self.describe())

    def describe(self) -> str:
        where = f" ({self.setting})" if self.setting else ""
        return f"{self.what} did not finish within {self.limit_s:g} s{where}"


def os_error_outcome(exc: OSError) -> tuple[int, str]:
    """``(exit code, one line)`` for a filesystem error: a full disk is the run's failure (1),
    a read-only or forbidden path the user's to fix (2)."""
    path = printable(exc.filename) if exc.filename else ""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return EXIT_FAILED, f"disk full: {path or 'a file of this run'}"
    if exc.errno == errno.EROFS:
        return EXIT_USAGE, f"{path or 'a path of this run'} is on a read-only filesystem: nothing could be written there"
    code = EXIT_FAILED if exc.errno in RUN_ERRNOS else EXIT_USAGE
    detail = printable(exc.strerror or exc)
    return code, f"{path}: {detail}" if path else detail
