"""The docs are tied to the code (datasette's tests/test_docs.py): every hook, every public
API name and every CLI command has its place in docs/, each checked on its own so that one
missing item is one failure that names it."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from selfiescope import api
from selfiescope.core import hookspecs

DOCS = Path(__file__).resolve().parent.parent / "docs"
PLUGINS_MD = (DOCS / "plugins.md").read_text(encoding="utf-8")
CLI_MD = (DOCS / "cli.md").read_text(encoding="utf-8")

HOOKS = sorted(name for name, fn in vars(hookspecs).items()
               if name.startswith("selfiescope_") and callable(fn) and hasattr(fn, "selfiescope_spec"))


def section(markdown: str, heading: str) -> str:
    """The text of the ``## heading`` section, up to the next heading of that level."""
    match = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^## |\Z)", markdown, flags=re.MULTILINE | re.DOTALL)
    assert match, f"docs have no '## {heading}' section"
    return match.group(1)


def registered_commands() -> list[str]:
    """Every command and sub-command on the application the CLI builds with every built-in
    plugin loaded (so plugin commands count), as typed after ``selfiescope``."""
    from selfiescope.cli.build import build_app, command_names
    from selfiescope.core.app import App
    from selfiescope.core.settings import Settings

    app, _ = build_app(App.create(Settings(), entrypoints=False))

    def walk(typer_app, prefix: str) -> list[str]:
        names = [f"{prefix}{n}" for n in command_names(typer_app)]
        for group in typer_app.registered_groups:
            names += walk(group.typer_instance, f"{prefix}{group.name} ")
        return names

    return sorted(walk(app, ""))


COMMANDS = registered_commands()


def test_the_lists_are_not_empty():  # a broken discovery must not make every check vacuous
    assert len(HOOKS) >= 10 and len(api.__all__) >= 15 and len(COMMANDS) >= 18
    assert "selfiescope_commands" in HOOKS and "login" in COMMANDS and "settings check" in COMMANDS


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_is_in_the_plugin_guide(hook: str):
    assert re.search(rf"^\| `{hook}\(", PLUGINS_MD, flags=re.MULTILINE), f"docs/plugins.md's hook table lacks {hook}"


@pytest.mark.parametrize("hook", HOOKS)
def test_hookspec_is_typed_and_documents_each_argument(hook: str):
    fn = getattr(hookspecs, hook)
    signature = inspect.signature(fn)
    assert signature.return_annotation is not inspect.Signature.empty, f"{hook} has no return annotation"
    doc = inspect.getdoc(fn) or ""
    for name, param in signature.parameters.items():
        assert param.annotation is not inspect.Parameter.empty, f"{hook}({name}) has no annotation"
        assert f":param {name}:" in doc, f"{hook}'s docstring has no ':param {name}:'"


@pytest.mark.parametrize("name", api.__all__)
def test_public_name_is_in_the_api_table(name: str):
    assert f"| `{name}` |" in section(PLUGINS_MD, "The public API"), f"docs/plugins.md's public API table lacks {name}"


@pytest.mark.parametrize("name", api.__all__)
def test_public_name_is_importable(name: str):
    assert getattr(api, name) is not None


@pytest.mark.parametrize("command", COMMANDS)
def test_command_has_a_heading_in_the_cli_reference(command: str):
    assert f"### `selfiescope {command}`" in CLI_MD, f"docs/cli.md has no heading for `selfiescope {command}`"


def test_cli_reference_names_no_command_that_is_gone():
    documented = set(re.findall(r"^### `selfiescope ([a-z -]+)`", CLI_MD, flags=re.MULTILINE))
    assert documented - set(COMMANDS) == set()
