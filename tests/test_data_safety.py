"""Issue 10: never delete what the user owns, every failure loud, two runs at once, path problems.

Each test names the defect it pins down (the numbers of issue 10). They run on synthetic
photos, so none of them skips where ../shared/faces is absent.
"""

from __future__ import annotations

import errno
import os
import threading
import time
from pathlib import Path

import pytest
from safety_helpers import cli, dataset_agrees, faces, json_out, no_traceback, project, snapshot

from selfiescope.core.lock import RootLock
from selfiescope.core.manifest import Manifest
from selfiescope.plugins.files_storage import FilesStorage


# --- 1. train --model-dir never replaces a folder it did not write ----------------------------
def test_train_refuses_a_folder_that_is_not_a_model(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings = project(tmp_path)
    docs = tmp_path / "mydocs"
    docs.mkdir()
    (docs / "t.txt").write_text("thesis")
    result = cli("train", "--model-dir", docs, "-s", settings)
    assert result.exit_code == 2, result.output
    assert "not a selfiescope model" in result.output and no_traceback(result)
    assert (docs / "t.txt").read_text() == "thesis"


@pytest.mark.parametrize("target", ["data", ".", "data/selfie", ".."])
def test_train_refuses_the_dataset_and_the_current_folder(tmp_path: Path, monkeypatch, target: str) -> None:
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    settings = project(work)
    faces(work / "data" / "selfie", 2)
    before = snapshot(tmp_path)
    result = cli("train", "--model-dir", target, "-s", settings)
    assert result.exit_code == 2, result.output
    assert no_traceback(result)
    assert snapshot(tmp_path) == before


def test_train_refuses_a_model_folder_holding_a_user_file(tmp_path: Path, monkeypatch) -> None:
    from selfiescope.pipelines.model.model_dir import seal

    monkeypatch.chdir(tmp_path)
    model = tmp_path / "models" / "latest"
    model.mkdir(parents=True)
    (model / "model.txt").write_text("tree")
    seal(model, {"format": 1, "columns": []})
    (model / "my-notes.md").write_text("mine")
    result = cli("train", "--model-dir", model, "-s", project(tmp_path))
    assert result.exit_code == 2 and "my-notes.md" in result.output
    assert (model / "my-notes.md").read_text() == "mine"


def test_swap_replaces_only_a_sealed_model_and_keeps_anything_else(tmp_path: Path) -> None:
    from selfiescope.pipelines.model.model_dir import ModelDirError, check_target, seal, swap_in

    model = tmp_path / "m"
    for version in ("one", "two"):
        tmp = tmp_path / f".m.tmp-{version}"
        tmp.mkdir()
        (tmp / "model.txt").write_text(version)
        seal(tmp, {"format": 1, "columns": ["a"]})
        check_target(model, [tmp_path / "data"])
        swap_in(tmp, model)
        assert (model / "model.txt").read_text() == version
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]  # the old model's files went, nothing else
    (model / "extra.txt").write_text("user")
    with pytest.raises(ModelDirError, match="extra.txt"):
        check_target(model, [tmp_path / "data"])


# --- 2 and 5. clean --delete-rejected deletes only real rejections --------------------------------
def test_clean_never_deletes_when_storing_fails(tmp_path: Path, monkeypatch) -> None:
    photos = tmp_path / "p"
    faces(photos, 5)
    before = snapshot(photos)

    async def full_disk(self, event):  # noqa: ANN001
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(FilesStorage, "write", full_disk)
    result = cli("clean", photos, "--output", tmp_path / "out", "--label", "portrait", "--delete-rejected",
                 "--json", "-s", project(tmp_path))
    assert result.exit_code == 1, result.output
    data = json_out(result)
    failed = [Path(f["path"]).name for f in data["files"] if f["outcome"] == "failed"]
    assert len(failed) >= 4 and data["deleted"] == data["rejected"] == 5 - len(failed)
    assert any(f"{len(failed)} images failed to store" in e and "No space left" in e for e in data["errors"])
    after = snapshot(photos)
    assert {name: before[name] for name in failed} == {name: after[name] for name in failed}


