"""Credentials from the environment, held in this process only.

A child process inherits the environment: Playwright's driver (node) and Chromium would
both carry ``SELFIESCOPE_INSTAGRAM_PASSWORD`` for their whole life, readable in
``/proc/<pid>/environ``. So a credential is *taken*: read once from ``os.environ``, kept
in memory here, and removed from the environment before any child starts
(:func:`hide_from_children`, which the browser pool calls before launching). Setting the
variable again later (a test, the demo) simply replaces the value held here.
"""

from __future__ import annotations

import os
import threading

PREFIX = "SELFIESCOPE_"
_SECRET_MARKS = ("PASSWORD", "USERNAME", "TOKEN", "SECRET", "SESSIONID")
_held: dict[str, str] = {}
_lock = threading.Lock()


def _is_secret(name: str) -> bool:
    return name.startswith(PREFIX) and any(mark in name for mark in _SECRET_MARKS)


def hide_from_children() -> None:
    """Move every credential variable from the environment into this process's memory."""
    with _lock:
        for name in [n for n in os.environ if _is_secret(n)]:
            _held[name] = os.environ.pop(name)


def credential(name: str) -> str | None:
    """The credential ``name`` (e.g. ``SELFIESCOPE_INSTAGRAM_PASSWORD``), from the environment
    if it is set there now (then taken out of it), else as taken earlier."""
    with _lock:
        if name in os.environ:
            _held[name] = os.environ.pop(name)
        return _held.get(name) or None


def child_environment() -> dict[str, str]:
    """The environment for a child process: ours without any credential."""
    return {k: v for k, v in os.environ.items() if not _is_secret(k)}


def clear() -> None:
    """Drop every credential held (tests start each case from the environment alone)."""
    with _lock:
        _held.clear()


def write_private_json(path: "os.PathLike[str] | str", data: object) -> None:
    """Write ``data`` as JSON readable by the owner only (0600, also over an older temp file of
    another mode), atomically: a temp file in the same folder, then a rename."""
    import json
    from pathlib import Path

    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)
