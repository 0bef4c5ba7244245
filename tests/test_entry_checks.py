"""What a command is given is checked where it enters: settings that would fail a run fail
``settings check`` (and the run, before any work); paths that cannot name a file, files that
are not regular files, undecodable file names and full disks end with one line, never a
traceback or a hang. (The fuzz test, test_cli_fuzz.py, throws everything at every command;
these are the cases found, one by one.)"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings as hsettings, strategies as st

from selfiescope.core.settings import SettingsError, load_settings

DEADLINE_S = 120  # generous for a loaded machine: a hang runs into it


def cli(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m selfiescope ARGS``; undecodable bytes in the output come back as escapes."""
    proc = subprocess.run([sys.executable, "-m", "selfiescope", *args], cwd=cwd, capture_output=True,
                          timeout=DEADLINE_S, env={**os.environ, "COLUMNS": "200", **(env or {})})
    out, err = (proc.stdout.decode("utf-8", "backslashreplace"), proc.stderr.decode("utf-8", "backslashreplace"))
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def one_clean_line(proc: subprocess.CompletedProcess[str], code: int, *words: str) -> None:
    text = proc.stdout + proc.stderr
    assert proc.returncode == code, text
    assert "Traceback" not in text and "Logging error" not in text, text
    for word in words:  # a table may wrap a long title: compare without the white space
        assert "".join(word.split()) in "".join(text.split()), text


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# --- settings that used to pass `settings check` and fail the run ------------------------------------
def test_an_empty_chain_is_refused_not_accepted_and_stored_nowhere(tmp_path: Path) -> None:
    s = write(tmp_path / "s.toml", '[pipelines.p]\nkind = "import"\nsource = "folder"\npaths = ["x"]\n'
                                   'label = "a"\nchain = []\n')
    with pytest.raises(SettingsError, match=r"pipelines\.p\.chain: an empty chain"):
        load_settings(s)
    one_clean_line(cli("settings", "check", "-s", str(s), cwd=tmp_path), 2, "pipelines.p.chain")
    (tmp_path / "photos").mkdir()
    one_clean_line(cli("import", "photos", "--label", "a", "--chain", ",", cwd=tmp_path), 2, "chain")


def test_lightgbm_parameters_are_checked_by_lightgbm_before_any_work(tmp_path: Path) -> None:
    from selfiescope.core.checks import lightgbm_param_problems

    assert lightgbm_param_problems({"learning_rate": 0.1, "num_leaves": 7, "n_estimators": 20}) == []
    assert lightgbm_param_problems({"learning_rate": "fast"})[0].startswith("learning_rate = 'fast'")
    assert "num_leaves" in lightgbm_param_problems({"num_leaves": 1, "learning_rate": 0.1})[0]
    assert "n_estimators" in lightgbm_param_problems({"n_estimators": "many"})[0]
    s = write(tmp_path / "s.toml", '[pipelines.train]\nkind = "train"\nparams = { learning_rate = "fast" }\n')
    check = cli("settings", "check", "-s", str(s), cwd=tmp_path)
    one_clean_line(check, 2, "pipelines.train.params: learning_rate = 'fast'")
    assert "[LightGBM]" not in check.stdout + check.stderr  # its own chatter is not repeated raw
    train = cli("train", "-s", str(s), cwd=tmp_path)  # no dataset at all: the parameters are refused first
    one_clean_line(train, 2, "learning_rate")


def test_a_train_pipeline_needs_two_different_labels(tmp_path: Path) -> None:
    s = write(tmp_path / "s.toml", '[pipelines.t]\nkind = "train"\nlabels = ["a", "a"]\nfeatures = ["image"]\n')
    one_clean_line(cli("settings", "check", "-s", str(s), cwd=tmp_path), 2, "pipelines.t.labels")


@pytest.mark.parametrize("root, words", [
    ('"a\\u0000b"', ["storage.root", "NUL"]),
    ('"~nosuchuser/data"', ["storage.root", "nosuchuser"]),
])
def test_paths_that_name_no_file_are_refused_in_settings(tmp_path: Path, root: str, words: list[str]) -> None:
    s = write(tmp_path / "s.toml", f"[storage]\nroot = {root}\n")
    one_clean_line(cli("settings", "check", "-s", str(s), cwd=tmp_path), 2, *words)
    one_clean_line(cli("stats", "-s", str(s), cwd=tmp_path), 2, *words)


def test_an_unknown_home_on_the_command_line_is_named(tmp_path: Path) -> None:
    one_clean_line(cli("train", "--model-dir", "~nosuchuser/m", cwd=tmp_path), 2, "--model-dir", "nosuchuser")
    one_clean_line(cli("import", "~nosuchuser/x", "--label", "a", cwd=tmp_path), 2, "FOLDER", "nosuchuser")
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize("kind", ["fifo", "/dev/zero", "folder", "huge"])
def test_a_settings_file_that_is_not_a_small_regular_file_is_refused_unread(tmp_path: Path, kind: str) -> None:
    path = {"fifo": tmp_path / "fifo", "/dev/zero": Path("/dev/zero"), "folder": tmp_path, "huge": tmp_path / "big.toml"}[kind]
    if kind == "fifo":
        os.mkfifo(path)
    if kind == "huge":
        path.write_text("# filler\n" * 200_000)
    for command in (["settings", "check"], ["pipelines"], ["login"]):  # login: the plugins' commands read it first
        one_clean_line(cli(*command, "--settings", str(path), cwd=tmp_path), 2, str(path))


