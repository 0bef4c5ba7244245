"""What the review app checks before it serves an image's bytes: that they are the bytes the
manifest recorded for that image, read from no link.

The store step may have stripped metadata from its copy, so the stored bytes are checked
against the digest it noted for them (``stored_sha256``) and, where it noted none, the content
hash of the original. A stripped copy from before that note was kept cannot be checked and is
not served.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

from ..pipelines.dataset_care.fsck import expected_hash


def stored_digest(row: Any) -> str | None:
    """The sha256 the stored copy of the manifest row's image must have, or None when unknown
    (the rule ``fsck`` checks storage by)."""
    return expected_hash(row)


def matches(data: bytes, digest: str | None) -> bool:
    return digest is not None and hashlib.sha256(data).hexdigest() == digest


def local_link(storage: Any, location: str) -> bool:
    """Whether a backend on the local disk (files, or fsspec on ``file://``) has a symbolic link
    at ``location``: a remote store has none this process could follow."""
    root = getattr(storage, "root", None)
    if root is not None and getattr(storage, "fs", None) is None:  # the files backend: a folder
        return os.path.islink(os.path.join(root, location))
    fs = getattr(storage, "fs", None)
    full = getattr(storage, "_full", None)
    if fs is None or full is None:
        return False
    protocols = fs.protocol if isinstance(fs.protocol, tuple | list) else (fs.protocol,)
    if not {"file", "local"} & set(protocols):
        return False
    try:
        return os.path.islink(fs._strip_protocol(full(location)))
    except (OSError, ValueError):
        return True
