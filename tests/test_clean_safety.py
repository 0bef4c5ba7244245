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

from selfiescope.core.app import App
from selfiescope.core.settings import SettingsError
from selfiescope.pipelines.collecting.clean import clean
from selfiescope.plugins import store as store_module
from selfiescope.plugins.dedup import DedupStep, Entry
from selfiescope.plugins.files_storage import FilesStorage

pytestmark = pytest.mark.faces
REPO = Path(__file__).resolve().parents[1]


def photo(faces_dir: Path, n: int = 1) -> Path:
    return faces_dir / "portrait" / f"caltech_image_{n:04d}.jpg"


def _signal_when_waiting(monkeypatch) -> threading.Event:  # noqa: ANN001
    """An event set when an image starts waiting for a copy met earlier in the run to settle."""
    waiting, wait_settled = threading.Event(), Entry.wait_settled

    async def signalled(self, timeout_s: float) -> bool:  # noqa: ANN001
        waiting.set()
        return await wait_settled(self, timeout_s)

    monkeypatch.setattr(Entry, "wait_settled", signalled)
    return waiting


def test_a_duplicate_of_a_copy_rejected_later_is_stored_and_never_deleted(faces_dir: Path, tmp_path: Path,
                                                                          monkeypatch) -> None:
    """The TIFF (GPS that cannot be removed) reserves the dedup slot, the JPEG meets dedup while
    it is reserved, then the store step rejects the TIFF: the JPEG is judged again, stored, and
    stays in the folder (it was kept, not rejected)."""
    folder = tmp_path / "cl"
    folder.mkdir()
    jpeg, tiff = variant(photo(faces_dir), "jpeg", 400), variant(photo(faces_dir), "tiff", 400, gps=True)
    (folder / "a.tif").write_bytes(tiff)
    (folder / "b.jpg").write_bytes(jpeg)
    process, store = DedupStep.process, store_module.StoreStep.process
    tiff_reserved = threading.Event()
    jpeg_waiting = _signal_when_waiting(monkeypatch)

    async def jpeg_after_tiff(self, event):  # noqa: ANN001 - the JPEG meets dedup while the TIFF is reserved
        if event.format == "jpeg":
            await asyncio.to_thread(tiff_reserved.wait, 60)
        try:
            return await process(self, event)
        finally:
            if event.format != "jpeg":
                tiff_reserved.set()

    async def tiff_stored_last(self, event):  # noqa: ANN001 - the store step judges the TIFF once the JPEG waits on it
        if event.format != "jpeg":
            assert await asyncio.to_thread(jpeg_waiting.wait, 60), "the JPEG never met the TIFF's reservation"
        return await store(self, event)

    has_location = store_module.has_location  # a TIFF whose GPS stays after stripping (as a BigTIFF's does)
    monkeypatch.setattr(store_module, "has_location", lambda data: data[:2] in (b"II", b"MM") or has_location(data))
    monkeypatch.setattr(store_module.StoreStep, "process", tiff_stored_last)
    monkeypatch.setattr(DedupStep, "process", jpeg_after_tiff)
    result = clean(App.create(clean_settings(tmp_path)), folder, output=tmp_path / "clout", delete_rejected=True)
    codes = {Path(f["path"]).name: f["code"] for f in result["files"]}
    assert codes == {"a.tif": "location_metadata", "b.jpg": None}, codes
    assert result["kept"] == 1 and result["status"] == "finished", result
    assert (folder / "b.jpg").read_bytes() == jpeg  # kept images are never removed by clean
    assert not (folder / "a.tif").exists()  # rejected for its own content: deleted as asked
    stored = [p for p in (tmp_path / "clout").rglob("*.jpg")]
    assert len(stored) == 1 and stored[0].read_bytes() == jpeg
    assert result["deleted"] == 1


def test_duplicates_of_copies_that_failed_to_store_are_never_deleted(faces_dir: Path, tmp_path: Path, monkeypatch) -> None:
    """Every store fails (a file sits where the label folder goes): exit 1, no copy is turned
    away as a duplicate of one that was never stored, and no original is deleted."""
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
    write = FilesStorage.write
    someone_waits = _signal_when_waiting(monkeypatch)

    async def write_after_a_duplicate_waits(self, event):  # noqa: ANN001 - keep a copy reserved until one waits on it
        await asyncio.to_thread(someone_waits.wait, 20)
        return await write(self, event)

    monkeypatch.setattr(FilesStorage, "write", write_after_a_duplicate_waits)
    result = cli("clean", folder, "--output", out, "--delete-rejected", "--json", "-s", project(tmp_path))
    assert result.exit_code == 1, result.output
    data = json.loads(result.stdout[result.stdout.index("{"):])
    assert someone_waits.is_set()  # the race happened: a copy met another one still reserved
    assert data["failed"] == len(originals), data["files"]
    assert not any(f["code"] in ("near_duplicate", "duplicate") for f in data["files"]), data["files"]
    assert data["deleted"] == 0
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == originals


def test_a_duplicate_whose_kept_copy_is_stored_and_intact_may_go(faces_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "d"
    folder.mkdir()
    data = variant(photo(faces_dir), "jpeg", 400)
    (folder / "a.jpg").write_bytes(data)
    (folder / "b.jpg").write_bytes(data)
    result = clean(App.create(clean_settings(tmp_path)), folder, output=tmp_path / "out", delete_rejected=True)
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
    clean(App.create(clean_settings(tmp_path)), first, output=out, label="faces")
    (stored,) = (out / "faces").iterdir()
    stored.write_bytes(stored.read_bytes()[:1000])
    copy = variant(photo(faces_dir), "png", 300)
    (second / "b.png").write_bytes(copy)
    result = clean(App.create(clean_settings(tmp_path)), second, output=out, label="faces", delete_rejected=True)
    assert result["files"][0]["code"] == "near_duplicate"
    assert (second / "b.png").read_bytes() == copy and result["deleted"] == 0
    assert "does not hold the bytes" in result["plan"][0]["why"]
    stored.unlink()
    result = clean(App.create(clean_settings(tmp_path)), second, output=out, label="faces", delete_rejected=True)
    assert (second / "b.png").read_bytes() == copy and result["deleted"] == 0
    assert "is missing from storage" in result["plan"][0]["why"]


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
        clean(App.create(clean_settings(tmp_path)), folder, output=output, move_rejected_to=move)


def test_a_moved_link_still_points_at_its_target_which_stays(tmp_path: Path) -> None:
    folder, elsewhere = tmp_path / "s", tmp_path / "elsewhere"
    folder.mkdir()
    elsewhere.mkdir()
    junk = elsewhere / "junk.jpg"
    junk.write_bytes(b"\xff\xd8 not a photo")
    (folder / "link.jpg").symlink_to(os.path.relpath(junk, folder))
    for _ in range(2):  # the second run finds nothing left to move
        result = clean(App.create(clean_settings(tmp_path)), folder, move_rejected_to=tmp_path / "moved")
        assert result["errors"] == []
    moved = tmp_path / "moved" / "not_image" / "link.jpg"
    assert moved.is_symlink() and moved.read_bytes() == junk.read_bytes()
    assert junk.is_file() and not os.path.lexists(folder / "link.jpg")
    assert [p.name for p in (tmp_path / "moved").rglob("*") if p.is_symlink() or p.is_file()] == ["link.jpg"]
