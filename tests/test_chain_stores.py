"""A collect chain must store what it accepts: settings refuse one without a storing step (a
capability, not the name 'store'), and the counters never call an unstored image stored."""

from __future__ import annotations

import hashlib
from pathlib import Path

from safety_helpers import cli, faces, json_out, no_traceback, project

from selfiescope.core.checks import check_components
from selfiescope.core.components import STORED
from selfiescope.core.events import Decision, ImageEvent, Origin
from selfiescope.core.hookspecs import hookimpl
from selfiescope.core.manifest import Manifest
from selfiescope.core.plugins import build_registry
from selfiescope.core.settings import settings_from_dict
from selfiescope.core.stats import RunStats
from selfiescope.plugins.store import StoreStep


class VaultStep(StoreStep):
    """A third party's storing step: another name, the same capability."""

    name = "vault"


class Plugin:
    @staticmethod
    @hookimpl
    def selfiescope_steps():
        return [VaultStep]


def _problems(tmp_path: Path, chain: list[str]) -> list[str]:
    settings = settings_from_dict({"storage": {"root": str(tmp_path)}, "pipelines": {
        "p": {"kind": "import", "source": "folder", "paths": [str(tmp_path)], "label": "selfie", "chain": chain}}})
    return [p for p in check_components(settings, build_registry(plugins=[Plugin])) if "stores nothing" in p]


def test_settings_refuse_a_collect_chain_without_a_storing_step(tmp_path: Path) -> None:
    assert STORED in StoreStep.provides
    assert _problems(tmp_path, ["decode", "face_area"]) == [
        "pipelines.p.chain: the chain stores nothing: add 'store' (or another step that stores images) at its end, "
        "or the images it accepts are counted and lost"]
    assert _problems(tmp_path, ["decode", "store"]) == []
    assert _problems(tmp_path, ["decode", "face_area", "vault"]) == []


def test_cli_refuses_a_chain_that_stores_nothing_and_settings_check_agrees(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    faces(folder, 1)
    settings = project(tmp_path)
    result = cli("import", folder, "-l", "selfie", "--chain", "decode,face_area", "-s", settings)
    assert result.exit_code == 2 and no_traceback(result)
    assert "the chain stores nothing: add 'store'" in result.output
    assert not (tmp_path / "data" / "manifest.sqlite").exists()
    bad = project(tmp_path, extra='[pipelines.p]\nkind = "import"\nsource = "folder"\npaths = ["in"]\n'
                  'label = "a"\nchain = ["decode", "face_area"]\n')
    checked = cli("settings", "check", "-s", bad)
    assert checked.exit_code == 2 and "pipelines.p.chain: the chain stores nothing" in checked.output


def test_clean_without_output_still_reports(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    faces(folder, 2)
    result = cli("clean", folder, "--json", "-s", project(tmp_path))
    assert result.exit_code == 0, result.output
    assert json_out(result)["seen"] == 2


def _event(post: str, decision: Decision, location: str | None) -> ImageEvent:
    data = post.encode()
    event = ImageEvent(origin=Origin(source="web", job="t", post_id=post), label="selfie", data=data)
    event.content_hash = hashlib.sha256(data).hexdigest()
    event.decision, event.location = decision, location
    if decision is Decision.REJECTED:
        event.rejected_by, event.reject_code = "face_area", "no_face"
    return event


def test_a_post_is_done_only_when_its_image_was_stored_or_rejected(tmp_path: Path) -> None:
    manifest = Manifest(tmp_path / "m.sqlite")
    manifest.record(_event("unstored", Decision.ACCEPTED, None))
    manifest.record(_event("stored", Decision.ACCEPTED, "selfie/x.jpg"))
    manifest.record(_event("rejected", Decision.REJECTED, None))
    assert not manifest.post_seen("web", "unstored")
    assert manifest.post_seen("web", "stored") and manifest.post_seen("web", "rejected")


def test_bytes_stored_counts_only_stored_bytes() -> None:
    stats = RunStats()
    stats.count("t", "accepted", size=100, stored=False)
    stats.count("t", "accepted", size=7)
    assert (stats.accepted, stats.bytes_stored, stats.bytes_in) == (2, 7, 107)
