"""What the user reads: every rejection names the setting that decided it (with its value), a run
that kept nothing says so, and no message loses a ``[section]`` to rich markup."""

from __future__ import annotations

import ast
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings as hsettings, strategies as st
from PIL import Image
from rich.table import Table
from typer.testing import CliRunner

import selfiescope
from selfiescope.cli import app
from selfiescope.cli.common import make_console, tagged
from selfiescope.core.settings import settings_from_dict
from selfiescope.pipelines.dataset_care.class_losses import (
    SETTING_OF_REASON, loss_warnings, nothing_kept_line, setting_text,
)

PACKAGE = Path(selfiescope.__file__).parent


def _settings_file(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "s.toml"
    path.write_text(f'[storage]\nroot = "{tmp_path / "data"}"\n{extra}')
    return path


def _tiny_photos(folder: Path, n: int, side: int = 50) -> Path:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(7)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (side, side, 3), dtype=np.uint8)).save(folder / f"t{i}.png")
    return folder


# --- the setting that decided a rejection ------------------------------------------------

def test_each_option_is_shown_with_its_own_value():
    haar = settings_from_dict({"plugins": {"face_area": {"detector": "haar"}, "decode": {"min_side": 80}}})
    assert setting_text("no_face", haar) == "[plugins.face_area] detector = 'haar', min_face_area = 0.15"
    assert setting_text("face_too_small", haar) == "[plugins.face_area] min_face_area = 0.15"
    assert setting_text("too_small", haar) == "[plugins.decode] min_side = 80"
    assert setting_text("corrupt", haar) is None  # no setting decides an unreadable file
    warning = loss_warnings([{"reason": "no_face", "rates": {"a": 0.5, "b": 0.1}, "rejected": {"a": 5, "b": 1}}], haar)[0]
    assert "detector = 'haar', min_face_area = 0.15" in warning and "min_face_area = 'haar'" not in warning


def test_a_pipelines_own_option_is_named_in_its_own_section():
    s = settings_from_dict({"pipelines": {"mine": {"kind": "import", "source": "folder", "paths": ["."], "label": "x",
                                                   "options": {"decode": {"min_side": 200}}}}})
    assert setting_text("too_small", s, ("mine", s.pipelines["mine"])) == "[pipelines.mine.options.decode] min_side = 200"
    assert setting_text("too_small", s) == "[plugins.decode] min_side = 64"


@hsettings(max_examples=40, deadline=None)
@given(st.dictionaries(st.sampled_from(sorted(SETTING_OF_REASON)), st.integers(1, 500), min_size=1),
       st.integers(0, 5))
def test_nothing_kept_names_every_reason_and_its_setting(reasons, failed):
    defaults = settings_from_dict({})
    line = nothing_kept_line(sum(reasons.values()) + failed, reasons, failed, defaults)
    assert line is not None and line.startswith("nothing kept")
    for code, n in reasons.items():
        assert f"{code} {n}: decided by {setting_text(code, defaults)}" in line
    assert nothing_kept_line(0, {}, 0, defaults) is None


# --- summaries of the collecting commands ---------------------------------------------------

def test_import_of_photos_all_too_small_names_the_setting_and_says_nothing_was_kept(tmp_path):
    folder = _tiny_photos(tmp_path / "in", 4)
    result = CliRunner().invoke(app, ["import", str(folder), "--label", "selfie", "-s", str(_settings_file(tmp_path))])
    assert result.exit_code == 0, result.output  # rejections are decisions; the run did what was asked
    assert "[plugins.decode] min_side = 64" in result.stdout
    assert "nothing kept: of 4 images, 4 rejected (too_small 4: decided by [plugins.decode] min_side = 64)" in result.stdout
    as_json = CliRunner().invoke(app, ["import", str(folder), "--label", "selfie", "--json",
                                       "-s", str(_settings_file(tmp_path, '[plugins.decode]\nmin_side = 60\n'))])
    data = json.loads(as_json.stdout)
    assert data["rejection_settings"] == {"too_small": "[plugins.decode] min_side = 60"}
    assert data["nothing_kept"] and "min_side = 60" in data["nothing_kept"][0]


