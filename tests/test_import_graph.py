"""Data flows one way, as docs/architecture.md's layer table says.

The table is read from the doc, so the two cannot drift: each row names one or more paths
(first column) and, in its last column, the layers they may import, as code spans
(`core`, `pipelines/dataset_care`, ...). A module belongs to the row with the longest path
that contains it and may import its own row's modules and those under an allowed path.
Every import counts, the ones inside functions too (an import moved into a function to
get round a cycle is still a dependency); only ``if TYPE_CHECKING:`` imports are exempt.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "selfiescope"
ARCHITECTURE = REPO / "docs" / "architecture.md"
TABLE_HEADER = "| layer | what | may import |"
EVERYTHING = "everything"
PIPELINE_PARTS = ("collecting", "model", "dataset_care")
CHECKED_FOR_HIDDEN_CYCLES = ("api", "plugins", "pipelines", "review", "demo")
EXECUTOR_PAIRS = [
    ("pipelines.collecting.collect", "pipelines.collecting.dask_collect"),
    ("pipelines.model.train", "pipelines.model.dask_train"),
]


@dataclass(frozen=True)
class Layer:
    paths: tuple[str, ...]  # dotted, relative to the package: "pipelines.model", "demo"
    allowed: tuple[str, ...] | None  # None: everything


def _dotted(path: str) -> str:
    """`selfiescope/pipelines/model/` or `pipelines/model` -> ``pipelines.model``; the package's
    own `selfiescope/__init__.py` -> ``""``."""
    path = path.strip().removeprefix("selfiescope/").removeprefix("selfiescope.").rstrip("/")
    dotted = path.removesuffix(".py").replace("/", ".")
    return "" if dotted == "__init__" else dotted


def parse_layer_table(text: str, known: set[str]) -> list[Layer]:
    """The layer table's rows. A code span in the last column counts when it names a module
    or package of ``known`` (so prose like `tests/...` or `data.py` is not a permission)."""
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip() == TABLE_HEADER), None)
    assert start is not None, f"docs/architecture.md has no layer table (a line {TABLE_HEADER!r})"
    layers = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        paths = tuple(_dotted(p) for p in re.findall(r"`([^`]+)`", cells[0]))
        last = cells[-1]
        if last.startswith(EVERYTHING):
            allowed = None
        else:
            allowed = tuple(d for d in (_dotted(s) for s in re.findall(r"`([^`]+)`", last)) if d in known)
        layers.append(Layer(paths, allowed))
    return layers


def _within(module: str, path: str) -> bool:
    return module == path or (path != "" and module.startswith(path + "."))


def layer_of(module: str, layers: list[Layer]) -> tuple[Layer, str] | None:
    """The row (and the path in it) with the longest path containing ``module``."""
    found = [(len(p), layer, p) for layer in layers for p in layer.paths if _within(module, p)]
    if not found:
        return None
    _, layer, path = max(found, key=lambda f: f[0])
    return layer, path


def may_import(importer: str, imported: str, layers: list[Layer]) -> bool:
    """Whether the table lets ``importer`` import ``imported`` (both dotted, package-relative)."""
    if imported == "" or imported == importer:  # the package itself (its ``__version__``), or itself
        return True
    mine, theirs = layer_of(importer, layers), layer_of(imported, layers)
    assert mine is not None, f"selfiescope/{importer.replace('.', '/')} is in no row of the layer table"
    assert theirs is not None, f"selfiescope/{imported.replace('.', '/')} is in no row of the layer table"
    if mine[0] is theirs[0] or mine[0].allowed is None:
        return True
    return any(_within(imported, a) for a in mine[0].allowed)


def _module(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports() -> dict[str, tuple[set[str], set[str]]]:
    """module -> (modules it imports at import time, modules it imports inside functions),
    package-relative and dotted ("" is the package itself)."""
    modules = {_module(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, tuple[set[str], set[str]]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        top, local = set(), set()
        tree = ast.parse(path.read_text(encoding="utf-8"))
        in_functions = {id(n) for f in ast.walk(tree) if isinstance(f, ast.FunctionDef | ast.AsyncFunctionDef)
                        for n in ast.walk(f)}
        type_only = {id(n) for i in ast.walk(tree) if isinstance(i, ast.If) and "TYPE_CHECKING" in ast.unparse(i.test)
                     for stmt in i.body for n in ast.walk(stmt)}
        for node in ast.walk(tree):
            if id(node) in type_only:
                continue
            targets: list[str] = []
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    parts = package.split(".") if package else []
                    base = ".".join(parts[:len(parts) - (node.level - 1)])
                else:
                    if not (node.module or "").startswith("selfiescope"):
                        continue
                    base = ""
                    node_module = (node.module or "").removeprefix("selfiescope").lstrip(".")
                    submodules = [f"{node_module}.{a.name}".lstrip(".") for a in node.names]
                    targets += [s for s in submodules if s in modules] or [node_module]
                if node.level:
                    target = ".".join(p for p in (base, node.module or "") if p)
                    submodules = [f"{target}.{a.name}".lstrip(".") for a in node.names]
                    # ``from . import b`` imports the module b; ``from .x import f`` the module x
                    targets += [s for s in submodules if s in modules] or [target]
            elif isinstance(node, ast.Import):
                targets = [a.name.removeprefix("selfiescope").lstrip(".") for a in node.names
                           if a.name == "selfiescope" or a.name.startswith("selfiescope.")]
            found = {t for t in targets if t in modules}
            (local if id(node) in in_functions else top).update(found)
        graph[name] = (top - {name}, local - {name})
    return graph


def _layers() -> list[Layer]:
    return parse_layer_table(ARCHITECTURE.read_text(encoding="utf-8"), set(_imports()))


def test_the_layer_table_covers_every_module_and_names_real_paths() -> None:
    layers = _layers()
    modules = set(_imports())
    for layer in layers:
        for path in layer.paths:
            assert any(_within(m, path) for m in modules), f"the layer table names selfiescope/{path}, which does not exist"
    for name in sorted(modules):
        assert layer_of(name, layers) is not None, f"selfiescope/{name.replace('.', '/')} is in no row of the layer table"


def test_every_import_is_one_the_layer_table_allows() -> None:
    layers = _layers()
    wrong = [f"{importer} imports {imported}" + (" (inside a function)" if imported in local - top else "")
             for importer, (top, local) in sorted(_imports().items())
             for imported in sorted(top | local) if not may_import(importer, imported, layers)]
    assert not wrong, "imports against docs/architecture.md's layer table:\n" + "\n".join(wrong)


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a path, or None."""
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                return [*path[path.index(dep):], dep]
            if dep not in state and (found := visit(dep, [*path, dep])):
                return found
        state[node] = 2
        return None

    for name in sorted(graph):
        if name not in state and (found := visit(name, [name])):
            return found
    return None


