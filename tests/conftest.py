from __future__ import annotations

import os
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
FACES = REPO.parent / "shared" / "faces"

# The example plugin package has its own tests, run against its installed copy by test_entrypoints.
collect_ignore = ["example_plugin"]


@pytest.fixture
def faces_dir() -> Path:
    if not FACES.is_dir():
        pytest.skip(f"real face photos not available: {FACES} (../shared/faces) is absent")
    return FACES


@pytest.fixture
def silent_site() -> Iterator[str]:
    """The base URL of a server on 127.0.0.1 that takes every connection and never answers a byte
    (a hung site): what a deadline, and nothing else, has to end."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    server.settimeout(0.2)  # so the accepting thread sees the stop in time
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(5)
        for conn in held:
            conn.close()
        server.close()


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Callable[[str, str], Path]]:
    """``small_disk(size, name)`` mounts a tmpfs of ``size`` (``"2M"``) at ``tmp_path / name``: a disk
    that fills, or that a remount makes read-only. Skips where mounting needs the root it lacks;
    every disk it mounted is unmounted at the end, whatever the test left open on it."""
    mounted: list[Path] = []

    def mount(size: str = "2M", name: str = "small") -> Path:
        where = tmp_path / name
        where.mkdir()
        made = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True)
        if made.returncode:
            pytest.skip(f"cannot mount a tmpfs here (needs root): {made.stderr.decode(errors='replace').strip()}")
        mounted.append(where)
        return where

    yield mount
    for where in mounted:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


def fill_up(path: Path) -> None:
    """Write zeros to ``path`` until its file system is full (unbuffered: every block is asked for)."""
    with path.open("wb", buffering=0) as fh:
        try:
            while True:
                fh.write(b"\0" * 4096)
        except OSError:
            pass


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch) -> None:
    from selfiescope.core import secrets

    for key in list(os.environ):
        if key.startswith("SELFIESCOPE_"):
            monkeypatch.delenv(key, raising=False)
    secrets.clear()


# --- tests that drive a real Chromium (marked ``browser``) -------------------------------------
NO_CHROMIUM = "no Chromium: install with scripts/ensure-chromium.sh or `playwright install chromium`"


def _chromium_found() -> bool:
    from selfiescope.core.browser_lookup import BrowserNotFound, find_chromium

    try:
        find_chromium("auto")
    except BrowserNotFound:
        return False
    return True


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Without a Chromium every browser test is skipped, each with the same reason (counted in
    the summary), instead of whole modules vanishing from the run."""
    browser_tests = [item for item in items if item.get_closest_marker("browser")]
    if browser_tests and not _chromium_found():
        for item in browser_tests:
            item.add_marker(pytest.mark.skip(reason=NO_CHROMIUM))


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Say in the last lines how many browser tests did not run, and why."""
    skipped = sum(1 for report in terminalreporter.stats.get("skipped", []) if NO_CHROMIUM in str(report.longrepr))
    if skipped:
        terminalreporter.write_line(f"{skipped} browser tests skipped: {NO_CHROMIUM}", yellow=True, bold=True)
