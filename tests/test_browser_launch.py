"""Starting Chromium: its own deadline (``browser.launch_timeout_s``), never mistaken for a site's
timeout, and no stray asyncio error when the driver goes away (Ctrl-C reaches it too)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from selfiescope.core.browser import BrowserPool, BrowserStartTimeout
from selfiescope.core.browser_lookup import find_chromium
from selfiescope.core.settings import BrowserSettings


pytestmark = pytest.mark.browser
ROOT = Path(__file__).resolve().parents[1]


def test_a_slow_start_is_not_a_timeout_error() -> None:
    assert not issubclass(BrowserStartTimeout, TimeoutError)  # a site's timeouts are TimeoutErrors
    assert BrowserSettings().launch_timeout_s >= 60


async def test_a_short_timeout_s_does_not_limit_chromiums_start() -> None:
    """timeout_s bounds calls to the site; Chromium's start, on a busy machine, may take longer."""
    pool = BrowserPool(BrowserSettings(timeout_s=0.05, launch_timeout_s=120))
    try:
        browser = await pool.start()
        assert browser.is_connected()
    finally:  # closing is bounded by timeout_s: give it a real one
        pool.settings = pool.settings.model_copy(update={"timeout_s": 30.0})
        await pool.close()


def slow_chromium(folder: Path, delay_s: float = 30) -> Path:
    """A "Chromium" that takes ``delay_s`` to start (a machine too busy to start the real one soon)."""
    path = folder / "slow-chromium"
    path.write_text(f"#!/bin/sh\nsleep {delay_s:g}\nexec {find_chromium('auto')} \"$@\"\n")
    path.chmod(0o755)
    return path


async def test_a_start_past_launch_timeout_s_says_so(tmp_path: Path) -> None:
    pool = BrowserPool(BrowserSettings(timeout_s=30, launch_timeout_s=2, executable=str(slow_chromium(tmp_path))))
    try:
        with pytest.raises(BrowserStartTimeout, match=r"the browser \(Chromium\) did not start within 2 s \(browser.launch_timeout_s\)"):
            await pool.start()
    finally:
        await pool.close()


def test_no_unretrieved_future_when_the_driver_dies(tmp_path: Path) -> None:
    script = tmp_path / "driver_dies.py"
    script.write_text(textwrap.dedent("""
        import asyncio, gc, signal
        import psutil
        from selfiescope.core.browser import BrowserPool
        from selfiescope.core.settings import BrowserSettings

        async def main():
            pool = BrowserPool(BrowserSettings(timeout_s=10))
            await pool.start()
            for child in psutil.Process().children():  # the driver (node); Chromium is its child
                if "chrom" not in child.name().lower():
                    child.send_signal(signal.SIGKILL)
            await asyncio.sleep(1)
            await pool.close()

        asyncio.run(main())
        gc.collect()
        print("closed")
    """))
    result = subprocess.run([sys.executable, str(script)], cwd=ROOT, capture_output=True, text=True, timeout=300,
                            env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})
    assert "closed" in result.stdout, result.stderr
    assert "never retrieved" not in result.stderr, result.stderr
