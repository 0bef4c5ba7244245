"""`selfiescope forget` as a user meets it: a dry run writes nothing (read-only roots too),
every key takes non-UTF-8 bytes, --wait queues behind another run, killed runs are marked,
and --owner says how many stored images have no known owner."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import fill_up
from privacy_helpers import FakePost, collect_posts, import_folder, jpeg, settings_for, stored_files
from test_forget import forget_cli

from selfiescope.core.lock import RootLock
from selfiescope.core.manifest import Manifest
from selfiescope.core.privacy import KEY_FILE

KEYS = {"--image": "p1.jpg", "--owner": "someone", "--post": "C1", "--label": "selfie"}


def snapshot(root: Path) -> dict[str, tuple[bytes, int, int]]:
    """Every file under ``root``: its bytes, mtime and mode."""
    out = {}
    for path in sorted(root.rglob("*")):
        if path.is_file():
            st = path.stat()
            out[path.relative_to(root).as_posix()] = (path.read_bytes(), st.st_mtime_ns, st.st_mode)
    return out


@pytest.fixture
def imported(tmp_path: Path) -> tuple[Path, Path]:
    """An imported dataset (no owners, so no key yet), a killed run's temp file and run row."""
    root, folder = tmp_path / "data", tmp_path / "photos"
    folder.mkdir()
    for i in range(3):
        (folder / f"p{i}.jpg").write_bytes(jpeg(700 + i))
    assert import_folder(settings_for(root), folder, "selfie").accepted == 3
    (root / "selfie" / ".abc.tmp-deadbeef").write_bytes(b"half a photo")
    m = Manifest.at_root(root)
    m.execute("INSERT INTO runs(pipeline, started, status) VALUES ('import', 1, 'running')")
    m.close()
    assert not (root / KEY_FILE).exists()
    return root, folder


@pytest.mark.parametrize("key", list(KEYS))
def test_a_dry_run_writes_nothing(imported: tuple[Path, Path], key: str) -> None:
    root, folder = imported
    value = str(folder / KEYS[key]) if key == "--image" else KEYS[key]
    before = snapshot(root)
    result = forget_cli(root, key, value, "--dry-run", "--json")
    assert result.exit_code in (0, 1), result.output
    assert snapshot(root) == before  # no key made, lock file untouched, temp file kept, run row as it was
    assert json.loads(result.stdout)["dry_run"] is True
    if key in ("--image", "--label"):
        assert result.exit_code == 0 and json.loads(result.stdout)["matched"]["images"] in (1, 3)


@pytest.fixture
def read_only(tmp_path: Path) -> Iterator[callable]:
    """Make a folder read-only with a read-only bind mount (root only: root ignores modes)."""
    if os.geteuid() != 0:
        pytest.skip("needs root for a read-only bind mount")
    mounted: list[Path] = []

    def make(path: Path) -> None:
        for args in (["mount", "--bind", str(path), str(path)], ["mount", "-o", "remount,ro,bind", str(path)]):
            if subprocess.run(args, capture_output=True).returncode != 0:
                pytest.skip(f"cannot {' '.join(args[:3])} here")
            if args[1] == "--bind":
                mounted.append(path)

    yield make
    for path in mounted:  # lazily when a failing run left a file open there
        if subprocess.run(["umount", str(path)], capture_output=True).returncode:
            subprocess.run(["umount", "-l", str(path)], capture_output=True)


