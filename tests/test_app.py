"""One application object per command: plugins load in one place, ``[plugins] disable`` blocks a
plugin before it is imported, checks only read the registry, and every command (plugin commands
included) treats a broken plugin alike: harmless when disabled, one clear line when not."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings as hsettings, strategies as st

from selfiescope.core.app import App
from selfiescope.core.checks import check_components
from selfiescope.core.plugins import BUILTIN_ALIASES, BUILTIN_PROVIDES, DEFAULT_PLUGINS, build_registry
from selfiescope.core.settings import SettingsError, settings_from_dict
from test_docs import registered_commands

REPO = Path(__file__).resolve().parents[1]
BROKEN = "brokenplug"
BOOM = "boom from the brokenplug module"


def test_what_built_ins_declare_is_what_they_register() -> None:
    """The declaration a disabled plugin is named from (never imported) matches the modules."""
    registry = build_registry(entrypoints=False)
    registered: dict[str, set[str]] = {}
    for info in registry.info:
        registered.setdefault(info.plugin, set()).add(f"{info.kind}.{info.name}")
    assert set(BUILTIN_PROVIDES) == set(DEFAULT_PLUGINS)
    assert {module: set(names) for module, names in BUILTIN_PROVIDES.items()} == registered


def test_a_disabled_built_in_is_never_imported() -> None:
    code = ("import sys; from selfiescope.core.app import App; from selfiescope.core.settings import settings_from_dict;"
            "app = App.create(settings_from_dict({'plugins': {'disable': ['gallery', 'embed']}}), entrypoints=False);"
            "print(sorted(m for m in sys.modules if m in ('selfiescope.plugins.gallery', 'selfiescope.plugins.embed')));"
            "print(app.registry.why_missing('gallery'))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr
    imported, why = proc.stdout.splitlines()
    assert imported == "[]"
    assert why == "source 'gallery' is provided by plugin 'gallery', which [plugins] disable turns off"


@hsettings(max_examples=25, deadline=None)
@given(st.lists(st.sampled_from(sorted(BUILTIN_ALIASES)), max_size=4, unique=True))
def test_checks_read_the_registry_and_never_change_it(disable: list[str]) -> None:
    """Whatever settings disable, checking them against a registry leaves it as it was."""
    registry = build_registry(entrypoints=False)
    before = (dict(registry.sources), dict(registry.steps), dict(registry.storage), dict(registry.features),
              list(registry.info), dict(registry.disabled), [n for n, _ in registry.pm.list_name_plugin()])
    check_components(settings_from_dict({"plugins": {"disable": disable}}), registry)
    after = (dict(registry.sources), dict(registry.steps), dict(registry.storage), dict(registry.features),
             list(registry.info), dict(registry.disabled), [n for n, _ in registry.pm.list_name_plugin()])
    assert after == before


def test_an_unknown_name_in_disable_names_the_key() -> None:
    with pytest.raises(SettingsError) as info:
        App.create(settings_from_dict({"plugins": {"disable": ["galery"]}}), entrypoints=False)
    assert info.value.problems[0].startswith("plugins.disable: unknown plugin 'galery' (known: ")


def test_a_run_context_is_made_from_the_app(tmp_path: Path) -> None:
    from selfiescope.core.manifest import Manifest

    app = App.create(settings_from_dict({"storage": {"root": str(tmp_path)}}), entrypoints=False)
    manifest = Manifest(":memory:")
    try:
        run = app.run_context("t", None, manifest)
        assert run.app is app and run.settings is app.settings and run.registry is app.registry
    finally:
        manifest.close()


# --- a broken plugin, installed through an entry point, against every command ----------------------
@pytest.fixture(scope="module")
def broken_install(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """An installed-looking distribution (a dist-info folder on the path, as pip leaves one)
    whose plugin module raises when imported."""
    site = tmp_path_factory.mktemp("site")
    (site / f"{BROKEN}.py").write_text(f"raise RuntimeError({BOOM!r})\n")
    info = site / f"{BROKEN}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {BROKEN}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[selfiescope]\n{BROKEN} = {BROKEN}\n")
    (info / "RECORD").write_text("")
    env = {k: v for k, v in os.environ.items() if k != "SELFIESCOPE_NO_ENTRYPOINTS"}
    env["PYTHONPATH"] = os.pathsep.join([str(site), str(REPO), env.get("PYTHONPATH", "")])
    return env


def prepare(tmp: Path) -> None:
    """What some command lines below need: a folder of the user's, a file that exists."""
    (tmp / "mine").mkdir(exist_ok=True)
    (tmp / "mine" / "notes.txt").write_text("the user's\n")
    (tmp / "taken.har").write_text("{}")


def command_lines(tmp: Path) -> dict[str, list[str]]:
    """For each command, arguments that end it quickly (most for a reason of their own)."""
    mine = tmp / "mine"
    return {
        "run": ["run", "nosuch"],
        "import": ["import", str(tmp / "missing"), "--label", "selfie"],
        "clean": ["clean", str(tmp / "missing")],
        "demo": ["demo", "--output", str(mine), "--no-train"],
        "scrape": ["scrape", "alpha", "--label", "selfie", "--replay", str(tmp / "missing.har")],
        "pipelines": ["pipelines"],
        "plugins": ["plugins", "--json"],
        "stats": ["stats"],
        "mock-site": ["mock-site", "--language", "xx"],
        "fsck": ["fsck"],
        "train": ["train"],
        "predict": ["predict", str(tmp / "no-model"), str(tmp / "missing.jpg")],
        "forget": ["forget", "--owner", "someone", "--yes"],
        "card": ["card"],
        "export": ["export", str(tmp / "out")],
        "login": ["login", "--from-browser", "nosuch"],
        "record": ["record", "alpha", "--har", str(tmp / "taken.har")],
        "doctor": ["doctor", "--base-url", "ftp://127.0.0.1:9"],
        "review": ["review", "--no-open"],  # no dataset under the root: one line, before serving
        "settings check": ["settings", "check"],
        "settings show": ["settings", "show"],
    }


