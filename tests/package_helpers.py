"""Installing a third-party example package (tests/example_*) the way a user would, and running
the CLI with it: a real build, a real entry point, a real subprocess."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def install_example(factory: pytest.TempPathFactory, folder: Path) -> tuple[dict[str, str], Path]:
    """pip-install ``folder`` (a copy: the build leaves files beside the sources) into a target
    directory; returns the environment that sees it and this checkout's selfiescope (whatever the
    venv's install points at), and where the copied sources are."""
    target = factory.mktemp("site")
    source = factory.mktemp("src") / folder.name
    shutil.copytree(folder, source)
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
         "--target", str(target), str(source)],
        check=True, capture_output=True,
    )
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(target), str(REPO), env.get("PYTHONPATH", "")])
    return env, source


def cli(env: dict[str, str], *args: str, cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "selfiescope", *args], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)