def test_clean_of_faceless_photos_names_the_detector_and_threshold(tmp_path):
    folder = _tiny_photos(tmp_path / "in", 3, side=120)
    result = CliRunner().invoke(app, ["clean", str(folder), "-s", str(_settings_file(tmp_path))])
    assert result.exit_code == 0, result.output
    assert "no_face" in result.stdout
    assert "[plugins.face_area] detector = 'hog', min_face_area = 0.1" in result.stdout
    assert "nothing kept: of 3 images" in result.stdout


# --- rich markup: the class ------------------------------------------------------------------

@pytest.mark.parametrize("text", ["[plugins.decode] min_side", "[red]not a colour[/red]", "a[b]c \\[x]", "[/]"])
def test_the_consoles_print_bracketed_text_as_it_is(text):
    buffer = io.StringIO()
    console = make_console(file=buffer)
    table = Table(title=text)
    table.add_column(text)
    table.add_row(text)
    console.print(text)
    console.print(table)
    console.print(tagged("warning:", "yellow", f" {text}"))
    printed = buffer.getvalue()
    assert printed.count(text) == 5, printed  # title, header, cell, line, tagged line


MARKUP = re.compile(r"\[/?(?:bold|dim|italic|red|green|yellow|blue|cyan|magenta|white|link)\b[^\]]*\]|\[/\]")
PRINTING_MODULES = [*sorted((PACKAGE / "cli").glob("*.py")), PACKAGE / "demo.py", PACKAGE / "api" / "cli.py",
                    *sorted((PACKAGE / "plugins").glob("*/commands.py"))]


@pytest.mark.parametrize("module", PRINTING_MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_command_styles_text_with_markup(module):
    """Markup is off on every console, so a string holding markup would print its tags; and
    ``rich.markup.escape`` would print its backslashes. Colour comes from ``tagged``/``Text``."""
    tree = ast.parse(module.read_text())
    problems = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and MARKUP.search(node.value):
            problems.append(f"line {node.lineno}: markup in {node.value!r}")
        if isinstance(node, ast.keyword) and node.arg == "markup" and not (
                isinstance(node.value, ast.Constant) and node.value.value is False):
            problems.append(f"line {node.lineno}: markup= other than False")
        if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", "")) in ("TextColumn", "Console") \
                and not any(k.arg == "markup" for k in node.keywords):  # both read markup unless told not to
            problems.append(f"line {node.lineno}: {ast.unparse(node.func)} without markup=False")
        if isinstance(node, ast.ImportFrom) and node.module == "rich.markup":
            problems.append(f"line {node.lineno}: imports rich.markup")
    assert not problems, problems


def test_training_names_the_setting_behind_each_image_it_left_out(tmp_path):
    from privacy_helpers import import_folder, settings_for
    from train_helpers import train_settings

    from selfiescope.cli.model import left_out_lines
    from selfiescope.core.app import App
    from selfiescope.pipelines.model.train import train

    root = tmp_path / "data"
    for label, seed in (("selfie", 1), ("portrait", 2)):
        folder = tmp_path / label
        folder.mkdir()
        rng = np.random.default_rng(seed)
        for i, side in enumerate([120] * 6 + [80] * 2):
            Image.fromarray(rng.integers(0, 255, (side, side + 3, 3), dtype=np.uint8)).save(folder / f"{label}{i}.png")
        import_folder(settings_for(root), folder, label)  # min_side 64 then: all stored
    app = App.create(train_settings(root, tmp_path / "m", ["image"], {"decode": {"min_side": 100}}, folds=3, report=False))
    result = train(app, "t")  # the setting was raised since collection: the 80 px photos cannot be used
    assert left_out_lines(result, app) == ["too_small 4: decided by [plugins.decode] min_side = 100"]
