"""export: DIR appears complete or not at all. A stored file that cannot be read is left out and
counted (exit 1), a failure or a kill part-way leaves no half folder, and the rerun works."""

from __future__ import annotations

import csv
import errno
import subprocess
import sys
from pathlib import Path

import pytest
from manifest_helpers import manifest_query
from safety_helpers import cli, faces, json_out, no_traceback, project

from selfiescope.pipelines.dataset_care import export as export_module


def _stored(root: Path) -> list[str]:
    return [r["location"] for r in manifest_query(root, "SELECT location FROM images WHERE decision='accepted'")]


def _no_staging_left(parent: Path) -> bool:
    return not [p for p in parent.iterdir() if p.name.startswith(".") and ".export-" in p.name]


@pytest.fixture()
def photos_dataset(tmp_path) -> Path:
    faces(tmp_path / "in", 4)
    settings = project(tmp_path)
    result = cli("import", tmp_path / "in", "-l", "selfie", "-s", settings)
    assert result.exit_code == 0, result.output
    return settings


def test_a_missing_stored_file_is_left_out_and_counted(tmp_path, photos_dataset):
    root = tmp_path / "data"
    locations = _stored(root)
    (root / locations[0]).unlink()
    out = tmp_path / "out"
    result = cli("export", out, "-s", photos_dataset, "--json")
    assert result.exit_code == 1, result.output
    assert no_traceback(result)
    data = json_out(result)
    assert data["images"] == len(locations) - 1 and data["skipped"] == 1
    assert "1 stored files could not be read" in result.output
    with (out / "metadata.csv").open() as fh:
        listed = [row["file_name"] for row in csv.DictReader(fh)]
    assert len(listed) == len(locations) - 1 and all((out / name).is_file() for name in listed)
    assert _no_staging_left(tmp_path)


def test_a_failure_part_way_leaves_no_folder_and_the_rerun_works(tmp_path, photos_dataset, monkeypatch):
    real = export_module._write_csv

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", "metadata.csv")

    monkeypatch.setattr(export_module, "_write_csv", disk_full)
    out = tmp_path / "out"
    failed = cli("export", out, "-s", photos_dataset)
    assert failed.exit_code == 1 and no_traceback(failed), failed.output
    assert not out.exists() and _no_staging_left(tmp_path)
    monkeypatch.setattr(export_module, "_write_csv", real)
    again = cli("export", out, "-s", photos_dataset)
    assert again.exit_code == 0, again.output
    assert (out / "metadata.csv").is_file() and len(list((out / "selfie").iterdir())) == len(_stored(tmp_path / "data"))


def test_what_a_killed_export_left_is_tidied_and_nothing_else(tmp_path, photos_dataset):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    killed = tmp_path / f".out.export-{pid}"
    (killed / "selfie").mkdir(parents=True)
    (killed / export_module.STAGING_MARK).touch()
    mine = tmp_path / f".out.export-{pid + 1}"  # same pattern, not marked: not ours to remove
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    result = cli("export", tmp_path / "out", "-s", photos_dataset)
    assert result.exit_code == 0, result.output
    assert not killed.exists() and (mine / "notes.txt").read_text() == "mine"


def test_the_current_folder_or_one_holding_it_is_refused(tmp_path, photos_dataset, monkeypatch):
    """Renamed onto, the current folder would vanish from under the user's shell."""
    here = tmp_path / "empty"
    here.mkdir()
    monkeypatch.chdir(here)
    for target in (".", str(here / ".."), "/"):
        result = cli("export", target, "-s", photos_dataset)
        assert result.exit_code == 2 and no_traceback(result), (target, result.output)
        assert "current folder" in result.output
    assert here.is_dir() and not any(here.iterdir())
