"""Text that leaves the process (logs, the manifest, JSON, the terminal) must be safe to write.

File names on Linux are bytes; Python hands undecodable bytes over as lone surrogates
(``'\\udcff'``), which SQLite, ``print`` and most encoders refuse with a
UnicodeEncodeError. :func:`printable` turns them into visible escapes (``\\xff``) for
everything we show or store, while the real path object stays untouched for file
operations. :func:`redact_url` drops ``user:password@`` and the values of secret-looking
query parameters (``access_token``, ``sig``, ``password``...) from a URL, and
:func:`redact_text` does it to every URL inside a message: whatever stores or logs a URL or
a message that may hold one (run stats, job states, error lines, the manifest, logs, a model's
saved settings) goes through them.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus, urlsplit, urlunsplit

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


def site_url_problem(url: str) -> str | None:
    """Why ``url`` cannot be a site to browse (None when it can): an http(s) URL with a host."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError as exc:
        return f"{printable(url)!r} is not a URL ({exc})"
    if parts.scheme.lower() not in ("http", "https") or not host:
        return f"{printable(url)!r} is not an http(s) URL with a host (e.g. http://127.0.0.1:8000)"
    return None


REDACTED = "REDACTED"
SECRET_PARAMS = frozenset({
    "token", "access_token", "refresh_token", "id_token", "auth", "authorization", "sig", "signature", "key",
    "api_key", "apikey", "password", "passwd", "pwd", "secret", "client_secret", "session", "sessionid",
    "session_id", "csrftoken", "x-amz-signature", "x-amz-credential", "x-amz-security-token", "x-goog-signature",
})
_SECRET_SUFFIXES = ("_token", "-token", "_secret", "_key", "-key", "password", "signature", "_session")
_URL_IN_TEXT = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\"<>]+")


def is_secret_param(name: str) -> bool:
    """Whether a query parameter's name says its value is a credential."""
    name = unquote_plus(name).strip().lower()
    return name in SECRET_PARAMS or name.endswith(_SECRET_SUFFIXES)


def _redact_params(query: str) -> str:
    """``query`` with each secret parameter's value replaced; every other byte kept as it was."""
    parts = re.split(r"([&;])", query)
    for i in range(0, len(parts), 2):
        name, sep, _ = parts[i].partition("=")
        if sep and is_secret_param(name):
            parts[i] = f"{name}={REDACTED}"
    return "".join(parts)


def redact_url(url: str | None) -> str | None:
    """``url`` without ``user:password@`` and without the values of secret query (or
    fragment) parameters (None stays None). Anything else is left byte for byte."""
    if not url:
        return url
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1] if has_userinfo(url) else parts.netloc
    query = _redact_params(parts.query)
    fragment = _redact_params(parts.fragment) if "=" in parts.fragment else parts.fragment
    if (netloc, query, fragment) == (parts.netloc, parts.query, parts.fragment):
        return url
    return urlunsplit((parts.scheme, netloc, parts.path, query, fragment))


def redact_text(text: str) -> str:
    """``text`` with every URL in it passed through :func:`redact_url`."""
    if "://" not in text:
        return text
    return _URL_IN_TEXT.sub(lambda m: redact_url(m[0]) or "", text)


def redact_values(value: Any) -> Any:
    """A JSON-like value (dicts, lists, strings) with :func:`redact_text` applied to every string."""
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {k: redact_values(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_values(v) for v in value]
    return value


class RedactingFilter(logging.Filter):
    """A handler filter: the record's message, formatted, with its URLs redacted."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a malformed record is the logging module's to report
            return True
        redacted = redact_text(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


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