def test_clean_with_a_bad_label_or_output_touches_nothing(tmp_path: Path) -> None:
    photos = tmp_path / "p"
    faces(photos, 3)
    before = snapshot(photos)
    (tmp_path / "afile").write_text("x")
    for args in (["--label", "café"], ["--label", "../x"], ["--output", tmp_path / "afile" / "out"],
                 ["--output", photos / "inside"]):
        result = cli("clean", photos, "--output", tmp_path / "out", "--delete-rejected", *args, "-s", project(tmp_path))
        assert result.exit_code == 2, (args, result.output)
        assert no_traceback(result), result.exception
    assert snapshot(photos) == before


def test_clean_never_deletes_a_symlinks_target(tmp_path: Path) -> None:
    folder = tmp_path / "s"
    real = faces(folder, 1)[0].rename(folder / "b_real.jpg")
    (folder / "a_link.jpg").symlink_to("b_real.jpg")
    outside = faces(tmp_path / "elsewhere", 1, seed=7)[0]
    noface = tmp_path / "elsewhere" / "blank.jpg"
    from PIL import Image

    Image.new("RGB", (200, 200), (90, 90, 90)).save(noface)
    (folder / "c_blank_link.jpg").symlink_to(noface)
    (folder / "d_outside_link.jpg").symlink_to(outside)
    for _ in range(3):  # it once failed in 1 run of 3
        result = cli("clean", folder, "--delete-rejected", "--json", "-s", project(tmp_path))
        assert result.exit_code == 0, result.output
        assert real.is_file() and outside.is_file() and noface.is_file()
        assert (folder / "a_link.jpg").is_symlink() and (folder / "d_outside_link.jpg").is_symlink()
    # the rejected link itself went, never its target
    assert not os.path.lexists(folder / "c_blank_link.jpg")


