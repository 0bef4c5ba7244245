"""``selfiescope clean``: report by reason, never touch originals unless asked."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from selfiescope.core.app import App
from selfiescope.cli import app
from selfiescope.core.settings import SettingsError, settings_from_dict
from selfiescope.pipelines.collecting.clean import clean

pytestmark = pytest.mark.faces

KEPT = ["lin-manuel-miranda.png", "alex-lacamoire.png"]
EXPECTED_REJECTS = {"wide.jpg": "face_too_small", "broken.jpg": "truncated", "copy.png": "duplicate", "notes.png": "not_image"}


@pytest.fixture
def messy(faces_dir: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in KEPT:
        shutil.copy(faces_dir / "portrait" / name, folder / name)
    shutil.copy(faces_dir / "portrait" / "obama-480p.jpg", folder / "wide.jpg")
    (folder / "broken.jpg").write_bytes((faces_dir / "portrait" / "obama-720p.jpg").read_bytes()[:5000])
    shutil.copy(faces_dir / "portrait" / KEPT[0], folder / "copy.png")
    (folder / "notes.png").write_bytes(b"<html>not found</html>")
    return folder


def pixels(data: bytes) -> bytes:
    from io import BytesIO

    from PIL import Image

    with Image.open(BytesIO(data)) as im:
        return im.convert("RGBA").tobytes()


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


def settings(tmp_path: Path):
    return settings_from_dict({"storage": {"root": str(tmp_path / "unused-root")}})


def decisions(result: dict) -> dict[str, str | None]:
    return {Path(f["path"]).name: (None if f["kept"] else f["code"]) for f in result["files"]}


def test_report_only_leaves_everything_in_place(messy: Path, tmp_path: Path) -> None:
    before = snapshot(messy)
    result = clean(App.create(settings(tmp_path)), messy)
    got = decisions(result)
    assert sorted(n for n, code in got.items() if code is None) in (sorted(KEPT), sorted([KEPT[1], "copy.png"]))
    rejected = {n: c for n, c in got.items() if c is not None}
    assert sorted(rejected.values()) == sorted(EXPECTED_REJECTS.values())
    assert result["kept"] == 2 and result["rejected"] == 4
    assert result["rejected_by_reason"] == {c: 1 for c in EXPECTED_REJECTS.values()}
    assert snapshot(messy) == before
    assert not (tmp_path / "unused-root").exists()  # report mode keeps its manifest in a temp folder


def test_move_rejected_moves_only_rejected_files_by_reason(messy: Path, tmp_path: Path) -> None:
    before = snapshot(messy)
    dest = tmp_path / "rejected"
    result = clean(App.create(settings(tmp_path)), messy, move_rejected_to=dest)
    assert result["moved"] == 4
    left = snapshot(messy)
    assert len(left) == 2 and all(left[n] == before[n] for n in left)
    moved = {p.parent.name: p.name for p in dest.rglob("*") if p.is_file()}
    assert set(moved) == set(EXPECTED_REJECTS.values())
    assert moved["face_too_small"] == "wide.jpg" and (dest / "face_too_small" / "wide.jpg").read_bytes() == before["wide.jpg"]


def test_delete_only_with_the_explicit_flag(messy: Path, tmp_path: Path) -> None:
    result = clean(App.create(settings(tmp_path)), messy, delete_rejected=True)
    assert result["deleted"] == 4 and len(snapshot(messy)) == 2
    with pytest.raises(SettingsError, match="either"):
        clean(App.create(settings(tmp_path)), messy, delete_rejected=True, move_rejected_to=tmp_path / "x")


def test_output_builds_a_new_dataset_and_keeps_originals(messy: Path, tmp_path: Path) -> None:
    before = snapshot(messy)
    out = tmp_path / "dataset"
    result = clean(App.create(settings(tmp_path)), messy, output=out, label="portrait")
    assert result["kept"] == 2
    # The stored copies are the originals' pixels; free-text and XMP chunks (where a place may
    # hide) are not carried over under the default strip_metadata = "location".
    stored = sorted(pixels(p.read_bytes()) for p in (out / "portrait").iterdir())
    assert stored == sorted(pixels(before[n]) for n in KEPT)
    assert (out / "manifest.sqlite").is_file()
    assert snapshot(messy) == before


def test_without_dedup_the_copy_is_kept(messy: Path, tmp_path: Path) -> None:
    result = clean(App.create(settings(tmp_path)), messy, dedup=False)
    assert result["kept"] == 3 and "duplicate" not in result["rejected_by_reason"]


def test_cli_clean_json(messy: Path, tmp_path: Path) -> None:
    settings_file = tmp_path / "settings.toml"
    settings_file.write_text(f'[storage]\nroot = "{tmp_path / "root"}"\n')
    res = CliRunner().invoke(app, ["clean", str(messy), "--settings", str(settings_file), "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["kept"] == 2 and data["rejected_by_reason"]["not_image"] == 1
    res = CliRunner().invoke(app, ["clean", str(tmp_path / "missing"), "--settings", str(settings_file)])
    assert res.exit_code == 2


def test_cli_clean_title_says_what_the_run_does(messy: Path, tmp_path: Path) -> None:
    settings_file = tmp_path / "settings.toml"
    settings_file.write_text(f'[storage]\nroot = "{tmp_path / "root"}"\n')

    def title(*args: str) -> str:
        res = CliRunner().invoke(app, ["clean", str(messy), "--settings", str(settings_file), *args])
        assert res.exit_code == 0, res.output
        return " ".join(res.output.split())

    assert "(report only)" in title()
    assert "would delete rejected originals" in title("--delete-rejected", "--dry-run")
    moving = title("--move-rejected-to", str(tmp_path / "rejects"))
    assert "moving rejected originals to" in moving and "report only" not in moving
    deleting = title("--delete-rejected", "--output", str(tmp_path / "out"))
    assert "kept images stored into" in deleting and "deleting rejected originals" in deleting
    assert "report only" not in deleting
