"""``import`` and ``clean`` check their folder arguments up front: something that is there
but is not a folder (a pipe, a device) is a usage error that says what it is."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from selfiescope.cli import app

runner = CliRunner()


@pytest.fixture
def settings(tmp_path: Path) -> Path:
    path = tmp_path / "settings.toml"
    path.write_text(f'[storage]\nroot = "{tmp_path / "root"}"\n')
    return path


@pytest.mark.parametrize("command", [["import", "--label", "x"], ["clean"]])
@pytest.mark.parametrize("what", ["pipe", "device"])
def test_a_path_that_is_not_a_folder_is_a_usage_error(tmp_path: Path, settings: Path, command: list[str], what: str) -> None:
    if what == "pipe":
        target = tmp_path / "ff"
        os.mkfifo(target)
    else:
        target = Path("/dev/zero")
    res = runner.invoke(app, [command[0], str(target), *command[1:], "--settings", str(settings)])
    assert res.exit_code == 2, res.output
    assert f"not a folder (a {what})" in " ".join(res.output.split())
    assert res.exception is None or isinstance(res.exception, SystemExit)
    assert not (tmp_path / "root").exists()


def test_clean_of_a_file_says_it_is_a_file(tmp_path: Path, settings: Path) -> None:
    (tmp_path / "a.jpg").write_bytes(b"x")
    res = runner.invoke(app, ["clean", str(tmp_path / "a.jpg"), "--settings", str(settings)])
    assert res.exit_code == 2 and "not a folder (a file)" in " ".join(res.output.split())


@pytest.mark.parametrize("command", [["import", "--label", "x"], ["clean"]])
def test_entries_that_are_not_regular_files_are_counted(tmp_path: Path, settings: Path, command: list[str]) -> None:
    folder = tmp_path / "mixed"
    folder.mkdir()
    os.mkfifo(folder / "pipe.jpg")
    (folder / "zero.jpg").symlink_to("/dev/zero")
    (folder / "notes.png").write_bytes(b"<html>not found</html>")
    args = [command[0], str(folder), *command[1:], "--settings", str(settings)]
    res = runner.invoke(app, [*args, "--json"])
    assert res.exit_code == 0, res.output
    assert '"skipped_not_regular_files": 2' in res.stdout
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "2 entries that are not regular files" in " ".join(res.output.split())
