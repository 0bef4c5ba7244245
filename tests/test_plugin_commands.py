"""The ``selfiescope_commands`` hook: plugins add commands, the CLI says who added what, a
disabled plugin's commands are gone, and a clash never replaces a command silently."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import typer
from typer.testing import CliRunner

from selfiescope.api import hookimpl
from selfiescope.cli.build import build_app, command_names, startup_settings_path
from selfiescope.core.app import App
from selfiescope.core.settings import settings_from_dict
from selfiescope.core.settings import SettingsError

runner = CliRunner()



def application(plugins: list = (), disable: list[str] = ()) -> App:  # noqa: B006 - read only
    return App.create(settings_from_dict({"plugins": {"disable": list(disable)}}), plugins=plugins)


class Greeter:
    """A third party's plugin object: one command and one command group."""

    @hookimpl
    def selfiescope_commands(self, app: typer.Typer) -> None:
        @app.command("greet")
        def greet(name: str, broken: bool = False) -> None:
            if broken:  # a known problem: the CLI's guard turns it into one line and exit code 2
                raise SettingsError(["greet.name: not a name"])
            typer.echo(f"hello {name}")

        tools = typer.Typer(help="Greeter tools.")

        @tools.command("wave")
        def wave(broken: bool = False) -> None:
            if broken:
                raise SettingsError(["greeter.wave: broken"])
            typer.echo("wave")

        app.add_typer(tools, name="greeter")


class Clasher:
    @hookimpl
    def selfiescope_commands(self, app: typer.Typer) -> None:
        @app.command("scrape")
        def scrape() -> None:
            typer.echo("not the real scrape")


def test_a_plugin_adds_a_command_and_a_group_that_run_guarded():
    app, info = build_app(application(plugins=[Greeter()]))
    names = command_names(app)
    assert "greet" in names and "greeter" in names
    (greeter,) = [p for p, cmds in info.by_plugin.items() if "greet" in cmds]
    assert info.by_plugin[greeter] == ["greet", "greeter"]
    ok = runner.invoke(app, ["greet", "ada"])
    assert ok.exit_code == 0 and ok.stdout == "hello ada\n"
    assert runner.invoke(app, ["greeter", "wave"]).stdout == "wave\n"
    broken_wave = runner.invoke(app, ["greeter", "wave", "--broken"])  # a plain Typer sub-app is guarded too
    assert broken_wave.exit_code == 2 and "greeter.wave: broken" in broken_wave.output
    broken = runner.invoke(app, ["greet", "ada", "--broken"])
    assert broken.exit_code == 2 and "greet.name: not a name" in broken.output
    assert broken.exception is None or isinstance(broken.exception, SystemExit)


def test_the_instagram_commands_come_from_its_plugin():
    app, info = build_app(application())
    assert info.by_plugin == {"selfiescope.plugins.instagram": ["login", "doctor"]}
    assert not info.problems and {"login", "record", "doctor"} <= set(command_names(app))


def test_a_disabled_plugin_takes_its_commands_with_it():
    app, info = build_app(application(disable=["instagram"]))
    names = set(command_names(app))
    assert not {"login", "doctor"} & names and {"scrape", "run", "plugins", "record"} <= names
    assert info.by_plugin == {} and info.disabled == ["instagram"]
    gone = runner.invoke(app, ["login"])
    assert gone.exit_code == 2 and "No such command" in gone.output


def test_a_command_name_already_taken_is_left_out_and_reported():
    app, info = build_app(application(plugins=[Clasher()]))
    (problem,) = info.problems
    assert "'scrape'" in problem and "selfiescope" in problem and "left out" in problem
    assert command_names(app).count("scrape") == 1
    assert "not the real scrape" not in runner.invoke(app, ["scrape", "--help"]).output


def test_the_settings_file_is_found_on_the_command_line_before_parsing():
    assert startup_settings_path(["run", "x", "--settings", "a.toml"]) == "a.toml"
    assert startup_settings_path(["-s", "b.toml", "plugins"]) == "b.toml"
    assert startup_settings_path(["plugins", "--settings=c.toml"]) == "c.toml"
    assert startup_settings_path(["plugins"]) is None


def test_plugins_lists_commands_and_environment_per_plugin(tmp_path):
    from selfiescope.cli import app

    (tmp_path / "settings.toml").write_text("")
    result = runner.invoke(app, ["plugins", "--json", "--settings", str(tmp_path / "settings.toml")])
    assert result.exit_code == 0, result.output
    rows = {r["plugin"]: r for r in json.loads(result.stdout)}
    instagram = rows["selfiescope.plugins.instagram"]
    assert instagram["status"] == "loaded" and instagram["commands"] == ["login", "doctor"]
    assert instagram["components"] == ["source:instagram"]
    assert instagram["environment"] == ["SELFIESCOPE_INSTAGRAM_PASSWORD", "SELFIESCOPE_INSTAGRAM_USERNAME"]
    assert "selfiescope_commands" in instagram["hooks"]
    assert rows["selfiescope.plugins.gallery"]["commands"] == [] and rows["selfiescope.plugins.folder"]["environment"] == []


