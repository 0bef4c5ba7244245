"""Where settings come from before they are validated: the file (a small regular UTF-8 file,
read without waiting on a FIFO or a device), the environment (``SELFIESCOPE_A__B=value``), and
the error both raise. :mod:`.settings` validates what they give."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

from .errors import SettingsError  # noqa: F401 - raised here, and imported from here by callers
from .regular_files import NotReadable, read_regular
from .text import printable

ENV_PREFIX = "SELFIESCOPE_"
# Environment variables with our prefix that are not setting overrides. Only names with
# ``__`` are read as overrides at all, so a plugin's own variables (its credentials, e.g. the
# ones a source lists in ``credential_env``) need no entry here: core knows no plugin's names.
RESERVED_ENV = {
    "SELFIESCOPE_TRACE_PLUGINS",
    "SELFIESCOPE_SETTINGS",
    "SELFIESCOPE_NO_ENTRYPOINTS",
}
# A settings file is a small text file: anything larger (or endless, like /dev/zero) is refused unread.
MAX_SETTINGS_BYTES = 1 << 20


def _parse_env_value(raw: str) -> Any:
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def env_overrides(environ: dict[str, str] | None = None) -> dict[str, Any]:
    """``SELFIESCOPE_BROWSER__MAX_CONTEXTS=2`` -> ``{"browser": {"max_contexts": 2}}``."""
    environ = os.environ if environ is None else environ
    tree: dict[str, Any] = {}
    problems = []
    for key, raw in sorted(environ.items()):
        if not key.startswith(ENV_PREFIX) or key in RESERVED_ENV or "__" not in key:
            continue
        path = key[len(ENV_PREFIX):].lower().split("__")
        node = tree
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                break
        if not isinstance(node, dict) or not all(path):
            problems.append(f"{key}: names no setting (it overlaps another variable, or has an empty part)")
            continue
        node[path[-1]] = _parse_env_value(raw)
    if problems:
        raise SettingsError(problems, "the environment")
    return tree


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def nul_problems(data: Any, here: str = "") -> list[str]:
    """Keys and strings holding a NUL character: no path, URL or name can carry one."""
    if isinstance(data, dict):
        return [p for k, v in data.items()
                for p in ([f"{here}.{printable(k)}".lstrip(".") + ": a key cannot contain a NUL character"]
                          if "\x00" in str(k) else nul_problems(v, f"{here}.{k}".lstrip(".")))]
    if isinstance(data, list):
        return [p for i, v in enumerate(data) for p in nul_problems(v, f"{here}[{i}]")]
    if isinstance(data, str) and "\x00" in data:
        return [f"{here}: contains a NUL character, which no path, URL or name can hold"]
    return []


def read_settings_text(path: Path) -> str:
    """The text of the settings file at ``path``: a regular file of at most MAX_SETTINGS_BYTES
    (a FIFO or ``/dev/zero`` is refused before a byte is read). Raises :class:`SettingsError`."""
    try:
        data = read_regular(path, MAX_SETTINGS_BYTES)
    except NotReadable as exc:
        raise SettingsError([exc.strerror], printable(path)) from None
    except OSError as exc:
        raise SettingsError([f"cannot be read: {exc.strerror or exc}"], printable(path)) from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise SettingsError(["not a UTF-8 text file"], printable(path)) from None
