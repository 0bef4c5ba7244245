"""``selfiescope record`` is a built-in command: it records any browser source, whichever
plugins settings enable, and refuses a HAR path it could not write before starting a browser."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from selfiescope.cli import app
from selfiescope.cli.build import build_app, command_names
from selfiescope.core.app import App
from selfiescope.core.settings import settings_from_dict


def test_record_is_built_in_and_stays_when_the_instagram_plugin_is_disabled() -> None:
    cli, info = build_app(App.create(settings_from_dict({"plugins": {"disable": ["instagram"]}})))
    assert "record" in command_names(cli)
    assert all("record" not in commands for commands in info.by_plugin.values())


def test_record_refuses_a_har_in_a_missing_folder_before_any_browser(tmp_path: Path) -> None:
    settings = tmp_path / "settings.toml"
    settings.write_text("")
    har_file = tmp_path / "missing" / "a.har"
    result = CliRunner().invoke(app, ["record", "x", "--har", str(har_file), "--base-url", "http://127.0.0.1:9",
                                      "--limit", "1", "--settings", str(settings)])
    assert result.exit_code == 2, result.output
    assert f"folder {har_file.parent} does not exist" in result.output and "Traceback" not in result.output
    assert not har_file.parent.exists()  # nothing made on the way
