"""Issue 10, defect 12: the small ones, each pinned by a test."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safety_helpers import cli, faces, json_out, project

from selfiescope.core.manifest import Manifest


def test_runs_killed_earlier_are_marked_interrupted(tmp_path: Path) -> None:
    root = tmp_path / "data"
    manifest = Manifest.at_root(root)
    manifest.start_run("import", "x")  # a run that never finished: killed
    manifest.close()
    folder = tmp_path / "in"
    faces(folder, 1)
    assert cli("import", folder, "-l", "selfie", "-s", project(tmp_path)).exit_code == 0
    manifest = Manifest.at_root(root)
    try:
        assert [r["status"] for r in manifest.query("SELECT status FROM runs ORDER BY id")] == ["interrupted", "finished"]
    finally:
        manifest.close()


def test_a_killed_trains_temporary_folder_is_tidied(tmp_path: Path) -> None:
    from selfiescope.pipelines.model.model_dir import remove_stale, seal

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    models = tmp_path / "models"
    (models / f".latest.tmp-{pid}").mkdir(parents=True)
    (models / f".latest.tmp-{pid}" / "model.txt").write_text("half")
    (models / f".latest.tmp-{os.getpid()}").mkdir()  # a live process's: left alone
    old = models / f".latest.old-{pid}"  # killed mid-swap: the previous model comes back
    old.mkdir()
    (old / "model.txt").write_text("previous")
    seal(old, {"format": 1, "columns": []})
    remove_stale(models / "latest")
    assert sorted(p.name for p in models.iterdir()) == [f".latest.tmp-{os.getpid()}", "latest"]
    assert (models / "latest" / "model.txt").read_text() == "previous"


def test_rejection_reasons_never_quote_file_contents(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    secret = tmp_path / "secret.txt"
    secret.write_text("root:x:0:0:TOPSECRET")
    (folder / "passwd.jpg").symlink_to(secret)
    result = cli("import", folder, "-l", "selfie", "--json", "-s", project(tmp_path))
    assert result.exit_code == 0 and json_out(result)["rejected_by_reason"] == {"not_image": 1}
    manifest = Manifest.at_root(tmp_path / "data")
    try:
        reasons = [r[0] for r in manifest.query("SELECT reason FROM rejections")]
    finally:
        manifest.close()
    assert reasons and not any("TOPSECRET" in r or "root:" in r for r in reasons)


def test_heic_is_not_listed_as_an_image(tmp_path: Path) -> None:
    from selfiescope.plugins.folder import IMAGE_SUFFIXES

    assert ".heic" not in IMAGE_SUFFIXES


def test_empty_and_oversize_files_are_told_apart_with_their_paths(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "big.jpg").write_bytes(os.urandom(3000))
    settings = project(tmp_path, extra="[plugins.folder]\nmax_bytes = 2000\n")
    result = cli("import", folder, "-l", "selfie", "--json", "-s", settings)
    assert result.exit_code == 0, result.output
    assert json_out(result)["rejected_by_reason"] == {"empty": 1, "too_large": 1}
    manifest = Manifest.at_root(tmp_path / "data")
    try:
        images = manifest.query("SELECT content_hash, reject_code FROM images")
        paths = sorted(Path(r[0]).name for r in manifest.query("SELECT origin_path FROM rejections"))
    finally:
        manifest.close()
    assert len({r["content_hash"] for r in images}) == 2
    assert paths == ["big.jpg", "empty.jpg"]


def test_a_corrupt_exif_block_prints_no_raw_warning(tmp_path: Path) -> None:
    from PIL import Image

    folder = tmp_path / "in"
    photo = faces(folder, 1)[0]
    data = photo.read_bytes()
    exif = b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\x00\x05\x01\x12\x00\x03\x00\x00\x00\x01\xff\xff"  # truncated IFD
    segment = b"\xff\xe1" + (len(exif) + 2).to_bytes(2, "big") + exif
    photo.write_bytes(data[:2] + segment + data[2:])
    with Image.open(photo) as im:
        im.load()
    env = {**os.environ, "PYTHONWARNINGS": "default"}
    done = subprocess.run([sys.executable, "-m", "selfiescope", "import", str(folder), "-l", "selfie", "-s",
                           str(project(tmp_path))], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "Warning" not in done.stderr and "EXIF" not in done.stderr, done.stderr


def test_predict_reads_regular_files_only(tmp_path: Path) -> None:
    from selfiescope.pipelines.model.predict import read_regular_file

    fifo = tmp_path / "fifo.jpg"
    os.mkfifo(fifo)
    started = time.monotonic()
    for path, message in ((Path("/dev/zero"), "not a regular file"), (fifo, "not a regular file")):
        with pytest.raises(ValueError, match=message):
            read_regular_file(path, 1000)
    big = tmp_path / "big.jpg"
    big.write_bytes(b"x" * 2000)
    with pytest.raises(ValueError, match="limit"):
        read_regular_file(big, 1000)
    assert time.monotonic() - started < 30  # neither blocked (a hang would hit the test timeout)


def test_private_files_are_owner_only_even_over_a_stale_temp_file(tmp_path: Path) -> None:
    """Sessions and recordings are written 0600 through one writer; a temp file a killed run
    left with a wider mode does not lend it to the new file."""
    import json
    import stat

    from selfiescope.core import har
    from selfiescope.core.browser import save_session

    for name, write in (("session.json", lambda p: save_session(p, {"cookies": []})),
                        ("rec.har", lambda p: har.save(p, {"log": {"entries": []}}))):
        path = tmp_path / name
        stale = path.with_name(path.name + ".tmp")
        stale.write_text("old")
        stale.chmod(0o644)
        write(path)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600 and not stale.exists()
        assert json.loads(path.read_text())
