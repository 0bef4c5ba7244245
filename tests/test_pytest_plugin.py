"""The pytest plugin for plugin authors (fixtures mock_instagram, selfiescope_run) and `selfiescope mock-site`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request

import numpy as np
import pytest
from pydantic import ValidationError

from selfiescope.core.components import Options, Step
from selfiescope.core.events import Decision, ImageEvent, Reject
from selfiescope.core.hookspecs import hookimpl
from selfiescope.testing import synth
from selfiescope.testing.site import TagSpec

pytest_plugins = ["pytester"]


class DarkGateOptions(Options):
    min_mean: float = 40.0


class DarkGate(Step):
    """A plugin author's step under test: drops images darker than ``min_mean``."""

    name = "darkgate"
    Options = DarkGateOptions

    def process(self, event: ImageEvent) -> None:
        mean = float(event.image.mean())
        if mean < self.options.min_mean:
            raise Reject("too_dark", f"mean {mean:.1f} < {self.options.min_mean}")
        event.notes["mean"] = mean


class DarkGatePlugin:
    def __init__(self) -> None:
        self.rejected: list[str] = []

    @hookimpl
    def selfiescope_steps(self):
        return [DarkGate]

    @hookimpl
    def selfiescope_image_rejected(self, event, run):
        self.rejected.append(event.reject_code)


def images() -> list[object]:
    rng = np.random.default_rng(1)
    bright = synth.render_portrait(rng, 160)
    dark = (bright // 8).astype(np.uint8)
    return [bright, synth.encode_jpeg(dark), b"not an image at all"]


def test_mock_instagram_fixture_serves(mock_instagram):
    with urllib.request.urlopen(mock_instagram.base_url + "/") as resp:
        assert resp.status == 200
    assert mock_instagram.requests == [("GET", "/", 200)]


@pytest.mark.mock_instagram(page_size=2, tags={"x": TagSpec(3, "selfie", noface=0, small_face=0)})
def test_mock_instagram_takes_options_from_a_marker(mock_instagram):
    assert mock_instagram.page_size == 2 and [p.label for p in mock_instagram.posts("x")] == ["selfie"] * 3


@pytest.mark.parametrize("mock_instagram", [{"consent_language": "de"}], indirect=True)
def test_mock_instagram_takes_indirect_parameters(mock_instagram):
    with urllib.request.urlopen(mock_instagram.base_url + "/") as resp:
        assert "Alle Cookies erlauben" in resp.read().decode()


def test_mock_instagram_is_stopped_after_the_test(pytester):
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    pytester.makepyfile(
        """
        def test_inner(mock_instagram, tmp_path_factory):
            open("url.txt", "w").write(mock_instagram.base_url)
        """
    )
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=1)  # fixture from the entry point
    url = (pytester.path / "url.txt").read_text()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(url + "/", timeout=5)


def test_selfiescope_run_runs_the_chain_and_records_decisions(selfiescope_run):
    plugin = DarkGatePlugin()
    result = selfiescope_run(["decode", "darkgate"], images(), label="portrait",
                             options={"darkgate": {"min_mean": 50}}, plugins=[plugin])
    assert [e.decision for e in result] == [Decision.ACCEPTED, Decision.REJECTED, Decision.REJECTED]
    assert result.codes[1] == "too_dark" and result[1].rejected_by == "darkgate"
    assert result[2].rejected_by == "decode"
    assert result[0].notes["mean"] >= 50 and result[0].image is not None  # pixels kept for assertions
    assert plugin.rejected == [result.codes[1], result.codes[2]]
    manifest = result.manifest()
    try:
        rows = manifest.query("SELECT decision, reject_code, label FROM images ORDER BY first_seen")
        assert sorted(r["decision"] for r in rows) == ["accepted", "rejected", "rejected"]
        assert {r["label"] for r in rows} == {"portrait"}
        runs = manifest.query("SELECT status FROM runs")
        assert [r["status"] for r in runs] == ["finished"]
    finally:
        manifest.close()


def test_selfiescope_run_validates_options_and_step_names(selfiescope_run):
    with pytest.raises(ValidationError):
        selfiescope_run(["darkgate"], images()[:1], options={"darkgate": {"min_men": 3}}, plugins=[DarkGatePlugin()])
    with pytest.raises(ValueError, match="unknown step.*darkgate"):
        selfiescope_run(["decode", "darkgate"], images()[:1])


async def test_selfiescope_run_in_an_async_test(selfiescope_run):
    with pytest.raises(RuntimeError, match="arun"):
        selfiescope_run(["decode"], images()[:1])
    result = await selfiescope_run.arun(["decode", "darkgate"], images(), plugins=[DarkGatePlugin()], concurrent=True)
    assert [e.reject_code for e in result.rejected] == ["too_dark", result[2].reject_code]
    assert len(result.accepted) == 1


def test_mock_site_command_serves_until_interrupted():
    proc = subprocess.Popen(
        [sys.executable, "-m", "selfiescope", "mock-site", "--port", "0", "--no-login", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # not ignored, even from a background shell
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        info = json.loads(proc.stdout.readline())
        with urllib.request.urlopen(info["base_url"] + "/explore/tags/selfie/", timeout=10) as resp:
            assert resp.status == 200 and resp.read().count(b"<article") == 12
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=20) == 0, proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
