"""Reading a file the user named: only a regular file, and only up to a limit.

A FIFO blocks an ``open`` until a writer comes, ``/dev/zero`` never ends and ``/dev/full``
reads as endless zeros: read as a settings file or a recording, each hangs the command or
fills its memory. The file is opened without blocking, checked with ``fstat`` (what is open
is what is checked: no race with a rename) and read with a bound.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from .errors import FilesystemError


class NotReadable(FilesystemError):
    """A path that is not a regular file within the limit; ``strerror`` says which."""


def read_regular(path: str | os.PathLike[str], limit: int) -> bytes:
    """The bytes of the regular file at ``path``, at most ``limit`` of them.

    Raises :class:`NotReadable` (an OSError naming the path) for a folder, anything that is
    not a regular file, or a file larger than ``limit``; the open's own OSError otherwise.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:  # judged on the open descriptor (no race with a swap), before fdopen: it refuses a folder itself
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise NotReadable(errno.EISDIR, "is a folder, not a file", os.fspath(path))
        if not stat.S_ISREG(mode):
            raise NotReadable(errno.EINVAL, "is not a regular file (a pipe, device or socket cannot be read as one)",
                              os.fspath(path))
    except BaseException:
        os.close(fd)
        raise
    with os.fdopen(fd, "rb") as fh:
        data = fh.read(limit + 1)
    if len(data) > limit:
        raise NotReadable(errno.EFBIG, f"is larger than {_size(limit)}, too large for this file", os.fspath(path))
    return data


def regular_file_problem(path: Path) -> str | None:
    """Why ``path`` cannot be read as a regular file (without opening it), or None."""
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        return exc.strerror or str(exc)
    if stat.S_ISDIR(mode):
        return "is a folder, not a file"
    if not stat.S_ISREG(mode):
        return "is not a regular file (a pipe, device or socket cannot be read as one)"
    return None


def _size(limit: int) -> str:
    return f"{limit // (1 << 20)} MiB" if limit >= 1 << 20 else f"{limit} bytes"
