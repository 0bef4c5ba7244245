"""Without a Chromium, browser tests are skipped one by one with one reason, and the run's last
lines say how many and how to get one (nothing vanishes silently)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from conftest import NO_CHROMIUM, REPO


def test_without_chromium_the_summary_counts_the_skipped_browser_tests(tmp_path: Path) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    env = {**os.environ, "PATH": str(empty), "PLAYWRIGHT_BROWSERS_PATH": str(tmp_path / "no-browsers"),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         "tests/test_gallery.py", "tests/test_browser_pool.py"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )
    out = result.stdout
    assert result.returncode == 0, out[-3000:] + result.stderr[-3000:]
    counted = re.search(r"^(\d+) browser tests skipped: (.*)$", out, re.M)
    assert counted, out[-3000:]
    assert counted.group(2) == NO_CHROMIUM
    totals = re.search(r"(\d+) passed, (\d+) skipped", out)
    assert totals, out[-3000:]
    # the gallery's tests all need the browser; the pool's module also has tests that do not, and they ran
    assert int(totals.group(1)) > 0 and int(counted.group(1)) == int(totals.group(2)) > 0
    assert counted.group(0) in out.rstrip().splitlines()[-3:]  # among the last lines, where a reader looks