def run_cli(env: dict[str, str], cwd: Path, args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "selfiescope", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_the_command_table_covers_every_command(tmp_path: Path) -> None:
    names = registered_commands()
    runnable = [n for n in names if not any(other.startswith(n + " ") for other in names)]  # groups run their commands
    assert sorted(command_lines(tmp_path)) == sorted(runnable)


@pytest.mark.parametrize("command", sorted(command_lines(Path("/nonexistent"))))
def test_a_broken_plugin_is_harmless_disabled_and_one_clear_error_enabled(
    command: str, broken_install: dict[str, str], tmp_path: Path
) -> None:
    prepare(tmp_path)
    args = command_lines(tmp_path)[command]
    settings = f'[storage]\nroot = "{tmp_path / "data"}"\n'
    (tmp_path / "settings.toml").write_text(settings + f'[plugins]\ndisable = ["{BROKEN}"]\n')
    off = run_cli(broken_install, tmp_path, args)
    assert BOOM not in off.stdout + off.stderr and BROKEN not in off.stderr, off.stderr
    assert "Traceback" not in off.stdout + off.stderr, off.stderr
    (tmp_path / "settings.toml").write_text(settings)
    on = run_cli(broken_install, tmp_path, args)
    assert on.returncode == 2, on.stdout + on.stderr
    assert f"plugin '{BROKEN}'" in on.stderr and "failed to import" in on.stderr and BOOM in on.stderr
    assert "Traceback" not in on.stdout + on.stderr, on.stderr


def test_a_built_in_that_fails_to_import_is_named_and_can_be_disabled(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    real = importlib.import_module

    def failing(name: str, *args: object) -> object:
        if name == "selfiescope.plugins.gallery":
            raise ImportError("libgallery.so: cannot open shared object file")
        return real(name, *args)

    monkeypatch.setattr(importlib, "import_module", failing)
    with pytest.raises(SettingsError) as info:
        App.create(settings_from_dict({}), entrypoints=False)
    (problem,) = info.value.problems
    assert "plugin 'gallery' (built-in selfiescope.plugins.gallery) failed to import" in problem
    assert 'disable = ["gallery"]' in problem
    app = App.create(settings_from_dict({"plugins": {"disable": ["gallery"]}}), entrypoints=False)
    assert "gallery" not in app.registry.sources and "folder" in app.registry.sources


@pytest.mark.parametrize("command", ["mock-site", "record", "settings check", "scrape"])
def test_help_works_with_a_broken_plugin_enabled_and_warns_of_it(
    command: str, broken_install: dict[str, str], tmp_path: Path
) -> None:
    """Invariant: ``--help`` of any command (built-in or a plugin's) exits 0 and names the
    broken plugin in one warning line: help is how one learns to turn it off."""
    (tmp_path / "settings.toml").write_text(f'[storage]\nroot = "{tmp_path / "data"}"\n')
    done = run_cli(broken_install, tmp_path, [*command.split(), "--help"])
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Usage" in done.stdout
    (warning,) = [line for line in done.stderr.splitlines() if BROKEN in line]
    assert warning.startswith("warning:") and "failed to import" in warning and BOOM in warning
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("where", ["file", "environment"])
def test_a_broken_plugin_error_names_where_the_settings_came_from(
    where: str, broken_install: dict[str, str], tmp_path: Path
) -> None:
    env = dict(broken_install)
    if where == "file":
        (tmp_path / "x.toml").write_text(f'[storage]\nroot = "{tmp_path / "data"}"\n')
        args, source = ["stats", "--settings", "x.toml"], "x.toml"
    else:
        env["SELFIESCOPE_STORAGE__ROOT"] = str(tmp_path / "data")
        args, source = ["stats"], "the environment"
    done = run_cli(env, tmp_path, args)
    assert done.returncode == 2
    assert done.stderr.splitlines()[0] == f"Invalid settings in {source}:", done.stderr


def test_a_message_with_brackets_reaches_the_user_whole(capsys: pytest.CaptureFixture[str]) -> None:
    """Rich reads ``[word]`` as markup: every message printed through ``fail`` is escaped."""
    from selfiescope.cli.common import fail

    fail("[browser] x did not answer [in 5 s]")
    assert "[browser] x did not answer [in 5 s]" in capsys.readouterr().err


def test_no_caller_escapes_what_fail_escapes() -> None:
    """``fail`` escapes its message; a caller that escapes too would show backslashes."""
    import ast

    package = REPO / "selfiescope"
    doubled = []
    for path in sorted(package.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "fail":
                inner = [n for arg in node.args for n in ast.walk(arg)
                         if isinstance(n, ast.Call) and getattr(n.func, "id", None) == "escape"]
                doubled += [f"{path.relative_to(package)}:{node.lineno}"] if inner else []
    assert doubled == []
