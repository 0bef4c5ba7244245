"""``clean --move-rejected-to`` over a folder whose files cannot be removed (a read-only
bind mount): the move did not happen, so no copy is left at the target."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from clean_helpers import variant
from typer.testing import CliRunner

from selfiescope.cli import app

pytestmark = pytest.mark.faces


def _mount(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["mount", *args], capture_output=True, text=True)


def test_a_move_from_a_read_only_folder_leaves_each_photo_in_one_place(faces_dir: Path, tmp_path: Path) -> None:
    src, ro, target = tmp_path / "src", tmp_path / "ro", tmp_path / "rejects"
    src.mkdir()
    ro.mkdir()
    (src / "tiny.jpg").write_bytes(variant(faces_dir / "portrait" / "caltech_image_0001.jpg", "jpeg", 40))
    (src / "notes.png").write_bytes(b"<html>not found</html>")
    shutil.copy(faces_dir / "portrait" / "caltech_image_0001.jpg", src / "face.jpg")
    before = {p.name: p.read_bytes() for p in src.iterdir()}
    if shutil.which("mount") is None:
        pytest.skip("no mount command")
    bound = _mount("--bind", str(src), str(ro))
    if bound.returncode != 0:
        pytest.skip(f"cannot bind-mount here (needs root): {bound.stderr.strip()}")
    try:
        remount = _mount("-o", "remount,bind,ro", str(ro))
        if remount.returncode != 0:
            pytest.skip(f"cannot remount read-only here: {remount.stderr.strip()}")
        settings = tmp_path / "settings.toml"
        settings.write_text(f'[storage]\nroot = "{tmp_path / "root"}"\n')
        res = CliRunner().invoke(app, ["clean", str(ro), "--move-rejected-to", str(target),
                                       "--settings", str(settings), "--json"])
        assert res.exit_code == 1, res.output
        data = json.loads(res.stdout)
        assert data["rejected"] >= 2 and data["moved"] == 0
        assert all("could not move it" in e for e in data["errors"]) and len(data["errors"]) == data["rejected"]
        assert {p.name: p.read_bytes() for p in ro.iterdir()} == before
        assert not [p for p in target.rglob("*") if not p.is_dir()]
    finally:
        subprocess.run(["umount", str(ro)], capture_output=True)
    assert {p.name: p.read_bytes() for p in src.iterdir()} == before
