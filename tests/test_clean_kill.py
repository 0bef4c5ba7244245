"""``clean`` killed (SIGKILL) at random moments while it moves or deletes, then run again.

After each kill and after the rerun that finishes the job, every file the user had is whole
in the folder, whole in the move target (once), stored and readable, or deleted as asked
for its own content or as a copy of a photo that is stored (or still in the folder); no
partial file is left under a real name, and the rerun leaves no temporary file behind."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from clean_helpers import hashes_under, sha, variant
from safety_helpers import project
from test_clean_property import stored_originals

from selfiescope.core.settings import load_settings

pytestmark = [pytest.mark.faces, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[1]
PHOTOS = ["caltech_image_0001.jpg", "caltech_image_0011.jpg"]


def build_folder(faces_dir: Path, folder: Path) -> tuple[dict[str, bytes], dict[str, int]]:
    """Two photos, each as a JPEG and a PNG (near-duplicates), and files rejected for what they
    are, two of them large enough that a move across filesystems takes a while."""
    folder.mkdir()
    originals: dict[str, bytes] = {}
    photo_of: dict[str, int] = {}
    for i, name in enumerate(PHOTOS):
        for fmt, side in (("jpeg", 420), ("png", 300)):
            file = f"p{i}_{fmt}.{fmt}"
            originals[file] = variant(faces_dir / "portrait" / name, fmt, side)
            photo_of[file] = i
    rng = random.Random(len(str(folder)))
    for i in range(2):
        originals[f"big{i}.jpg"] = b"\xff\xd8\xff" + rng.randbytes(24 << 20)
    originals["notes.jpg"] = b"\xff\xd8 not a photo"
    for name, data in originals.items():
        (folder / name).write_bytes(data)
    return originals, photo_of


def target_folder(tmp_path: Path) -> Path:
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK) and os.stat(shm).st_dev != os.stat(tmp_path).st_dev:
        return shm / f"selfiescope-kill-{os.getpid()}-{tmp_path.name}"  # across filesystems
    return tmp_path / "rejected"


def start(folder: Path, args: list[str], settings: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "selfiescope", "clean", str(folder), *args, "--json", "-s", str(settings)],
        env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def check(folder: Path, originals: dict[str, bytes], photo_of: dict[str, int], move_to: Path | None,
          output: Path | None, settings_file: Path) -> None:
    in_folder = {n for n, d in originals.items() if (folder / n).is_file() and (folder / n).read_bytes() == d}
    moved_hashes = hashes_under(move_to) if move_to else set()
    moved = {n for n, d in originals.items() if sha(d) in moved_hashes}
    stored = stored_originals(load_settings(settings_file), output, originals) if output else set()
    for name in originals:
        if name in in_folder | moved | stored:
            continue
        assert move_to is None, f"{name} neither in the folder nor in the move target"
        if name in photo_of:  # a photo deleted as a duplicate: another copy of it is stored (or in the folder)
            kept = stored if output else in_folder
            assert any(n in kept for n, p in photo_of.items() if p == photo_of[name] and n != name), f"{name} lost"
    if move_to is not None and move_to.is_dir():
        whole = {sha(d) for d in originals.values()}
        for path in move_to.rglob("*"):
            if path.is_file() and not path.name.startswith("."):
                assert sha(path.read_bytes()) in whole, f"partial file under a real name: {path}"


def removing(proc: subprocess.Popen, folder: Path, originals: dict[str, bytes], move_to: Path | None) -> None:
    """Wait until the removals have begun: something in the move target, or an original gone."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if move_to is not None and move_to.is_dir() and any(p.is_file() for p in move_to.rglob("*")):
            return
        if move_to is None and any(not (folder / name).exists() for name in originals):
            return
        time.sleep(0.002)


@pytest.mark.parametrize("mode", ["move", "delete_with_output"])
def test_clean_killed_at_random_moments_loses_nothing(faces_dir: Path, tmp_path: Path, mode: str) -> None:
    rng = random.Random(f"kill-{mode}")
    settings = project(tmp_path, extra="[plugins.folder]\nmax_bytes = 1000000\n")
    move_to = target_folder(tmp_path) if mode == "move" else None
    try:
        for round_ in range(2):
            folder = tmp_path / f"photos{round_}"
            originals, photo_of = build_folder(faces_dir, folder)
            output = tmp_path / f"out{round_}" if mode != "move" else None
            args = (["--move-rejected-to", str(move_to)] if move_to else ["--delete-rejected"]) + (
                ["--output", str(output)] if output else [])
            for attempt in range(2):  # once anywhere in the run, once while it moves or deletes
                proc = start(folder, args, settings)
                if attempt == 0:
                    time.sleep(rng.uniform(0.5, 6.0))
                else:
                    removing(proc, folder, originals, move_to)
                    time.sleep(rng.uniform(0.0, 0.15))
                proc.send_signal(signal.SIGKILL)
                proc.communicate(timeout=60)
                check(folder, originals, photo_of, move_to, output, settings)
            rerun = start(folder, args, settings)
            out, err = rerun.communicate(timeout=300)
            assert rerun.returncode == 0, err.decode(errors="replace")[-2000:]
            data = json.loads(out[out.index(b"{"):])
            check(folder, originals, photo_of, move_to, output, settings)
            for name in ("big0.jpg", "big1.jpg", "notes.jpg"):  # rejected for what they are: gone from the folder
                assert not (folder / name).exists(), (name, data["plan"])
            if move_to is not None:
                names = [p.name for p in move_to.rglob("*") if p.is_file()]
                assert not [n for n in names if n.startswith(".")], f"temporary files left: {names}"
                counts = [sum(1 for p in move_to.rglob("*") if p.is_file() and sha(p.read_bytes()) == sha(d))
                          for d in originals.values()]
                assert max(counts) <= 1, "a file was moved twice"  # every round's folder holds the same bytes
    finally:
        if move_to is not None and str(move_to).startswith("/dev/shm/"):
            shutil.rmtree(move_to, ignore_errors=True)
