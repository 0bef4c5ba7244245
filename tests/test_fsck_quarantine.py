"""fsck --repair's quarantine is reached by forget, and fsck never stops at one bad entry."""

from __future__ import annotations

import json
import tempfile
import sqlite3
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from privacy_helpers import import_folder, jpeg, settings_for, stored_files, write_settings
from typer.testing import CliRunner

from selfiescope.cli import app

runner = CliRunner()
QUARANTINE = ".selfiescope-quarantine"


def cli(root: Path, *args: str):
    return runner.invoke(app, [*args, "--settings", str(write_settings(root))])


def one_photo(tmp: Path) -> tuple[Path, Path, Path]:
    folder = tmp / "in"
    folder.mkdir()
    photo = folder / "me.jpg"
    photo.write_bytes(jpeg(7))
    root = tmp / "data"
    assert import_folder(settings_for(root), folder, "selfie").accepted == 1
    return folder, photo, root


def flip_one_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def quarantined(root: Path) -> list[str]:
    base = root / QUARANTINE
    return sorted(p.relative_to(base).as_posix() for p in base.rglob("*") if p.is_file() and not p.name.startswith("."))


def test_forget_removes_the_quarantined_copy_of_a_photo(tmp_path: Path) -> None:
    folder, photo, root = one_photo(tmp_path)
    (stored,) = stored_files(root)
    flip_one_byte(root / stored)
    mended = cli(root, "fsck", "--repair")
    assert mended.exit_code == 0, mended.output
    assert quarantined(root) == [stored]
    assert "0 rows, 0 stored images; the quarantine holds 1 file" in mended.output
    checked = cli(root, "fsck")
    assert checked.exit_code == 0 and "quarantine holds 1 file" in checked.output, checked.output
    assert import_folder(settings_for(root), folder, "selfie").accepted == 1

    preview = cli(root, "forget", "--image", str(photo), "--dry-run")
    assert preview.exit_code == 0, preview.output
    assert f"{QUARANTINE}/{stored}" in preview.output
    assert quarantined(root) == [stored]  # a dry run removes nothing

    done = cli(root, "forget", "--image", str(photo), "--yes", "--json")
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout)["removed"]["quarantined copies"] == 1
    assert quarantined(root) == [] and stored_files(root) == set()
    assert (stored.split("/")[1][:16]) not in (root / QUARANTINE / ".index.jsonl").read_text()
    after = cli(root, "fsck")
    assert after.exit_code == 0 and "quarantine holds" not in after.output, after.output


def test_forget_finds_a_quarantined_copy_with_no_row_left(tmp_path: Path) -> None:
    """The row went with the repair and nothing was imported since: the copy is still found by its bytes."""
    folder, photo, root = one_photo(tmp_path)
    (stored,) = stored_files(root)
    orphan = root / "selfie" / "0123456789abcdef.jpg"
    orphan.write_bytes(photo.read_bytes())
    (root / stored).unlink()
    assert cli(root, "fsck", "--repair").exit_code == 0
    assert quarantined(root) == ["selfie/0123456789abcdef.jpg"]
    done = cli(root, "forget", "--image", str(photo), "--yes")
    assert done.exit_code == 0, done.output
    assert "quarantined copies 1" in done.output
    assert quarantined(root) == []
    assert import_folder(settings_for(root), folder, "selfie").accepted == 0  # and it is never collected again


def test_a_link_in_the_storage_layout_is_reported_never_followed(tmp_path: Path) -> None:
    folder, photo, root = one_photo(tmp_path)
    (stored,) = stored_files(root)
    outside = tmp_path / "u.jpg"
    outside.write_bytes(photo.read_bytes())
    out_link = root / "selfie" / "0123456789abcdef.jpg"
    out_link.symlink_to(outside)
    (root / "portrait").mkdir()
    (root / "portrait" / "fedcba9876543210.jpg").write_bytes(jpeg(8))  # an orphan: still mended
    in_link = root / "selfie" / "aaaabbbbccccdddd.jpg"
    in_link.symlink_to(Path("..") / "portrait" / "fedcba9876543210.jpg")

    checked = cli(root, "fsck", "--json")
    assert checked.exit_code == 1, checked.output
    kinds = {f["location"]: f["kind"] for f in json.loads(checked.stdout)["findings"]}
    assert kinds == {"selfie/0123456789abcdef.jpg": "link", "selfie/aaaabbbbccccdddd.jpg": "link",
                     "portrait/fedcba9876543210.jpg": "orphan"}
    assert json.loads(checked.stdout)["stored"] == 2  # links are not stored images

    mended = cli(root, "fsck", "--repair")
    assert mended.exit_code == 0, mended.output
    assert "Traceback" not in mended.output and "a link, not a stored file: left alone" in mended.output
    assert out_link.is_symlink() and in_link.is_symlink() and outside.read_bytes() == photo.read_bytes()
    assert quarantined(root) == ["portrait/fedcba9876543210.jpg"]
    assert "1 rows, 1 stored images; 2 link(s) in the storage layout left alone; the quarantine holds 1 file" \
        in mended.output.replace("\n", " ")


def test_a_row_whose_stored_file_became_a_link_is_a_problem_left_alone(tmp_path: Path) -> None:
    folder, photo, root = one_photo(tmp_path)
    (stored,) = stored_files(root)
    outside = tmp_path / "u.jpg"
    outside.write_bytes((root / stored).read_bytes())
    (root / stored).unlink()
    (root / stored).symlink_to(outside)
    for args in (("fsck",), ("fsck", "--repair")):
        result = cli(root, *args)
        assert result.exit_code == 1, result.output
        assert "link" in result.output and "Traceback" not in result.output
    assert (root / stored).is_symlink() and outside.exists()


def test_unrecorded_writes_left_by_a_killed_run_fail_a_plain_check(tmp_path: Path) -> None:
    folder, photo, root = one_photo(tmp_path)
    db = sqlite3.connect(root / "manifest.sqlite")
    db.execute("INSERT INTO store_intents(content_hash, id, label, at) VALUES (?, ?, 'selfie', 0)",
               ("f" * 64, "f" * 16))
    db.commit()
    db.close()
    checked = cli(root, "fsck")
    assert checked.exit_code == 1, checked.output
    assert "unrecorded writes: 1" in checked.output and "fsck --repair" in checked.output
    mended = cli(root, "fsck", "--repair")
    assert mended.exit_code == 0, mended.output
    assert cli(root, "fsck").exit_code == 0


@hsettings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(old=st.binary(max_size=64), new=st.binary(max_size=4096), name=st.sampled_from(["me.jpg", ".index.jsonl"]))
def test_a_synced_replace_leaves_the_new_bytes_or_the_old_file_and_never_a_temp(tmp_path: Path, old: bytes, new: bytes,
                                                                                 name: str) -> None:
    from selfiescope.core.quarantine import replace_synced

    folder = Path(tempfile.mkdtemp(dir=tmp_path))  # one per example: hypothesis shares tmp_path
    target = folder / name
    target.write_bytes(old)
    replace_synced(target, new)
    assert target.read_bytes() == new and [p.name for p in folder.iterdir()] == [name]
    blocked = folder / "a-folder"  # a rename over a non-empty folder fails after the temp file is written
    (blocked / "inside").mkdir(parents=True)
    with pytest.raises(OSError):
        replace_synced(blocked, new)
    assert sorted(p.name for p in folder.iterdir()) == sorted([name, "a-folder"])