def _without_package_edges(name: str, deps: set[str]) -> set[str]:
    """A package's ``__init__`` importing its own submodules, and a module importing a package
    it is in, is how packages work, not a cycle."""
    return {d for d in deps if not d.startswith(name + ".") and not name.startswith(d + ".") and d}


def test_no_import_cycle_at_import_time() -> None:
    graph = {name: _without_package_edges(name, top) for name, (top, _) in _imports().items() if name}
    assert (cycle := _cycle(graph)) is None, "import cycle: " + " -> ".join(cycle)


def test_no_import_cycle_through_imports_inside_functions_among_the_upper_layers() -> None:
    """Between layers the table already forbids one direction; inside these layers an import
    moved into a function must not hide a cycle either."""
    graph = {name: _without_package_edges(name, top | local) for name, (top, local) in _imports().items()
             if name.startswith(CHECKED_FOR_HIDDEN_CYCLES)}
    assert (cycle := _cycle(graph)) is None, "import cycle: " + " -> ".join(cycle)


def test_no_cycle_among_the_pipelines_subpackages() -> None:
    parts: dict[str, set[str]] = {p: set() for p in PIPELINE_PARTS}
    for name, (top, local) in _imports().items():
        if (mine := name.split(".")[1:2]) and name.startswith("pipelines.") and mine[0] in parts:
            parts[mine[0]] |= {d.split(".")[1] for d in top | local
                               if d.startswith("pipelines.") and d.count(".") >= 1 and d.split(".")[1] != mine[0]}
    assert all(d in parts for deps in parts.values() for d in deps), parts
    assert (cycle := _cycle(parts)) is None, "pipelines subpackages in a cycle: " + " -> ".join(cycle)


