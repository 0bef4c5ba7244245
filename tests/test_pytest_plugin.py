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

from selfiescope.core.components import Options, Step
from selfiescope.core.events import Decision, ImageEvent, Reject
from selfiescope.core.hookspecs import hookimpl
from selfiescope.core.settings import SettingsError, settings_from_dict
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
    with pytest.raises(SettingsError, match=r"plugins\.darkgate\.min_men"):
        selfiescope_run(["darkgate"], images()[:1], options={"darkgate": {"min_men": 3}}, plugins=[DarkGatePlugin()])
    with pytest.raises(SettingsError, match=r"selfiescope_run\.chain\[1\]: unknown plugin 'darkgate'"):
        selfiescope_run(["decode", "darkgate"], images()[:1])


class FaceNote(Step):
    """A step that reads what an earlier step found: it requires ``faces``."""

    name = "facenote"
    requires = frozenset({"image", "faces"})

    def process(self, event: ImageEvent) -> None:
        event.notes["n_faces"] = len(event.faces)


class FaceNotePlugin:
    @hookimpl
    def selfiescope_steps(self):
        return [FaceNote]


def settings_check_problems(tmp_path, chain: list[str]) -> list[str]:
    """What `settings check` says of a collect pipeline with this chain (the plugin registered)."""
    from selfiescope.core.checks import check_components
    from selfiescope.core.app import App

    settings = settings_from_dict({"storage": {"root": str(tmp_path / "data")}, "pipelines": {"p": {
        "kind": "import", "source": "folder", "paths": [str(tmp_path)], "label": "selfie", "chain": chain}}})
    return check_components(settings, App.create(settings, plugins=[FaceNotePlugin()], entrypoints=False).registry)


@pytest.mark.parametrize("chain", [["facenote"], ["decode", "facenote"], ["face_area", "decode", "facenote"],
                                   ["facenote", "decode", "face_area"], ["dedup", "decode"]])
def test_selfiescope_run_refuses_a_chain_settings_refuse(selfiescope_run, tmp_path, chain):
    """A step whose ``requires`` no earlier step provides fails in the fixture with the problem
    `settings check` reports for the same chain, before any image runs."""
    store_at = f"pipelines.p.chain[{len(chain)}]"  # the settings' pipeline must store; the fixture's need not
    expected = [p.split(": ", 1)[1] for p in settings_check_problems(tmp_path, [*chain, "store"])
                if not p.startswith(store_at)]
    assert expected and all("which no earlier step provides" in p for p in expected)
    with pytest.raises(SettingsError) as info:
        selfiescope_run(chain, images()[:1], plugins=[FaceNotePlugin()])
    assert [p.split(": ", 1)[1] for p in info.value.problems] == expected
    assert all(p.startswith("selfiescope_run.chain[") for p in info.value.problems)
    assert not (selfiescope_run.root / "data").exists()  # refused before the run: no manifest, no lock


def test_selfiescope_run_takes_a_chain_that_meets_every_requirement(selfiescope_run, tmp_path):
    assert settings_check_problems(tmp_path, ["decode", "face_area", "facenote", "store"]) == []
    result = selfiescope_run(["decode", "face_area", "facenote"], images()[:1], plugins=[FaceNotePlugin()])
    assert result.codes == [None] and result[0].notes["n_faces"] == len(result[0].faces) >= 1


def test_selfiescope_run_applies_the_plugins_disable_setting(selfiescope_run):
    with pytest.raises(SettingsError, match=r"selfiescope_run\.chain\[1\]: step 'dedup' is provided by plugin 'dedup'"):
        selfiescope_run(["decode", "dedup"], images()[:1], settings={"plugins": {"disable": ["dedup"]}})


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
