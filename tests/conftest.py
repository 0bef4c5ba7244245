from __future__ import annotations

import os
from pathlib import Path

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


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch) -> None:
    from selfiescope.core import secrets

    for key in list(os.environ):
        if key.startswith("SELFIESCOPE_"):
            monkeypatch.delenv(key, raising=False)
    secrets.clear()
