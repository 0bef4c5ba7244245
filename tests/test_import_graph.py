"""Data flows one way: no import cycle between the modules of core, api, plugins, pipelines and
testing (the CLI modules sit on top of everything and are left out), and no import
hidden inside a function to get round one (the executors are named by import path instead)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "selfiescope"
EXECUTOR_PAIRS = [("pipelines.collecting.collect", "pipelines.collecting.dask_collect"), ("pipelines.model.train", "pipelines.model.dask_train")]


def _module(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports() -> dict[str, tuple[set[str], set[str]]]:
    """module -> (modules it imports at import time, modules it imports inside functions)."""
    modules = {_module(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, tuple[set[str], set[str]]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        top, local = set(), set()
        tree = ast.parse(path.read_text(encoding="utf-8"))
        in_functions = {id(n) for f in ast.walk(tree) if isinstance(f, ast.FunctionDef | ast.AsyncFunctionDef)
                        for n in ast.walk(f)}
        type_only = {id(n) for i in ast.walk(tree) if isinstance(i, ast.If) and "TYPE_CHECKING" in ast.unparse(i.test)
                     for n in ast.walk(i)}
        for node in ast.walk(tree):
            if not isinstance(node, ast.ImportFrom) or not node.level or id(node) in type_only:
                continue
            base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
            target = ".".join(p for p in (base, node.module or "") if p)
            found = {t for t in (target, *(f"{target}.{a.name}".lstrip(".") for a in node.names)) if t in modules}
            (local if id(node) in in_functions else top).update(found)
        graph[name] = (top, local)
    return graph


def test_no_import_cycle_among_core_plugins_and_pipelines() -> None:
    layers = ("core.", "api", "plugins.", "pipelines.", "testing.")  # plugins reach core through api
    graph = {name: {d for d in top if d.startswith(layers)} for name, (top, _) in _imports().items()
             if name.startswith(layers)}
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for dep in sorted(graph[node]):
            if dep == node or (dep in path[:-1] and dep.startswith(node + ".")):
                continue  # a package importing its own submodules
            assert state.get(dep) != 1 or node.startswith(dep + "."), "import cycle: " + " -> ".join([*path, dep])
            if dep not in state:
                visit(dep, [*path, dep])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])


def test_executors_are_not_imported_inside_functions_to_dodge_a_cycle() -> None:
    graph = _imports()
    for a, b in EXECUTOR_PAIRS:
        for x, y in ((a, b), (b, a)):
            assert y not in graph[x][1], f"{x} imports {y} inside a function"
