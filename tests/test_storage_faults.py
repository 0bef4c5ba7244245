"""Storage faults a user meets: an fsspec URL that cannot hold a dataset, a full disk under
the manifest, a read-only dataset. Each ends with one clear line and a true exit code, and
nothing stored is lost or claimed that was not done."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from safety_helpers import cli, dataset_agrees, faces, no_traceback, project

from selfiescope.core.manifest import Manifest

pytest.importorskip("fsspec")


# --- an fsspec URL that cannot hold a dataset ---------------------------------------------------
@pytest.mark.parametrize("url, says", [
    ("memory://x", "memory only"),
    ("", "empty"),
    ("nosuchproto://x", "no protocol 'nosuchproto'"),
])
def test_fsspec_urls_that_cannot_hold_a_dataset_fail_settings_check(tmp_path: Path, url: str, says: str) -> None:
    settings = project(tmp_path, extra=f'backend = "fsspec"\n[plugins.fsspec]\nurl = "{url}"\n')
    checked = cli("settings", "check", "-s", settings)
    assert checked.exit_code == 2, checked.output
    assert "plugins.fsspec.url" in checked.output and says in " ".join(checked.output.split())
    photos = tmp_path / "p"
    faces(photos, 2)
    run = cli("import", photos, "--label", "selfie", "-s", settings)
    assert run.exit_code == 2 and no_traceback(run), run.output
    assert not (tmp_path / "data" / "manifest.sqlite").exists()  # refused before any work: nothing "stored"


def test_an_fsspec_backend_with_no_url_at_all_is_refused(tmp_path: Path) -> None:
    settings = project(tmp_path, extra='backend = "fsspec"\n')
    checked = cli("settings", "check", "-s", settings)
    assert checked.exit_code == 2 and "plugins.fsspec.url" in checked.output, checked.output


def test_a_lasting_fsspec_url_passes(tmp_path: Path) -> None:
    settings = project(tmp_path, extra=f'backend = "fsspec"\n[plugins.fsspec]\nurl = "{(tmp_path / "b").as_uri()}"\n')
    assert cli("settings", "check", "-s", settings).exit_code == 0


# --- small filesystems of our own (the tests run as root in CI) ---------------------------------
@pytest.fixture
def tmpfs(small_disk: Callable[[str, str], Path]) -> Path:
    return small_disk("2M", "mnt")


def remount(where: Path, options: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{options}", str(where)], check=True, capture_output=True)


def test_a_full_disk_under_the_manifest_ends_with_one_line_and_loses_nothing(tmp_path: Path, tmpfs: Path) -> None:
    photos = tmp_path / "p"
    faces(photos, 90)
    settings = project(tmp_path, root=str(tmpfs / "data"))
    full = cli("import", photos, "--label", "selfie", "-s", settings)
    assert full.exit_code == 1 and no_traceback(full), full.output
    assert f"disk full: {tmpfs / 'data'}" in full.output.replace("\n", "")
    assert "cannot rollback" not in full.output and "Traceback" not in full.output
    assert not [p for p in tmpfs.rglob("*") if ".tmp-" in p.name]  # no half-written card or image
    stored = Manifest.for_reading(tmpfs / "data")
    try:
        rows = stored.query("SELECT location, content_hash FROM images WHERE decision='accepted'")
    finally:
        stored.close()
    assert rows, "the disk filled before anything was stored: give the test more photos"
    for r in rows:  # nothing recorded as stored is lost
        assert (tmpfs / "data" / r["location"]).is_file()

    still = cli("import", photos, "--label", "selfie", "-s", settings)  # still full: said again, in one line
    assert still.exit_code == 1 and no_traceback(still) and "disk full" in still.output, still.output

    remount(tmpfs, "size=64M")  # room again: the rerun finishes the job and mends the rest
    again = cli("import", photos, "--label", "selfie", "-s", settings)
    assert again.exit_code == 0, again.output
    n, problems = dataset_agrees(tmpfs / "data")
    m = Manifest.at_root(tmpfs / "data")
    try:
        statuses = [r[0] for r in m.query("SELECT status FROM runs ORDER BY id")]
        decided = m.query("SELECT COUNT(*) FROM images")[0][0]
    finally:
        m.close()
    assert problems == [] and n > len(rows) and decided == 90  # every photo decided, once
    assert statuses[0] in ("failed", "interrupted") and statuses[-1] == "finished", statuses


def test_a_read_only_dataset_is_read_and_never_claimed_written(tmp_path: Path, tmpfs: Path) -> None:
    remount(tmpfs, "size=32M")
    photos = tmp_path / "p"
    faces(photos, 6)
    root = tmpfs / "data"
    settings = project(tmp_path, root=str(root))
    assert cli("import", photos, "--label", "selfie", "-s", settings).exit_code == 0
    before = {p: p.stat().st_mtime_ns for p in root.rglob("*")}
    remount(tmpfs, "ro")

    exported = cli("export", tmp_path / "out", "-s", settings)
    assert exported.exit_code == 0, exported.output
    assert len(list((tmp_path / "out" / "selfie").iterdir())) == len(list((root / "selfie").iterdir())) > 0
    assert cli("export", tmp_path / "out2", "--format", "csv", "-s", settings).exit_code == 0
    stats = cli("stats", "-s", settings)
    assert stats.exit_code == 0 and "read-only" in stats.output, stats.output
    card = cli("card", "-s", settings)
    assert card.exit_code == 1 and "# Dataset card" in card.output, card.output
    assert "was not written" in card.output and "read-only" in card.output
    dry = cli("forget", "--label", "selfie", "--dry-run", "-s", settings)
    assert dry.exit_code == 0 and "would forget" in dry.output, dry.output
    forget = cli("forget", "--label", "selfie", "--yes", "-s", settings)
    assert forget.exit_code == 2 and "read-only" in forget.output, forget.output
    assert "nothing was forgotten" in forget.output.replace("\n", " ") and "saved" not in forget.output
    assert cli("fsck", "-s", settings).exit_code == 0
    repair = cli("fsck", "--repair", "-s", settings)
    assert repair.exit_code == 2 and "read-only" in repair.output, repair.output
    run = cli("import", photos, "--label", "selfie", "-s", settings)
    assert run.exit_code == 2 and "not writable" in run.output, run.output
    for result in (exported, stats, card, dry, forget, repair, run):
        assert no_traceback(result) and "Traceback" not in result.output, result.output
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*")} == before


def test_a_card_temp_file_of_a_killed_process_is_removed_by_the_next_card(tmp_path: Path) -> None:
    photos = tmp_path / "p"
    faces(photos, 2)
    settings = project(tmp_path)
    assert cli("import", photos, "--label", "selfie", "-s", settings).exit_code in (0, 1)
    root = tmp_path / "data"
    dead = subprocess.Popen(["true"])
    dead.wait()  # a pid that no longer runs
    stale = root / f".datacard.json.tmp-{dead.pid}"
    stale.write_text("{half")
    assert cli("card", "-s", settings).exit_code == 0
    assert not stale.exists() and not list(root.glob(".*.tmp-*"))
