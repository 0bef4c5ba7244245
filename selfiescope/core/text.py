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
from pathlib import Path
from typing import Any
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


def printable_tree(value: Any) -> Any:
    """``value`` (dicts, lists, strings, paths, anything) with every string made :func:`printable`:
    what JSON output and logs may carry (keys included)."""
    if isinstance(value, dict):
        return {printable_tree(k) if isinstance(k, str) else k: printable_tree(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [printable_tree(v) for v in value]
    if isinstance(value, str | os.PathLike):
        return printable(value)
    return value


def path_text_problem(value: object) -> str | None:
    """Why ``value`` cannot name a file at all (a NUL character, an unknown ``~user``), or None.

    The operating system refuses a NUL in a path (Python raises ValueError deep inside);
    ``~user`` of a user that does not exist makes :meth:`pathlib.Path.expanduser` raise
    RuntimeError. Both are caught where a path enters, with the path in the message.
    """
    text = printable(value)
    if "\x00" in text:
        shown = text.replace("\x00", "\\0")
        return f"{shown}: a path cannot contain a NUL character"
    if text.startswith("~"):
        try:
            Path(text).expanduser()
        except RuntimeError:
            user = text[1:].split("/", 1)[0]
            if not user:
                return f"{text}: ~ cannot be expanded (no home folder: HOME is not set)"
            return f"{text}: no user named {user!r} on this machine, so ~{user} cannot be expanded"
    return None


def expand_user(value: str | os.PathLike[str]) -> Path:
    """``Path(value).expanduser()``, or ValueError naming the path when it cannot name a file."""
    if problem := path_text_problem(value):
        raise ValueError(problem)
    return Path(value).expanduser()
