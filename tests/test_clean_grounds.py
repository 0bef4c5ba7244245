"""What makes a file removable by ``clean``: only a content rejection by a step of the chain.
A photo the dataset refuses because it was forgotten is the user's own copy: it stays."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import pytest
from PIL import Image, ImageOps
from typer.testing import CliRunner

from selfiescope.cli import app
from selfiescope.pipelines.collecting.clean_plan import build_plan

pytestmark = pytest.mark.faces
runner = CliRunner()


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def forgotten_copies(faces_dir: Path, tmp_path: Path) -> tuple[Path, Path, dict[str, str]]:
    """A dataset that imported a photo and forgot it, and a folder holding the user's only
    copies of it: the same file and a mirrored one."""
    photo = faces_dir / "portrait" / "caltech_image_0001.jpg"
    if not photo.is_file():
        pytest.skip(f"{photo} is absent")
    settings = tmp_path / "settings.toml"
    settings.write_text(f'[storage]\nroot = "{tmp_path / "data"}"\n')
    first, mine = tmp_path / "a", tmp_path / "mine"
    first.mkdir()
    mine.mkdir()
    (first / "x.jpg").write_bytes(photo.read_bytes())
    res = runner.invoke(app, ["import", str(first), "--label", "selfie", "--settings", str(settings)])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["forget", "--image", str(first / "x.jpg"), "--yes", "--settings", str(settings)])
    assert res.exit_code == 0, res.output
    (mine / "me.jpg").write_bytes(photo.read_bytes())
    buf = io.BytesIO()
    ImageOps.mirror(Image.open(photo).convert("RGB")).save(buf, "JPEG", quality=90)
    (mine / "me_mirror.jpg").write_bytes(buf.getvalue())
    return settings, mine, {p.name: _sha(p) for p in mine.iterdir()}


@pytest.mark.parametrize("how", ["delete", "move"])
def test_forgotten_photos_are_never_removed(forgotten_copies, tmp_path: Path, how: str) -> None:
    settings, mine, before = forgotten_copies
    action = ["--delete-rejected"] if how == "delete" else ["--move-rejected-to", str(tmp_path / "rejects")]
    args = ["clean", str(mine), "--output", str(tmp_path / "data"), *action, "--settings", str(settings)]
    res = runner.invoke(app, [*args, "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["rejected_by_reason"] == {"forgotten": 2}
    assert data["moved"] == data["deleted"] == 0
    assert len(data["skipped"]) == 2 and all("rejected forgotten" in line for line in data["skipped"])
    assert {p.name: _sha(p) for p in mine.iterdir()} == before
    assert not (tmp_path / "rejects").exists() or not any((tmp_path / "rejects").rglob("*.jpg"))
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "left in place" in res.output and "forgotten" in res.output
    assert {p.name: _sha(p) for p in mine.iterdir()} == before


def _rejected(path: Path, code: str, by: str | None) -> dict:
    return {"path": str(path), "outcome": "rejected", "code": code, "rejected_by": by,
            "content_hash": _sha(path), "duplicate_of": None}


def test_only_a_step_of_the_chain_gives_grounds(tmp_path: Path) -> None:
    files = {}
    for name in ("small", "gate", "unknown", "source", "forgotten"):
        (tmp_path / name).write_bytes(name.encode())
        files[name] = tmp_path / name
    plan = build_plan([
        _rejected(files["small"], "too_small", "face_area"),
        _rejected(files["gate"], "some_new_code", "forget"),
        _rejected(files["unknown"], "no_face", None),
        _rejected(files["source"], "not_image", "folder"),
        _rejected(files["forgotten"], "forgotten", "face_area"),
    ], "delete", lambda removing: (lambda h: None), ["decode", "face_area", "dedup"])
    actions = {Path(e["path"]).name: e["action"] for e in plan}
    assert actions == {"small": "delete", "gate": "keep", "unknown": "keep", "source": "keep", "forgotten": "keep"}