def test_executors_are_named_by_import_path_not_imported() -> None:
    graph = _imports()
    for a, b in EXECUTOR_PAIRS:
        top, local = graph[a]
        assert b not in top | local, f"{a} imports {b}: name it by import path instead"


# --- the checker itself --------------------------------------------------------------------------------------

TOY_TABLE = """
| layer | what | may import |
|---|---|---|
| `selfiescope/core/` | the base | the standard library only |
| `selfiescope/pipelines/` | compose | `core`, `plugins` (never `tests/x.py`) |
| `selfiescope/pipelines/low/` | shared | `core` |
| `selfiescope/pipelines/high/` | on top | `core`, `pipelines/low` |
| `selfiescope/cli/` | typer | everything |
| `selfiescope/plugins/` | plugins | `core` |

after the table
"""
TOY_MODULES = {"core", "core.a", "pipelines", "pipelines.low", "pipelines.low.x", "pipelines.high",
               "pipelines.high.y", "pipelines.z", "cli", "cli.c", "plugins", "plugins.p"}


def test_the_table_parser_reads_paths_and_permissions() -> None:
    layers = parse_layer_table(TOY_TABLE, TOY_MODULES)
    assert [lay.paths for lay in layers] == [("core",), ("pipelines",), ("pipelines.low",), ("pipelines.high",),
                                             ("cli",), ("plugins",)]
    assert layers[0].allowed == () and layers[4].allowed is None
    assert layers[1].allowed == ("core", "plugins")  # `tests/x.py` names no module: prose, not a permission
    assert layers[3].allowed == ("core", "pipelines.low")


def test_the_checker_catches_a_lower_layer_importing_a_higher_one() -> None:
    layers = parse_layer_table(TOY_TABLE, TOY_MODULES)
    assert may_import("pipelines.high.y", "pipelines.low.x", layers)
    assert not may_import("pipelines.low.x", "pipelines.high.y", layers)  # the sub-row is stricter than its parent
    assert not may_import("core.a", "pipelines.z", layers)
    assert may_import("cli.c", "pipelines.high.y", layers) and may_import("core.a", "core", layers)
    assert not may_import("plugins.p", "pipelines.z", layers)


def test_an_import_inside_a_function_is_seen(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A cycle dodged by a function-local import is still a cycle; TYPE_CHECKING ones are not imports."""
    pkg = tmp_path / "selfiescope"
    (pkg / "core").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "core" / "__init__.py").write_text("")
    (pkg / "core" / "a.py").write_text("from . import b\n")
    (pkg / "core" / "b.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .c import C\n"
        "def f():\n    from .a import x\n    import selfiescope.core.c\n")
    (pkg / "core" / "c.py").write_text("")
    monkeypatch.setitem(globals(), "PACKAGE", pkg)
    graph = _imports()
    assert graph["core.a"] == ({"core.b"}, set())
    assert graph["core.b"] == (set(), {"core.a", "core.c"})
    assert _cycle({k: t | lo for k, (t, lo) in graph.items()}) == ["core.a", "core.b", "core.a"]


@given(st.lists(st.tuples(st.integers(0, 6), st.integers(0, 6)), max_size=20))
def test_cycle_finder_agrees_with_a_topological_sort(edges: list[tuple[int, int]]) -> None:
    graph = {str(n): set() for n in range(7)}
    for a, b in edges:
        if a != b:
            graph[str(a)].add(str(b))
    found = _cycle(graph)
    remaining = {k: set(v) for k, v in graph.items()}
    while True:  # Kahn: strip nodes that depend on nothing left
        leaves = [k for k, v in remaining.items() if not v]
        if not leaves:
            break
        for leaf in leaves:
            del remaining[leaf]
        for v in remaining.values():
            v.difference_update(leaves)
    assert (found is None) == (not remaining)
    if found:
        assert found[0] == found[-1] and all(b in graph[a] for a, b in zip(found, found[1:]))
