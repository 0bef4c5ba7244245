"""``clean`` removes an original only on facts true at the end of the run.

The cases an outside tester found: a duplicate deleted because of a copy that was rejected
later, or whose storing failed; a move across filesystems killed halfway; a move target that
is the dataset itself."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from clean_helpers import clean_settings, sha, variant
from safety_helpers import cli, no_traceback, project

from selfiescope.core.settings import SettingsError
from selfiescope.pipelines.clean import clean
from selfiescope.plugins import store as store_module
from selfiescope.plugins.dedup import DedupStep
from selfiescope.plugins.files_storage import FilesStorage

pytestmark = pytest.mark.faces
REPO = Path(__file__).resolve().parents[1]


def photo(faces_dir: Path, n: int = 1) -> Path:
    return faces_dir / "portrait" / f"caltech_image_{n:04d}.jpg"


def test_a_duplicate_of_a_copy_rejected_later_is_never_deleted(faces_dir: Path, tmp_path: Path, monkeypatch) -> None:
    """The TIFF (GPS that cannot be removed) reserves the dedup slot, the JPEG is rejected as its
    near-duplicate, then the TIFF is rejected by the store step: the JPEG must stay."""
    folder = tmp_path / "cl"
    folder.mkdir()
    jpeg, tiff = variant(photo(faces_dir), "jpeg", 400), variant(photo(faces_dir), "tiff", 400, gps=True)
    (folder / "a.tif").write_bytes(tiff)
    (folder / "b.jpg").write_bytes(jpeg)
    has_location, process = store_module.has_location, DedupStep.process
    tiff_reserved, jpeg_judged = threading.Event(), threading.Event()

    def jpeg_after_tiff(self, event):  # noqa: ANN001 - the JPEG meets dedup while the TIFF is reserved
        if event.format == "jpeg":
            tiff_reserved.wait(60)
        try:
            return process(self, event)
        finally:
            (jpeg_judged if event.format == "jpeg" else tiff_reserved).set()

    def tiff_stored_last(data: bytes) -> bool:  # the store step rejects the TIFF only after that
        if data[:2] in (b"II", b"MM"):
            jpeg_judged.wait(60)
        return has_location(data)

    monkeypatch.setattr(store_module, "has_location", tiff_stored_last)
    monkeypatch.setattr(DedupStep, "process", jpeg_after_tiff)
    result = clean(clean_settings(tmp_path), folder, output=tmp_path / "clout", delete_rejected=True)
    codes = {Path(f["path"]).name: f["code"] for f in result["files"]}
    assert codes == {"a.tif": "location_metadata", "b.jpg": "near_duplicate"}, codes  # the race happened
    assert (folder / "b.jpg").read_bytes() == jpeg  # the only copy of the photo left
    assert not (folder / "a.tif").exists()  # rejected for its own content: deleted as asked
    entry = next(e for e in result["plan"] if e["path"].endswith("b.jpg"))
    assert entry["action"] == "keep" and "not stored" in entry["why"]
    assert result["deleted"] == 1


def test_duplicates_of_copies_that_failed_to_store_are_never_deleted(faces_dir: Path, tmp_path: Path, monkeypatch) -> None:
    """Every store fails (a file sits where the label folder goes): exit 1, and no original is
    deleted as a near-duplicate of a copy that was never stored."""
    folder = tmp_path / "src"
    folder.mkdir()
    originals = {}
    for n in (1, 2, 3):
        for fmt, side in (("jpeg", 420), ("png", 300)):
            name = f"p{n}_{fmt}.{fmt}"
            originals[name] = variant(photo(faces_dir, n), fmt, side)
            (folder / name).write_bytes(originals[name])
    out = tmp_path / "out2"
    out.mkdir()
    (out / "src").write_text("x\n")
    write, process = FilesStorage.write, DedupStep.process
    judged, all_judged = [], threading.Event()

    def count(self, event):  # noqa: ANN001
        try:
            return process(self, event)
        finally:
            judged.append(event.origin.path)
            if len(judged) == len(originals):
                all_judged.set()

    async def write_after_dedup(self, event):  # noqa: ANN001 - every copy stays reserved until all are judged
        await asyncio.to_thread(all_judged.wait, 60)
        return await write(self, event)

    monkeypatch.setattr(DedupStep, "process", count)
    monkeypatch.setattr(FilesStorage, "write", write_after_dedup)
    result = cli("clean", folder, "--output", out, "--delete-rejected", "--json", "-s", project(tmp_path))
    assert result.exit_code == 1, result.output
    data = json.loads(result.stdout[result.stdout.index("{"):])
    assert data["failed"] >= 1 and any(f["code"] == "near_duplicate" for f in data["files"]), data["files"]
    assert data["deleted"] == 0
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == originals


def test_a_duplicate_whose_kept_copy_is_stored_and_intact_may_go(faces_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "d"
    folder.mkdir()
    data = variant(photo(faces_dir), "jpeg", 400)
    (folder / "a.jpg").write_bytes(data)
    (folder / "b.jpg").write_bytes(data)
    result = clean(clean_settings(tmp_path), folder, output=tmp_path / "out", delete_rejected=True)
    assert result["deleted"] == 1 and len(list(folder.iterdir())) == 1
    stored = [p for p in (tmp_path / "out" / "d").iterdir()]
    assert [sha(p.read_bytes()) for p in stored] == [sha(data)]


def test_a_duplicate_stays_when_its_stored_copy_is_gone_or_damaged(faces_dir: Path, tmp_path: Path) -> None:
    """A second run finds the photo stored by the first; the stored copy is damaged meanwhile."""
    out = tmp_path / "out"
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    (first / "a.jpg").write_bytes(variant(photo(faces_dir), "jpeg", 400))
    clean(clean_settings(tmp_path), first, output=out, label="faces")
    (stored,) = (out / "faces").iterdir()
    stored.write_bytes(stored.read_bytes()[:1000])
    copy = variant(photo(faces_dir), "png", 300)
    (second / "b.png").write_bytes(copy)
    result = clean(clean_settings(tmp_path), second, output=out, label="faces", delete_rejected=True)
    assert result["files"][0]["code"] == "near_duplicate"
    assert (second / "b.png").read_bytes() == copy and result["deleted"] == 0
    assert "does not hold the bytes" in result["plan"][0]["why"]
    stored.unlink()
    result = clean(clean_settings(tmp_path), second, output=out, label="faces", delete_rejected=True)
    assert (second / "b.png").read_bytes() == copy and result["deleted"] == 0


def test_dry_run_lists_the_plan_and_changes_nothing(faces_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "d"
    folder.mkdir()
    data = variant(photo(faces_dir), "jpeg", 400)
    (folder / "a.jpg").write_bytes(data)
    (folder / "b.jpg").write_bytes(data)
    (folder / "c.jpg").write_bytes(b"\xff\xd8 not a photo")
    result = cli("clean", folder, "--delete-rejected", "--dry-run", "-s", project(tmp_path))
    assert result.exit_code == 0, result.output
    assert "would delete" in result.output and len(list(folder.iterdir())) == 3


# --- moves across filesystems, killed ----------------------------------------------------------
def other_filesystem(tmp_path: Path) -> Path:
    shm = Path("/dev/shm")
    if not shm.is_dir() or os.stat(shm).st_dev == os.stat(tmp_path).st_dev or not os.access(shm, os.W_OK):
        pytest.skip("no second writable filesystem (/dev/shm) to move across")
    target = Path(shutil.os.path.join(shm, f"selfiescope-test-{os.getpid()}-{tmp_path.name}"))
    return target


def clean_process(folder: Path, target: Path, settings: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-m", "selfiescope", "clean", str(folder), "--move-rejected-to", str(target), "--json",
         "-s", str(settings)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_a_move_across_filesystems_killed_halfway_leaves_no_partial_file(tmp_path: Path) -> None:
    target = other_filesystem(tmp_path)
    try:
        folder = tmp_path / "big"
        folder.mkdir()
        data = b"\xff\xd8\xff" + os.urandom(80 << 20)
        (folder / "huge.jpg").write_bytes(data)
        settings = project(tmp_path, extra="[plugins.folder]\nmax_bytes = 1000000\n")
        proc = clean_process(folder, target, settings)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if target.is_dir() and any(p.is_file() for p in target.rglob("*")):
                proc.send_signal(signal.SIGKILL)  # the copy has begun
                break
            time.sleep(0.001)
        proc.wait(timeout=60)
        partial = [p for p in target.rglob("*") if p.is_file() and not p.name.startswith(".")
                   and p.read_bytes() != data]
        assert not partial, f"a partial file under a real name: {partial}"
        assert (folder / "huge.jpg").read_bytes() == data or any(
            p.read_bytes() == data for p in target.rglob("huge*.jpg"))
        rerun = clean_process(folder, target, settings)
        rerun.communicate(timeout=300)
        assert rerun.returncode == 0
        files = sorted(str(p.relative_to(target)) for p in target.rglob("*") if p.is_file())
        assert files == ["too_large/huge.jpg"], files
        assert (target / "too_large" / "huge.jpg").read_bytes() == data and not (folder / "huge.jpg").exists()
    finally:
        shutil.rmtree(target, ignore_errors=True)


# --- paths that overlap --------------------------------------------------------------------------
@pytest.mark.parametrize("layout", ["move_is_output", "move_inside_output", "output_inside_move", "move_is_folder",
                                    "output_is_folder", "move_under_a_file"])
def test_folder_output_and_move_target_must_not_overlap(tmp_path: Path, layout: str) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "x.jpg").write_bytes(b"\xff\xd8 not a photo")
    (tmp_path / "afile").write_text("x")
    out = tmp_path / "out"
    output, move = {
        "move_is_output": (out, out), "move_inside_output": (out, out / "rejected"),
        "output_inside_move": (out / "data", out), "move_is_folder": (out, folder),
        "output_is_folder": (folder, out), "move_under_a_file": (out, tmp_path / "afile" / "r"),
    }[layout]
    result = cli("clean", folder, "--output", output, "--move-rejected-to", move, "-s", project(tmp_path))
    assert result.exit_code == 2, result.output
    assert no_traceback(result) and "clean:" in result.output
    assert (folder / "x.jpg").exists() and not out.exists()
    with pytest.raises(SettingsError):
        clean(clean_settings(tmp_path), folder, output=output, move_rejected_to=move)


def test_a_moved_link_still_points_at_its_target_which_stays(tmp_path: Path) -> None:
    folder, elsewhere = tmp_path / "s", tmp_path / "elsewhere"
    folder.mkdir()
    elsewhere.mkdir()
    junk = elsewhere / "junk.jpg"
    junk.write_bytes(b"\xff\xd8 not a photo")
    (folder / "link.jpg").symlink_to(os.path.relpath(junk, folder))
    for _ in range(2):  # the second run finds nothing left to move
        result = clean(clean_settings(tmp_path), folder, move_rejected_to=tmp_path / "moved")
        assert result["errors"] == []
    moved = tmp_path / "moved" / "not_image" / "link.jpg"
    assert moved.is_symlink() and moved.read_bytes() == junk.read_bytes()
    assert junk.is_file() and not os.path.lexists(folder / "link.jpg")
    assert [p.name for p in (tmp_path / "moved").rglob("*") if p.is_symlink() or p.is_file()] == ["link.jpg"]
