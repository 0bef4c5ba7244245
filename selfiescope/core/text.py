"""Text that leaves the process (logs, the manifest, JSON, the terminal) must be safe to write.

File names on Linux are bytes; Python hands undecodable bytes over as lone surrogates
(``'\\udcff'``), which SQLite, ``print`` and most encoders refuse with a
UnicodeEncodeError. :func:`printable` turns them into visible escapes (``\\xff``) for
everything we show or store, while the real path object stays untouched for file
operations. :func:`redact_url` drops ``user:password@`` from a URL before it is stored or
logged.
"""

from __future__ import annotations

import os
import re
from urllib.parse import urlsplit, urlunsplit

_SURROGATES = re.compile("[\ud800-\udfff]")


def printable(value: object) -> str:
    """``str(value)`` with undecodable file-name bytes shown as ``\\xNN`` escapes."""
    text = os.fspath(value) if isinstance(value, os.PathLike) else str(value)
    if isinstance(text, bytes):
        return text.decode("utf-8", "backslashreplace")
    if not _SURROGATES.search(text):
        return text
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def has_userinfo(url: str) -> bool:
    """Whether ``url`` carries credentials (``scheme://user:pw@host``)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    return bool(parts.scheme and parts.netloc and "@" in parts.netloc)


def redact_url(url: str | None) -> str | None:
    """``url`` without ``user:password@`` (None stays None)."""
    if not url or not has_userinfo(url):
        return url
    parts = urlsplit(url)
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))
