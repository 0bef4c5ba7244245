"""``[plugins] disable``: any plugin module can be turned off, built-in or third-party."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from PIL import Image

from selfiescope.core.app import App
from selfiescope.core.hookspecs import hookimpl
from selfiescope.core.plugins import BUILTIN_ALIASES, DEFAULT_PLUGINS, build_registry
from selfiescope.core.settings import ScrapePipeline, SettingsError, settings_from_dict
from selfiescope.core.checks import check_components
from selfiescope.pipelines.collecting.collect import collect


def test_every_built_in_has_a_short_alias() -> None:
    assert sorted(BUILTIN_ALIASES.values()) == sorted(DEFAULT_PLUGINS)
    assert {"gallery", "instagram", "folder", "dedup", "store", "files_storage"} <= set(BUILTIN_ALIASES)


def test_a_disabled_built_in_is_gone_with_its_hooks() -> None:
    full = build_registry(entrypoints=False)
    assert "gallery" in full.sources and full.pm.get_plugin("selfiescope.plugins.gallery") is not None
    registry = build_registry(entrypoints=False, disable=["gallery", "dedup"])
    assert "gallery" not in registry.sources and "dedup" not in registry.steps
    assert registry.pm.get_plugin("selfiescope.plugins.dedup") is None  # its observer hooks never run
    assert registry.pm.is_blocked("selfiescope.plugins.gallery")
    assert registry.disabled == {"gallery": "selfiescope.plugins.gallery", "dedup": "selfiescope.plugins.dedup"}
    assert {"decode", "store"} <= set(registry.steps) and "folder" in registry.sources  # the rest stays


def test_unknown_or_malformed_names_are_settings_errors_naming_the_key() -> None:
    with pytest.raises(SettingsError) as info:
        build_registry(entrypoints=False, disable=["galery"])
    assert info.value.problems[0].startswith("plugins.disable: unknown plugin 'galery' (known: ")
    settings = settings_from_dict({"plugins": {"disable": ["nosuch"]}})
    with pytest.raises(SettingsError) as info:
        App.create(settings, entrypoints=False)
    (problem,) = info.value.problems
    assert problem.startswith("plugins.disable: unknown plugin 'nosuch'")
    with pytest.raises(SettingsError) as info:
        settings_from_dict({"plugins": {"disable": "gallery"}})
    assert info.value.problems[0].startswith("plugins: ") and "disable: a list of plugin names" in info.value.problems[0]


def test_a_pipeline_using_a_disabled_plugin_is_told_which_plugin(tmp_path: Path) -> None:
    settings = settings_from_dict({
        "storage": {"root": str(tmp_path)},
        "plugins": {"disable": ["gallery", "dedup"], "dedup": {"max_distance": 4}},
        "pipelines": {
            "g": {"kind": "scrape", "source": "gallery", "urls": ["http://127.0.0.1:9/"], "label": "selfie",
                  "chain": ["decode", "dedup", "store"]},
        },
    })
    problems = check_components(settings, App.create(settings, entrypoints=False).registry)
    assert problems == [
        "plugins.dedup: step 'dedup' is provided by plugin 'dedup', which [plugins] disable turns off",
        "pipelines.g.source: source 'gallery' is provided by plugin 'gallery', which [plugins] disable turns off",
        "pipelines.g.chain[1]: step 'dedup' is provided by plugin 'dedup', which [plugins] disable turns off",
    ]


class Seen:
    def __init__(self) -> None:
        self.plugins: list[str] = []

    @hookimpl
    def selfiescope_run_started(self, run) -> None:  # noqa: ANN001
        self.plugins = [run.registry.pm.get_name(p) for p in run.registry.pm.get_plugins()]


def test_a_run_honours_disable_and_refuses_a_chain_that_needs_a_disabled_step(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.new("RGB", (300, 300), (200, 120, 90)).save(photos / "a.png")
    settings = settings_from_dict({"storage": {"root": str(tmp_path / "data")}, "plugins": {"disable": ["dedup"]}})
    with pytest.raises(SettingsError, match=r"chain\[2\]: step 'dedup' is provided by plugin 'dedup'"):
        asyncio.run(collect(App.create(settings), "i", pipeline=ScrapePipeline(
            kind="import", source="folder", paths=[photos], label="selfie", chain=["decode", "face_area", "dedup"])))
    assert not (tmp_path / "data" / "manifest.sqlite").exists()  # refused before the run started
    seen = Seen()
    stats = asyncio.run(collect(App.create(settings, plugins=[seen]), "i", pipeline=ScrapePipeline(
        kind="import", source="folder", paths=[photos], label="selfie", chain=["decode", "store"])))
    assert stats.accepted == 1
    assert "selfiescope.plugins.dedup" not in seen.plugins and "selfiescope.plugins.store" in seen.plugins
