"""Find a Chromium for Playwright: a configured path, a system Chromium/Chrome, or
Playwright's own download. ``python -m selfiescope.core.browser_lookup`` prints the
path found (exit 0) or how to get one (exit 1)."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from .errors import BrowserError

SYSTEM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
HOW_TO_GET_ONE = (
    "No Chromium found. Install one of: Debian/Ubuntu `sudo apt-get install chromium`; "
    "or Playwright's build `python -m playwright install chromium` (needs the internet); "
    "or set browser.executable in settings.toml to a Chromium/Chrome binary."
)


class BrowserNotFound(BrowserError, RuntimeError):
    pass


def playwright_chromium() -> str | None:
    """The path of Playwright's own downloaded Chromium, if it is installed."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:  # pragma: no cover - playwright is a dependency
        return None
    try:
        with sync_playwright() as p:
            path = p.chromium.executable_path
    except Exception:
        return None
    return path if path and Path(path).exists() else None


def find_chromium(executable: str = "auto") -> str:
    if executable != "auto":
        path = Path(executable).expanduser()
        if path.is_file() and os.access(path, os.X_OK):
            return str(path)
        found = shutil.which(executable)
        if found:
            return found
        raise BrowserNotFound(f"browser.executable: {executable!r} is not an executable file. {HOW_TO_GET_ONE}")
    for name in SYSTEM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    own = playwright_chromium()
    if own:
        return own
    raise BrowserNotFound(HOW_TO_GET_ONE)


if __name__ == "__main__":  # pragma: no cover
    try:
        print(find_chromium(sys.argv[1] if len(sys.argv) > 1 else "auto"))
    except BrowserNotFound as exc:
        print(exc, file=sys.stderr)
        sys.exit(1)