def test_importing_the_package_or_the_cli_loads_no_plugin():
    """``selfiescope``'s API names and the CLI's ``app`` load on first use: an import stays cheap."""
    code = ("import sys, selfiescope, selfiescope.cli;"
            "print(sorted(m for m in sys.modules if m.startswith('selfiescope.plugins') or m == 'selfiescope.api'));"
            "from selfiescope import Step; from selfiescope.api import Step as S; print(Step is S)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["[]", "True"]


def test_plugins_lists_a_disabled_plugin_as_disabled(tmp_path, monkeypatch):
    """``plugins`` shows what ``[plugins] disable`` turns off and lists nothing of it as loaded;
    an unknown name there exits 2 naming the key."""
    from selfiescope.cli import app

    (tmp_path / "settings.toml").write_text('[plugins]\ndisable = ["gallery", "instagram"]\n')
    result = runner.invoke(app, ["plugins", "--json", "--settings", str(tmp_path / "settings.toml")])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [(r["plugin"], r["status"]) for r in rows[-2:]] == [
        ("selfiescope.plugins.gallery", "disabled"), ("selfiescope.plugins.instagram", "disabled")]
    assert all(r["status"] == "loaded" for r in rows[:-2]) and rows[-1]["components"] == []
    table = runner.invoke(app, ["plugins", "--settings", str(tmp_path / "settings.toml")], env={"COLUMNS": "160"})
    assert "disabled" in table.stdout and "login" not in table.stdout
    (tmp_path / "bad.toml").write_text('[plugins]\ndisable = ["galery"]\n')
    bad = runner.invoke(app, ["plugins", "--settings", str(tmp_path / "bad.toml")])
    assert bad.exit_code == 2 and "plugins.disable: unknown plugin 'galery'" in bad.output


def test_only_the_help_and_plugin_commands_load_plugins_at_startup():
    from selfiescope.cli.build import needs_plugin_commands

    assert needs_plugin_commands([]) and needs_plugin_commands(["--help"]) and needs_plugin_commands(["-v", "--help"])
    assert needs_plugin_commands(["login", "--help"]) and needs_plugin_commands(["nope"])
    assert not needs_plugin_commands(["--version"]) and not needs_plugin_commands(["-v", "import", "x", "-l", "y"])
    assert not needs_plugin_commands(["settings", "show"])


def test_a_plugin_command_runs_from_the_console_entry_point(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "selfiescope", "doctor", "--help"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "--tag" in proc.stdout, proc.stderr
    version = subprocess.run([sys.executable, "-m", "selfiescope", "--version"], cwd=tmp_path,
                             capture_output=True, text=True, timeout=120)
    assert version.returncode == 0 and version.stdout.startswith("selfiescope ")


def test_scrape_base_url_goes_where_the_source_says():
    """``--base-url`` sets the source's ``url_option``; no pipeline knows a source by name."""
    import pytest

    from selfiescope.pipelines.collecting.scrape import scrape_pipeline

    registry = application().registry
    assert scrape_pipeline(registry, ["a"], "x", base_url="http://127.0.0.1:9").options == {"instagram": {"base_url": "http://127.0.0.1:9"}}
    gallery = scrape_pipeline(registry, ["a"], "x", source="gallery", base_url="http://127.0.0.1:9/t/{tag}/")
    assert gallery.options == {"gallery": {"url_template": "http://127.0.0.1:9/t/{tag}/"}}
    with pytest.raises(ValueError, match="the folder source takes no site URL"):
        scrape_pipeline(registry, ["a"], "x", source="folder", base_url="http://127.0.0.1:9")
    assert scrape_pipeline(registry, ["a"], "x", source="nowhere", base_url="http://127.0.0.1:9").options == {}


def test_cli_scrape_refuses_a_base_url_the_source_cannot_take(tmp_path):
    from selfiescope.cli import app

    (tmp_path / "settings.toml").write_text(f'[storage]\nroot = "{tmp_path / "data"}"\n')
    result = runner.invoke(app, ["scrape", "a", "-l", "x", "--source", "folder", "--base-url", "http://127.0.0.1:9",
                                 "--settings", str(tmp_path / "settings.toml")])
    assert result.exit_code == 2 and "the folder source takes no site URL" in result.output
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize("url", ["notaurl", "ftp://127.0.0.1:9", "http://", "http://[::1", "127.0.0.1:80"])
@pytest.mark.parametrize("command", [["scrape", "a", "-l", "x", "--source", "gallery"],
                                     ["scrape", "a", "-l", "x", "--source", "instagram"],
                                     ["record", "a", "--har", "out.har"], ["login"], ["doctor"]])
def test_a_base_url_that_is_no_site_is_a_usage_error_naming_the_option(tmp_path, command, url):
    """Invariant: every --base-url, whatever the source or command, is an http(s) URL with a
    host or the command ends at once with exit 2 naming the option (never a failed job)."""
    from selfiescope.cli import app

    (tmp_path / "settings.toml").write_text(f'[storage]\nroot = "{tmp_path / "data"}"\n')
    result = runner.invoke(app, [*command, "--base-url", url, "--settings", str(tmp_path / "settings.toml")])
    assert result.exit_code == 2, result.output
    assert "--base-url:" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "data").exists() and not (tmp_path / "out.har").exists()