# --- 3. non-UTF-8 file names -------------------------------------------------------------------
def test_non_utf8_file_names_are_imported_and_listed(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    paths = faces(folder, 4)
    for i, path in enumerate(paths):
        os.rename(bytes(path), os.path.join(bytes(folder), b"x\xff%d\xfe.jpg" % i))
    result = cli("import", folder, "-l", "selfie", "--json", "-s", project(tmp_path))
    assert result.exit_code == 0, result.output
    assert json_out(result)["accepted"] == 4
    stored, problems = dataset_agrees(tmp_path / "data")
    assert stored == 4 and not problems
    manifest = Manifest.at_root(tmp_path / "data")
    try:
        names = [r[0] for r in manifest.query("SELECT origin_path FROM images")]
    finally:
        manifest.close()
    assert all("\\xff" in n for n in names)


# --- 4. labels are checked where they enter; failed writes are errors ---------------------------------
@pytest.mark.parametrize("label", ["café", "_x", "x" * 200, "../x", "x$\\bad^^$", ""])
def test_bad_labels_are_refused_before_anything_runs(tmp_path: Path, label: str) -> None:
    folder = tmp_path / "in"
    faces(folder, 1)
    result = cli("import", folder, "-l", label, "-s", project(tmp_path))
    assert result.exit_code == 2, result.output
    assert "label" in result.output and no_traceback(result)
    assert not (tmp_path / "data").exists()


def test_bad_label_in_settings_names_the_key(tmp_path: Path) -> None:
    settings = project(tmp_path, extra='[pipelines.p]\nkind = "import"\nsource = "folder"\npaths = ["x"]\nlabel = "café"\n')
    result = cli("settings", "check", "-s", settings)
    assert result.exit_code == 2 and "pipelines.p.label" in result.output


def test_storage_failures_end_the_run_with_errors(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    faces(folder, 3)
    root = tmp_path / "data"
    root.mkdir()
    (root / "selfie").write_text("not a folder")  # every write under data/selfie/ fails (root or not)
    result = cli("import", folder, "-l", "selfie", "--json", "-s", project(tmp_path))
    assert result.exit_code == 1, result.output
    data = json_out(result)
    assert data["failed"] == 3 and data["accepted"] == 0 and data["rejected"] == 0
    assert data["status"] == "finished_with_errors"
    assert any(e.startswith("3 images failed to store") for e in data["errors"])


# --- 6. unreadable files and folders --------------------------------------------------------------
def test_unreadable_files_are_reported_and_the_rest_goes_on(tmp_path: Path, monkeypatch) -> None:
    from selfiescope.plugins.folder import FolderSource

    folder = tmp_path / "in"
    paths = faces(folder, 4)
    sub = folder / "locked"
    faces(sub, 1, seed=9)
    if os.geteuid() != 0:
        paths[1].chmod(0)
        sub.chmod(0)
    else:  # root reads everything: make the same two places fail the way they would
        real_read, real_scandir = FolderSource._read, os.scandir

        async def read(self, path):  # noqa: ANN001
            if path == paths[1]:
                raise PermissionError(errno.EACCES, "Permission denied", str(path))
            return await real_read(self, path)

        def scandir(path="."):  # noqa: ANN001
            if Path(path) == sub:
                raise PermissionError(errno.EACCES, "Permission denied", str(path))
            return real_scandir(path)

        monkeypatch.setattr(FolderSource, "_read", read)
        monkeypatch.setattr(os, "scandir", scandir)
    try:
        result = cli("import", folder, "-l", "selfie", "--json", "-s", project(tmp_path))
    finally:
        paths[1].chmod(0o644)
        sub.chmod(0o755)
    assert result.exit_code == 1, result.output
    data = json_out(result)
    assert data["accepted"] == 3 and data["failed"] == 2
    assert any("2 images could not be read" in e for e in data["errors"])


# --- 7. a damaged model is refused before native code reads it -------------------------------------
def test_truncated_model_is_refused_with_exit_2(tmp_path: Path) -> None:
    from selfiescope.pipelines.model.model_dir import seal

    model = tmp_path / "m"
    model.mkdir()
    (model / "model.txt").write_text("tree\n" * 100)
    (model / "settings.json").write_text("{}")
    seal(model, {"format": 1, "columns": ["x"], "groups": [{"name": "g", "version": 1, "features": ["x"]}],
                 "labels": ["a", "b"]})
    with (model / "model.txt").open("r+") as fh:
        fh.truncate(50)
    image = faces(tmp_path / "in", 1)[0]
    result = cli("predict", model, image)
    assert result.exit_code == 2, result.output
    assert "truncated" in result.output and no_traceback(result)


# --- 8. one writer per storage root ---------------------------------------------------------------
def test_a_second_run_on_the_same_root_says_who_holds_it(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    faces(folder, 2)
    settings = project(tmp_path)
    with RootLock(tmp_path / "data"):
        result = cli("import", folder, "-l", "selfie", "-s", settings)
        assert result.exit_code == 2, result.output
        assert f"in use by pid {os.getpid()}" in result.output
    lock = RootLock(tmp_path / "data").acquire()
    threading.Timer(1.0, lock.release).start()
    started = time.monotonic()
    result = cli("import", folder, "-l", "selfie", "--wait", "-s", settings)
    assert result.exit_code == 0, result.output
    assert time.monotonic() - started >= 0.9
    assert dataset_agrees(tmp_path / "data") == (2, [])


# --- 9. a chain without storage does not poison later imports ----------------------------------------
def test_a_chain_without_store_does_not_mark_images_stored(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    faces(folder, 3)
    settings = project(tmp_path)
    first = cli("import", folder, "-l", "selfie", "--chain", "decode,face_area,dedup", "--json", "-s", settings)
    assert first.exit_code == 2 and "stores nothing" in first.output
    second = cli("import", folder, "-l", "selfie", "--json", "-s", settings)
    assert second.exit_code == 0, second.output
    assert json_out(second)["accepted"] == 3
    assert dataset_agrees(tmp_path / "data") == (3, [])


# --- 10. path problems exit 2 without a traceback ----------------------------------------------------
def test_path_problems_exit_2_without_traceback(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "in"
    faces(folder, 1)
    (tmp_path / "afile").write_text("x")
    (tmp_path / "adir").mkdir()
    empty_root = tmp_path / "empty.toml"
    empty_root.write_text('[storage]\nroot = ""\n')
    cases = [
        (["import", folder, "-l", "s", "-s", project(tmp_path, root="afile")], "is a file"),
        (["import", folder, "-l", "s", "-s", project(tmp_path, root="afile/data")], "is a file"),
        (["settings", "check", "-s", project(tmp_path, root="afile")], "storage.root"),
        (["settings", "check", "-s", tmp_path / "adir"], "is a folder"),
        (["import", folder, "-l", "s", "-s", project(tmp_path, extra=f'[logging]\nfile = "{tmp_path}"\n')], "logging.file"),
        (["import", folder, "-l", "s", "-s", empty_root], "storage.root"),
        (["import", tmp_path / "nonexistent", "-l", "s", "-s", project(tmp_path, root="fresh")], "not found"),
    ]
    for i, (args, expected) in enumerate(cases):
        result = cli(*args)
        assert result.exit_code == 2, (i, result.output[-300:])
        assert expected in result.output, (args, result.output)
        assert no_traceback(result), (args, result.exception)
    assert not (tmp_path / "fresh").exists()  # `import /nonexistent` created nothing
    env = {"SELFIESCOPE_LOGGING__FILE": "/tmp"}
    result = cli("import", folder, "-l", "s", "-s", project(tmp_path), env=env)
    assert result.exit_code == 2 and "logging.file" in result.output


def test_tilde_in_the_storage_root_is_expanded(tmp_path: Path, monkeypatch) -> None:
    from selfiescope.core.settings import load_settings

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    settings = tmp_path / "s.toml"
    settings.write_text('[storage]\nroot = "~/x"\n')
    assert load_settings(settings).storage.root == tmp_path / "home" / "x"


# --- 11. credentials inside URLs ---------------------------------------------------------------------
def test_credentials_in_urls_are_refused_and_never_stored(tmp_path: Path) -> None:
    from selfiescope.core.events import ImageEvent, Origin

    settings = project(tmp_path, extra='[plugins.instagram]\nbase_url = "https://alice:pw@example.org"\n')
    result = cli("settings", "check", "-s", settings)
    assert result.exit_code == 2 and "plugins.instagram.base_url" in result.output and "pw" not in result.output
    result = cli("scrape", "x", "-l", "selfie", "--base-url", "http://bob:secret@127.0.0.1:9", "-s", project(tmp_path))
    assert result.exit_code == 2 and "credentials" in result.output and "secret" not in result.output
    manifest = Manifest.at_root(tmp_path / "m")
    try:
        event = ImageEvent(Origin("gallery", post_url="https://u:pw@h/p/1", image_url="https://u:pw@cdn/x.jpg"), "selfie", b"x")
        event.reject("decode", "empty", "x")
        manifest.record(event)
        row = manifest.query("SELECT post_url, image_url FROM images")[0]
    finally:
        manifest.close()
    assert tuple(row) == ("https://h/p/1", "https://cdn/x.jpg")


@pytest.mark.browser
async def test_credentials_never_reach_the_drivers_or_chromiums_environment(monkeypatch) -> None:
    import psutil

    from selfiescope.core.browser import BrowserPool
    from selfiescope.core.secrets import credential
    from selfiescope.core.settings import BrowserSettings

    canary = "pw-canary-7f3a9"
    monkeypatch.setenv("SELFIESCOPE_INSTAGRAM_PASSWORD", canary)
    pool = BrowserPool(BrowserSettings())
    await pool.start()
    try:
        children = psutil.Process().children(recursive=True)
        assert children, "the driver and Chromium run as child processes"
        for child in children:
            try:
                assert canary not in " ".join(child.environ().values()), child.cmdline()[:1]
            except psutil.NoSuchProcess:
                continue
        assert credential("SELFIESCOPE_INSTAGRAM_PASSWORD") == canary  # still ours, in memory
    finally:
        await pool.close()


def test_demo_never_replaces_a_folder_it_did_not_write(tmp_path: Path) -> None:
    mine = tmp_path / "mine"
    (mine / "data").mkdir(parents=True)
    (mine / "data" / "thesis.txt").write_text("mine")
    result = cli("demo", "--output", mine, "--no-train", "-s", project(tmp_path))
    assert result.exit_code == 2, result.output
    assert "not written by `selfiescope demo`" in result.output
    assert (mine / "data" / "thesis.txt").read_text() == "mine"
