"""The doctor's overall bounds: a browser start that hangs is reported as the browser not
starting within launch_timeout_s, and the checks' budget counts only once the browser is up
(a slow start on a busy machine is never "the checks did not finish")."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from selfiescope.core.settings import settings_from_dict
from selfiescope.plugins.instagram import doctor as doctor_module


def settings(tmp_path: Path):  # noqa: ANN201
    return settings_from_dict({"browser": {"session_file": str(tmp_path / "s.json"), "timeout_s": 0.2,
                                           "launch_timeout_s": 0.3}})


async def test_a_start_that_hangs_is_the_browser_not_starting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async def never_starts(self: doctor_module._Doctor) -> None:
        await asyncio.sleep(3600)

    monkeypatch.setattr(doctor_module._Doctor, "run", never_starts)
    report = await doctor_module.run_doctor(settings(tmp_path), "http://127.0.0.1:9", "alpha")
    [check] = report.checks
    assert check.name == "browser" and check.status == "fail"
    assert "did not start within 0.3 s (browser.launch_timeout_s)" in check.detail
    assert "did not finish" not in check.detail


async def test_the_checks_budget_counts_from_the_browser_being_up(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    async def slow_start_then_hang(self: doctor_module._Doctor) -> None:
        await asyncio.sleep(6)  # a start far slower than the checks' whole budget (4 s), within its own limit
        self.browser_started.set()
        self.add("login_form", "pass", "found")
        await asyncio.sleep(3600)

    monkeypatch.setattr(doctor_module._Doctor, "run", slow_start_then_hang)
    s = settings(tmp_path)
    s.browser.launch_timeout_s = 30
    report = await doctor_module.run_doctor(s, "http://127.0.0.1:9", "alpha")
    assert [(c.name, c.status) for c in report.checks] == [("login_form", "pass"), ("doctor", "fail")]
    assert "did not finish within 4 s (20 x browser.timeout_s) once the browser had started" in report.checks[1].detail
