"""Image files on a local disk: which names look like images, and reading one safely.

Shared by the folder source (import) and ``predict`` (paths given on the command line), so
that what import would take, prediction takes, without either naming the other.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

# Formats the decode step can read (HEIC needs a plugin Pillow does not ship: not listed).
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp", ".tif", ".tiff", ".avif"})
MAX_IMAGE_BYTES = 50 * 1024 * 1024  # a larger file is refused unread


def read_regular_file(path: Path, max_bytes: int) -> bytes:
    """The bytes of a regular file of at most ``max_bytes``; ValueError for anything else.

    Opened without blocking and checked with fstat: a FIFO would wait forever for a
    writer, and ``/dev/zero`` would be read until memory runs out.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ValueError("not a regular file")
        if st.st_size > max_bytes:
            raise ValueError(f"file of {st.st_size:,} bytes is over the {max_bytes:,}-byte limit")
        data = fh.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise ValueError(f"file grew over the {max_bytes:,}-byte limit while being read")
    return data