def test_a_log_file_must_be_a_regular_file(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "fifo")
    for target in (tmp_path / "fifo", Path("/dev/full")):
        s = write(tmp_path / "s.toml", f'[logging]\nfile = "{target}"\n')
        one_clean_line(cli("settings", "check", "-s", str(s), cwd=tmp_path), 2, "logging.file", str(target))
        one_clean_line(cli("pipelines", "-s", str(s), cwd=tmp_path), 2, "logging.file")


def test_a_log_file_on_a_full_disk_warns_once_and_stops(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from selfiescope.cli.common import LogFile

    handler = LogFile(tmp_path / "run.log")
    logger = logging.getLogger("selfiescope")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)

    def full(_: str) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    handler.stream.write = full  # type: ignore[method-assign]
    try:
        for i in range(3):
            logger.info("line %d \udcff", i)
    finally:
        logger.removeHandler(handler)
    err = capsys.readouterr().err
    assert err.count("cannot write the log file") == 1 and "No space left on device" in err, err
    assert "Traceback" not in err and handler not in logger.handlers


def test_environment_overrides_that_overlap_are_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    env = {"SELFIESCOPE_STORAGE__ROOT": "x", "SELFIESCOPE_STORAGE__ROOT__DEEPER": "1"}
    with pytest.raises(SettingsError, match="SELFIESCOPE_STORAGE__ROOT__DEEPER"):
        load_settings(environ=env)


def test_scheduler_addresses_are_checked_where_they_enter(tmp_path: Path) -> None:
    one_clean_line(cli("train", "--scheduler", " ", cwd=tmp_path), 2, "--scheduler")
    s = write(tmp_path / "s.toml", '[compute]\nscheduler = "no port"\n')
    one_clean_line(cli("settings", "check", "-s", str(s), cwd=tmp_path), 2, "compute.scheduler")


# --- files that are not what a command expects -----------------------------------------------------
def test_a_replay_file_that_is_a_fifo_or_a_device_is_refused_unread(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "fifo")
    for target in (str(tmp_path / "fifo"), "/dev/zero"):
        one_clean_line(cli("scrape", "x", "-l", "a", "--replay", target, cwd=tmp_path), 2, "--replay", target)


def test_the_plot_must_be_a_png_file(tmp_path: Path) -> None:
    one_clean_line(cli("stats", "--face-area-plot", "notes.txt", cwd=tmp_path), 2, "--face-area-plot")


def test_a_symbolic_link_loop_is_a_usage_error(tmp_path: Path) -> None:
    os.symlink("loop", tmp_path / "loop")
    (tmp_path / "in").mkdir()
    one_clean_line(cli("clean", "in", "--move-rejected-to", "loop", cwd=tmp_path), 2, "loop")


def test_out_of_range_demo_sizes_are_usage_errors(tmp_path: Path) -> None:
    one_clean_line(cli("demo", "--per-tag", "0", cwd=tmp_path), 2, "--per-tag")
    assert not (tmp_path / "demo-output").exists()


# --- undecodable file names ---------------------------------------------------------------------------
@pytest.mark.faces
def test_folders_and_files_with_undecodable_names_import_clean_and_forget(tmp_path: Path, faces_dir: Path) -> None:
    folder = os.fsencode(tmp_path) + b"/d\xff"
    os.mkdir(folder)
    for i, name in enumerate(["caltech_image_0001.jpg", "caltech_image_0002.jpg"]):
        shutil.copy(faces_dir / "portrait" / name, folder + f"/p{i}-\xfe.jpg".encode("latin-1"))
    name = os.fsdecode(folder)
    imported = cli("import", name, "--label", "portrait", "--json", cwd=tmp_path)
    one_clean_line(imported, 0, "d\\\\xff")  # JSON text: the escape's backslash is itself escaped
    assert json.loads(imported.stdout)["accepted"] == 2
    with sqlite3.connect(tmp_path / "data" / "manifest.sqlite") as db:
        assert {r[0] for r in db.execute("SELECT job FROM images")} == {name.encode("utf-8", "surrogateescape")
                                                                        .decode("utf-8", "backslashreplace")}
    one_clean_line(cli("clean", name, cwd=tmp_path), 0, "d\\xff")
    one_clean_line(cli("clean", name, "--output", os.fsdecode(os.fsencode(tmp_path) + b"/o\xfe"), "--json", cwd=tmp_path), 0)
    for option in ("--owner", "--post", "--image", "--label"):
        one_clean_line(cli("forget", option, "x\udcff", "--dry-run", cwd=tmp_path), 1, "nothing matched")
    one_clean_line(cli("import", name, "--label", "portrait", cwd=tmp_path), 0, "d\\xff")  # a rerun finds them stored


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    from selfiescope.core.manifest import Manifest

    db = Manifest.at_root(tmp_path_factory.mktemp("manifest"))
    yield db
    db.close()


@hsettings(max_examples=60, deadline=None)
@given(text=st.text())
def test_any_text_can_be_queried_stored_shown_and_dumped(manifest, text: str) -> None:  # noqa: ANN001
    """Whatever a file name decodes to (lone surrogates included) is safe for SQLite, JSON
    and an encoder, and :func:`printable` changes only what needs changing."""
    from selfiescope.core.text import printable, printable_tree

    shown = printable(text)
    shown.encode("utf-8")
    if not any("\ud800" <= c <= "\udfff" for c in text):
        assert shown == text
    assert json.loads(json.dumps(printable_tree({text: [text]}))) == {shown: [shown]}
    assert manifest.query("SELECT ?", (text,))[0][0] == shown
    assert manifest.stored_count("folder", text, "a") == 0
