"""Plugins are written against ``selfiescope.api`` only: every built-in plugin and both example
packages import nothing of selfiescope but ``selfiescope.api*`` and their own package, at
module level or inside a function, absolute or relative (``from ..core import x`` is
``selfiescope.core``). ``selfiescope.testing`` is the plugin authors' test kit, allowed in their
test modules only. One failure per offending import, naming file, line and module."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
ROOTS = {  # folder scanned -> the package path that its files' dotted names start from
    REPO / "selfiescope" / "plugins": REPO,
    REPO / "tests" / "example_plugin": REPO / "tests" / "example_plugin",
    REPO / "tests" / "example_storage": REPO / "tests" / "example_storage",
}


def module_name(path: Path, base: Path) -> tuple[str, bool]:
    """The dotted name of ``path`` under ``base``, and whether it is a package's ``__init__``."""
    parts = list(path.relative_to(base).with_suffix("").parts)
    is_package = parts[-1] == "__init__"
    return ".".join(parts[:-1] if is_package else parts), is_package


def imported_modules(node: ast.Import | ast.ImportFrom, module: str, is_package: bool) -> list[str]:
    """The absolute names an import statement loads (a relative one resolved against ``module``)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level == 0:
        return from_selfiescope(node.module or "", node)
    package = module.split(".") if is_package else module.split(".")[:-1]
    base = package[: len(package) - (node.level - 1)]
    if node.level - 1 > len(package):
        return ["<beyond the top-level package>"]
    return from_selfiescope(".".join(base + ([node.module] if node.module else [])), node)


def from_selfiescope(target: str, node: ast.ImportFrom) -> list[str]:
    """``from selfiescope import core`` loads ``selfiescope.core``; ``from selfiescope import Step``
    (a lazy re-export of the api) loads only ``selfiescope``."""
    if target != "selfiescope":
        return [target]
    package = REPO / "selfiescope"
    return [f"selfiescope.{alias.name}" if (package / alias.name).is_dir() or (package / f"{alias.name}.py").is_file()
            else "selfiescope" for alias in node.names]


def own_package(module: str) -> str:
    """A plugin's own package: ``selfiescope.plugins.instagram`` for its modules,
    ``selfiescope.plugins`` for the one-file built-in plugins (they share helpers, e.g. the
    stored file names), the top-level package for an example."""
    parts = module.split(".")
    if parts[:2] == ["selfiescope", "plugins"]:
        return ".".join(parts[:3]) if len(parts) > 3 else "selfiescope.plugins"
    return parts[0]


def allowed(imported: str, module: str) -> bool:
    if imported == "selfiescope.api" or imported.startswith("selfiescope.api."):
        return True
    own = own_package(module)
    if imported == own or imported.startswith(own + "."):
        return True
    if imported in ("selfiescope.testing", "selfiescope") or imported.startswith("selfiescope.testing."):
        # the test kit, in an example package's tests only; `selfiescope` alone for its lazy re-exports
        return imported == "selfiescope" or module.rsplit(".", 1)[-1].startswith(("test_", "conftest"))
    return not (imported == "selfiescope" or imported.startswith("selfiescope."))


def plugin_files() -> list[tuple[Path, Path]]:
    return sorted((path, base) for root, base in ROOTS.items() for path in root.rglob("*.py")
                  if "build" not in path.relative_to(root).parts)


FILES = plugin_files()


def test_the_scan_finds_the_plugins():  # a broken discovery must not make every check vacuous
    names = {module_name(path, base)[0] for path, base in FILES}
    assert {"selfiescope.plugins.store", "selfiescope.plugins.instagram.source", "selfiescope_sizegate",
            "selfiescope_blobstore"} <= names


@pytest.mark.parametrize("path,base", FILES, ids=[str(p.relative_to(REPO)) for p, _ in FILES])
def test_plugin_imports_only_the_public_api(path: Path, base: Path):
    module, is_package = module_name(path, base)
    bad = [f"{path.relative_to(REPO)}:{node.lineno} imports {name}"
           for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)))
           if isinstance(node, ast.Import | ast.ImportFrom)
           for name in imported_modules(node, module, is_package) if not allowed(name, module)]
    assert not bad, "import from selfiescope.api instead:\n" + "\n".join(bad)


@pytest.mark.parametrize("source,module,is_package,expected", [
    ("from ..core.web import within", "selfiescope.plugins.gallery", False, False),
    ("from ...cli.common import fail", "selfiescope.plugins.instagram.commands", False, False),
    ("def f():\n    from ...pipelines import record", "selfiescope.plugins.instagram.commands", False, False),
    ("import selfiescope.core.lock", "selfiescope.plugins.store", False, False),
    ("from ...core.hookspecs import hookimpl", "selfiescope.plugins.instagram", True, False),
    ("from ...api import Step", "selfiescope.plugins.instagram", True, True),
    ("from ..api.web import within", "selfiescope.plugins.gallery", False, True),
    ("from .feed import FeedReader", "selfiescope.plugins.instagram.source", False, True),
    ("from . import feed", "selfiescope.plugins.instagram", True, True),
    ("from selfiescope.api import Storage", "selfiescope_blobstore", True, True),
    ("from selfiescope.core.events import ImageEvent", "selfiescope_blobstore", True, False),
    ("from selfiescope.testing.synth import render_selfie", "test_sizegate", False, True),
    ("from selfiescope.testing.synth import render_selfie", "selfiescope_sizegate", True, False),
    ("from selfiescope.apis import x", "selfiescope_sizegate", True, False),
    ("import numpy", "selfiescope.plugins.dedup", False, True),
    ("from selfiescope import core", "selfiescope_sizegate", True, False),
    ("from .. import pipelines", "selfiescope.plugins.gallery", False, False),
    ("from ... import api", "selfiescope.plugins.instagram.feed", False, True),
    ("from selfiescope import Step, hookimpl", "selfiescope_sizegate", True, True),
    ("from .landmarks import model_file", "selfiescope.plugins.face_area", False, True),
    ("from ..dedup import compute_phash", "selfiescope.plugins.instagram.source", False, False),
])
def test_the_rule_itself(source: str, module: str, is_package: bool, expected: bool):
    nodes = [n for n in ast.walk(ast.parse(source)) if isinstance(n, ast.Import | ast.ImportFrom)]
    names = [name for node in nodes for name in imported_modules(node, module, is_package)]
    assert all(allowed(name, module) for name in names) is expected