def test_a_dry_run_works_on_a_read_only_dataset(imported: tuple[Path, Path], read_only) -> None:
    root, _ = imported
    read_only(root)
    before = snapshot(root)
    result = forget_cli(root, "--label", "selfie", "--dry-run", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["matched"]["images"] == 3
    # Without --dry-run: one clear line, nothing claimed as saved.
    real = forget_cli(root, "--label", "selfie", "--yes")
    assert real.exit_code == 2 and "Traceback" not in real.output, real.output
    said = " ".join(real.output.split())
    assert "nothing was removed" in said and "saved" not in said
    assert snapshot(root) == before


def test_a_dry_run_with_a_live_writer_reads_its_pages(imported: tuple[Path, Path]) -> None:
    """With a -wal file beside the manifest (a writer is running) the dry run still sees its rows."""
    root, _ = imported
    writer = Manifest.at_root(root)
    try:
        writer.execute("PRAGMA wal_autocheckpoint=0")
        writer.execute("UPDATE images SET label='portrait' WHERE id=(SELECT id FROM images LIMIT 1)")
        assert (root / "manifest.sqlite-wal").exists()
        result = forget_cli(root, "--label", "portrait", "--dry-run", "--json")
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["matched"]["images"] == 1
    finally:
        writer.close()


@pytest.mark.parametrize("key", list(KEYS))
@pytest.mark.parametrize("mode", ["--dry-run", "--yes"])
def test_non_utf8_values_of_every_key_are_taken(imported: tuple[Path, Path], key: str, mode: str) -> None:
    root, _ = imported
    odd = "x\udcff/p/\udcfe"  # what Python makes of the bytes x\xff/p/\xfe in argv
    result = forget_cli(root, key, odd, mode)
    assert result.exit_code in (1, 2), result.output  # nothing matches: exit 1; never a traceback
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert len(stored_files(root)) == 3


def test_an_undecodable_file_name_given_to_image_is_found(tmp_path: Path) -> None:
    root, folder = tmp_path / "data", tmp_path / "photos"
    folder.mkdir()
    odd = os.fsdecode(b"caf\xe9.jpg")
    (folder / odd).write_bytes(jpeg(900))
    (folder / "plain.jpg").write_bytes(jpeg(901))
    assert import_folder(settings_for(root), folder, "selfie").accepted == 2
    result = forget_cli(root, "--image", str(folder / odd), "--yes", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["matched"]["images"] == 1 and len(stored_files(root)) == 1


def test_forget_waits_for_the_lock_with_wait(imported: tuple[Path, Path]) -> None:
    root, _ = imported
    holder = RootLock(root).acquire()
    try:
        busy = forget_cli(root, "--label", "selfie", "--yes")
        assert busy.exit_code == 2 and "--wait" in busy.output, busy.output
        threading.Timer(1.0, holder.release).start()
        started = time.monotonic()
        waited = forget_cli(root, "--label", "selfie", "--yes", "--wait")
        assert waited.exit_code == 0, waited.output
        assert time.monotonic() - started >= 0.5  # it did queue behind the holder
    finally:
        holder.release()
    assert stored_files(root) == set()


def test_a_killed_run_is_marked_interrupted_by_forget_not_by_its_dry_run(imported: tuple[Path, Path]) -> None:
    root, _ = imported

    def statuses() -> list[str]:
        m = Manifest.at_root(root)
        try:
            return [r[0] for r in m.query("SELECT status FROM runs ORDER BY id")]
        finally:
            m.close()

    assert "running" in statuses()
    assert forget_cli(root, "--label", "nothing-here", "--dry-run").exit_code == 1
    assert "running" in statuses()
    result = forget_cli(root, "--label", "nothing-here", "--yes", "--json")
    assert result.exit_code == 1, result.output
    assert "running" not in statuses() and "interrupted" in statuses()
    assert json.loads(result.stdout)["stale_runs_marked_interrupted"] == 1


def test_forget_owner_says_how_many_stored_images_have_no_owner(tmp_path: Path) -> None:
    root, folder = tmp_path / "data", tmp_path / "photos"
    folder.mkdir()
    for i in range(2):
        (folder / f"p{i}.jpg").write_bytes(jpeg(800 + i))
    settings = settings_for(root)
    assert import_folder(settings, folder, "selfie").accepted == 2
    collect_posts(settings, "t", "selfie", [FakePost("Z1", "zoe", "", jpeg(810)), FakePost("Z2", "", "", jpeg(811))])
    result = forget_cli(root, "--owner", "zoe", "--yes", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["stored_without_owner"] == 3
    text = forget_cli(root, "--owner", "nobody", "--dry-run")
    assert "3 stored images have no known owner" in text.output


def test_card_and_stats_report_a_killed_run_without_writing_the_runs_table(imported: tuple[Path, Path]) -> None:
    from typer.testing import CliRunner

    from selfiescope.cli import app
    from privacy_helpers import write_settings

    root, _ = imported
    settings = write_settings(root)
    card = CliRunner().invoke(app, ["card", "--settings", str(settings), "--json"])
    assert card.exit_code == 0, card.output
    assert json.loads(card.stdout)["collection"]["runs_by_status"] == {"finished": 1, "interrupted": 1}
    assert "interrupted or killed before they finished: 1" in (root / "DATASET.md").read_text()
    stats = CliRunner().invoke(app, ["stats", "--settings", str(settings), "--json"])
    assert stats.exit_code == 0, stats.output
    assert json.loads(stats.stdout)["runs_by_status"] == {"finished": 1, "interrupted": 1}
    m = Manifest.at_root(root)
    assert [r[0] for r in m.query("SELECT status FROM runs ORDER BY id")] == ["finished", "running"]
    m.close()
    # While a live process holds the root, its run is running indeed.
    with RootLock(root):
        card = CliRunner().invoke(app, ["card", "--settings", str(settings), "--json"])
    assert json.loads(card.stdout)["collection"]["runs_by_status"] == {"finished": 1, "running": 1}


def test_a_full_disk_fails_forget_cleanly_and_its_dry_run_still_works(tmp_path: Path, small_disk) -> None:
    disk = small_disk("2M", "data")  # the storage root is the small disk; the settings file lives beside it
    root, folder = disk, tmp_path / "photos"
    folder.mkdir()
    for i in range(3):
        (folder / f"p{i}.jpg").write_bytes(jpeg(950 + i))
    assert import_folder(settings_for(root), folder, "selfie").accepted == 3
    fill_up(disk / "selfie" / ".filler")  # to the last block
    before = snapshot(root)
    full = forget_cli(root, "--label", "selfie", "--yes")
    assert full.exit_code == 1 and "Traceback" not in full.output, full.output
    said = " ".join(full.output.split())
    assert "nothing was removed" in said or "run the same command again" in said
    assert "what was done is saved" not in said  # nothing was: the lock could not even be taken
    assert len(stored_files(root)) == 3
    dry = forget_cli(root, "--label", "selfie", "--dry-run")
    assert dry.exit_code == 0, dry.output
    if "nothing was removed" in said:  # the lock file is selfiescope's own
        assert {k: v for k, v in snapshot(root).items() if k != ".selfiescope.lock"} == {
            k: v for k, v in before.items() if k != ".selfiescope.lock"}
    (disk / "selfie" / ".filler").unlink()
    # The failed forget did not keep the root locked (this process would hold it still).
    assert forget_cli(root, "--label", "selfie", "--yes").exit_code == 0
    assert stored_files(root) == set()
