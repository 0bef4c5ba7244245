"""The plugin registry has one maker and one owner, read from the package's source:

- plugins are loaded in one function (``core.plugins.build_registry``), which only
  ``App.create`` calls: no other code makes a plugin manager, loads entry points or builds a
  registry, so ``[plugins] disable`` holds for every command;
- no function takes an optional registry (``registry: Registry | None = None``,
  ``registry=None``): a function that may build its own when given none is a second place
  plugins get loaded, with settings that may differ from the command's.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "selfiescope"
MAKER = ("selfiescope/core/plugins.py", "build_registry")
LOADING = {"PluginManager", "from_manager", "load_setuptools_entrypoints", "_new_manager"}  # what loads plugins


def sources() -> Iterator[tuple[str, ast.Module]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        yield str(path.relative_to(PACKAGE.parent)), ast.parse(path.read_text(), str(path))


def called_name(node: ast.Call) -> str | None:
    func = node.func
    return func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else None


def calls_by_function(tree: ast.Module) -> Iterator[tuple[str, str, int]]:
    """``(enclosing function, called name, line)`` for every call (``<module>`` at top level)."""
    def walk(node: ast.AST, where: str) -> Iterator[tuple[str, str, int]]:
        for child in ast.iter_child_nodes(node):
            inside = child.name if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) else where
            if isinstance(child, ast.Call) and (name := called_name(child)):
                yield where, name, child.lineno
            yield from walk(child, inside)
    yield from walk(tree, "<module>")


def optional_registry_parameters(tree: ast.Module) -> Iterator[tuple[str, int, str]]:
    for node in ast.walk(tree):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            continue
        args = node.args
        positional = args.posonlyargs + args.args
        defaults = [None] * (len(positional) - len(args.defaults)) + list(args.defaults)
        pairs = list(zip(positional, defaults)) + list(zip(args.kwonlyargs, args.kw_defaults))
        for arg, default in pairs:
            annotation = ast.unparse(arg.annotation) if arg.annotation is not None else ""
            if arg.arg != "registry" and "Registry" not in annotation:
                continue
            none_default = isinstance(default, ast.Constant) and default.value is None
            if none_default or (default is not None and ("None" in annotation or "Optional" in annotation)):
                yield getattr(node, "name", "<lambda>"), arg.lineno, f"{arg.arg}: {annotation or '?'}"


def test_plugins_are_loaded_in_one_function_that_only_app_create_calls():
    loaders, builders, seen = [], [], set()
    for path, tree in sources():
        for function, name, line in calls_by_function(tree):
            seen.add((path, function, name))
            if name in LOADING and (path, function) not in {MAKER, ("selfiescope/core/plugins.py", "_new_manager")}:
                loaders.append(f"{path}:{line} {function}() calls {name}")
            if name == "build_registry" and (path, function) != ("selfiescope/core/app.py", "create"):
                builders.append(f"{path}:{line} {function}() calls build_registry")
    assert ("selfiescope/core/app.py", "create", "build_registry") in seen  # the walk sees the one allowed call
    assert not loaders, "plugins loaded outside core.plugins.build_registry:\n" + "\n".join(loaders)
    assert not builders, "a registry built outside App.create:\n" + "\n".join(builders)


def test_no_function_takes_an_optional_registry():
    found = [f"{path}:{line} {function}({param})"
             for path, tree in sources() for function, line, param in optional_registry_parameters(tree)]
    assert not found, "optional registry parameters (take the app's registry instead):\n" + "\n".join(found)


@pytest.mark.parametrize("source, expected", [
    ("def f(settings, registry=None): pass", True),
    ("def f(settings, *, registry: 'Registry | None' = None): pass", True),
    ("async def f(registry: Optional[Registry] = None): pass", True),
    ("def f(reg: Registry | None = None): pass", True),
    ("def f(settings, registry: Registry): pass", False),
    ("def f(registry: Registry, plugins=None): pass", False),
])
def test_the_parameter_check_sees_each_spelling(source, expected):
    assert bool(list(optional_registry_parameters(ast.parse(source)))) is expected
