"""The docs are tied to the code (datasette's tests/test_docs.py): every hook, every public
API name (of ``selfiescope.api`` and its submodules), every public attribute of the component
classes and every CLI command has its place in docs/, each checked on its own so that one
missing item is one failure that names it."""

from __future__ import annotations

import ast
import importlib
import inspect
import re
import textwrap
from pathlib import Path

import pytest

from selfiescope import api
from selfiescope.api import cli as api_cli
from selfiescope.api import dataset as api_dataset
from selfiescope.api import recording as api_recording
from selfiescope.api import web as api_web
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


def subsection(text: str, heading: str) -> str:
    """The text of the ``### heading`` subsection, up to the next heading of that level or above."""
    match = re.search(rf"^### {re.escape(heading)}\n(.*?)(?=^#{{2,3}} |\Z)", text, flags=re.MULTILINE | re.DOTALL)
    assert match, f"docs have no '### {heading}' subsection"
    return match.group(1)


def table_names(text: str) -> set[str]:
    """The names a markdown table's rows start with (``| `a` / `b` | ...`` gives a and b)."""
    return {name for row in re.findall(r"^\| (.+?) \|", text, flags=re.MULTILINE)
            for name in re.findall(r"`([^`]+)`", row)}


def test_table_names_reads_every_name_of_a_first_cell():
    assert table_names("| `a` / `b` | `c` is not first |\n| `d` | x |") == {"a", "b", "d"}


@pytest.mark.parametrize("name", api.__all__)
def test_public_name_is_in_the_api_table(name: str):
    top = section(PLUGINS_MD, "The public API").split("\n### ", 1)[0]
    assert f"| `{name}` |" in top, f"docs/plugins.md's public API table lacks {name}"


API_MODULES = [api_web, api_dataset, api_recording, api_cli]
API_SUBMODULE_NAMES = [(m.__name__, name) for m in API_MODULES for name in m.__all__]


@pytest.mark.parametrize("module,name", API_SUBMODULE_NAMES)
def test_public_name_of_a_submodule_is_in_its_table(module: str, name: str):
    table = subsection(section(PLUGINS_MD, "The public API"), f"`{module}`")
    assert name in table_names(table), f"docs/plugins.md's `{module}` table lacks {name}"
    assert getattr(importlib.import_module(module), name) is not None


def instance_attributes(cls: type) -> set[str]:
    """Public ``self.X = ...`` names that ``cls.__init__`` sets."""
    if "__init__" not in vars(cls):
        return set()
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls.__init__)))
    return {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store)
            and isinstance(node.value, ast.Name) and node.value.id == "self" and not node.attr.startswith("_")}


COMPONENT_CLASSES = [api.Component, api.Source, api.Step, api.Storage, api.FeatureExtractor]
COMPONENT_ATTRIBUTES = sorted((cls.__name__, name) for cls in COMPONENT_CLASSES
                              for name in {n for n in vars(cls) if not n.startswith("_")} | instance_attributes(cls))


def test_every_component_class_has_attributes_to_check():
    names = {name for _, name in COMPONENT_ATTRIBUTES}
    assert {"provides", "requires", "worker_safe", "known_biases", "Options", "options", "run", "locate"} <= names


@pytest.mark.parametrize("cls,attribute", COMPONENT_ATTRIBUTES)
def test_component_attribute_is_in_the_reference(cls: str, attribute: str):
    table = subsection(section(PLUGINS_MD, "Component reference"), f"`{cls}`")
    assert attribute in table_names(table), f"docs/plugins.md's component reference for {cls} lacks {attribute}"


@pytest.mark.parametrize("name", api.__all__)
def test_public_name_is_importable(name: str):
    assert getattr(api, name) is not None


@pytest.mark.parametrize("command", COMMANDS)
def test_command_has_a_heading_in_the_cli_reference(command: str):
    assert f"### `selfiescope {command}`" in CLI_MD, f"docs/cli.md has no heading for `selfiescope {command}`"


def test_cli_reference_names_no_command_that_is_gone():
    documented = set(re.findall(r"^### `selfiescope ([a-z -]+)`", CLI_MD, flags=re.MULTILINE))
    assert documented - set(COMMANDS) == set()


def python_blocks(markdown: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", markdown, flags=re.MULTILINE | re.DOTALL)


def imported_modules(code: str) -> list[str]:
    """The modules a code block imports (parsed, so a wrapped import counts; a block that is
    not whole Python, with ``...`` bodies, is read line by line)."""
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return re.findall(r"^\s*(?:from|import)\s+([\w.]+)", code, flags=re.MULTILINE)
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.append(node.module)
        elif isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
    return names


GUIDES = {"plugins.md": PLUGINS_MD, "storage.md": (DOCS / "storage.md").read_text(encoding="utf-8")}


@pytest.mark.parametrize("guide", sorted(GUIDES))
def test_a_guides_examples_import_only_the_public_api(guide: str):
    """Invariant: what the plugin and storage guides tell an author to import is public
    (``selfiescope.api*``, or ``selfiescope.testing*`` for tests), never a module that may move."""
    blocks = python_blocks(GUIDES[guide])
    assert blocks, f"docs/{guide} has no python examples to check"
    for block in blocks:
        for module in imported_modules(block):
            if module == "selfiescope" or module.startswith("selfiescope."):
                assert re.match(r"selfiescope\.(api|testing)(\.|$)", module), \
                    f"docs/{guide}: an example imports {module}, outside selfiescope.api / selfiescope.testing"


def test_the_import_check_sees_a_private_import():
    assert imported_modules("from selfiescope.pipelines.collect import collect\nx = (\n") == [
        "selfiescope.pipelines.collect"]
    assert imported_modules("import selfiescope.core.app as a") == ["selfiescope.core.app"]


def documented_calls() -> list[tuple[str, str, str]]:
    """(module, name, call) for each API table row whose description opens with a call of
    that very name: ``| `name` | `await name(a, b=...)`...``."""
    api_section = section(PLUGINS_MD, "The public API")
    tables = [("selfiescope.api", api_section.split("\n### ", 1)[0])]
    tables += [(m.__name__, subsection(api_section, f"`{m.__name__}`")) for m in API_MODULES]
    found = []
    for module, table in tables:
        for name, call in re.findall(r"^\| `(\w+)` \| `(?:await )?(\w+\(.*?\))`", table, flags=re.MULTILINE):
            if call.startswith(name + "("):
                found.append((module, name, call))
    return found


def test_documented_calls_are_found():
    assert {"record", "replay_settings", "collect", "within"} <= {name for _, name, _ in documented_calls()}


@pytest.mark.parametrize("module,name,call", documented_calls())
def test_a_documented_call_matches_the_signature(module: str, name: str, call: str):
    """Each argument written as a plain name is the parameter at its place; each ``key=...``
    is a parameter; literals and ``...`` say nothing."""
    params = list(inspect.signature(getattr(importlib.import_module(module), name)).parameters.values())
    arguments = [a.strip() for a in call[len(name) + 1:-1].split(",") if a.strip()]
    for place, argument in enumerate(arguments):
        key = argument.split("=", 1)[0].strip()
        if "=" in argument:
            assert key in {p.name for p in params}, f"{name}: documented {key}= is not a parameter ({call})"
        elif key.isidentifier():
            assert place < len(params) and params[place].name == key and params[place].kind in (
                inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD), \
                f"{name}: documented argument {place + 1} is {key!r}, the function's is " \
                f"{params[place].name if place < len(params) else 'none'} ({call})"
