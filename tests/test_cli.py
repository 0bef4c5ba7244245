"""The CLI as a user meets it: real subprocesses, real signals."""

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image


def cli(*args, cwd, **kw):
    return subprocess.run([sys.executable, "-m", "selfiescope", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=300, **kw)


def make_photos(folder: Path, n: int) -> None:
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (72, 72, 3), dtype=np.uint8)).save(folder / f"{i:04d}.png")


# Every command a user may type, by exact name: the built-ins and the Instagram plugin's.
EXPECTED_COMMANDS = {
    "run", "import", "clean", "demo", "scrape", "pipelines", "plugins", "stats", "mock-site", "train", "predict",
    "forget", "card", "export", "fsck", "review", "settings", "login", "record", "doctor",
}


def help_commands(help_text: str) -> set[str]:
    """The command names in the "Commands" box of typer's help (first word of each row)."""
    box = help_text.split("Commands", 1)[1]
    return {m.group(1) for m in re.finditer(r"^│ ([a-z][a-z-]*) ", box, flags=re.MULTILINE)}


def test_version_and_help(tmp_path):
    assert cli("--version", cwd=tmp_path).stdout.startswith("selfiescope ")
    proc = cli("--help", cwd=tmp_path, env={**os.environ, "COLUMNS": "100"})
    assert proc.returncode == 0, proc.stderr
    assert help_commands(proc.stdout) == EXPECTED_COMMANDS


def test_every_registered_command_is_expected_and_present():
    """The application's own registry, by exact name: a command that vanishes (or appears
    unannounced, or changes name) fails here, whatever its help text says."""
    from selfiescope.cli import app
    from selfiescope.cli.build import command_names

    assert set(command_names(app)) == EXPECTED_COMMANDS
    settings_group = next(g.typer_instance for g in app.registered_groups if g.name == "settings")
    assert set(command_names(settings_group)) == {"check", "show"}


def test_unknown_pipeline_is_a_usage_error(tmp_path):
    proc = cli("run", "nope", cwd=tmp_path)
    assert proc.returncode == 2 and "pipelines.nope: no such pipeline" in proc.stderr


def test_ctrl_c_stops_cleanly_and_the_same_command_resumes(tmp_path):
    photos = tmp_path / "photos"
    make_photos(photos, 1500)
    (tmp_path / "settings.toml").write_text('[storage]\nroot = "data"\n[engine]\nworkers = 1\nqueue_size = 2\n')
    args = [sys.executable, "-m", "selfiescope", "import", str(photos), "--label", "selfie",
            "--chain", "decode,store", "--json"]
    proc = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    db = tmp_path / "data" / "manifest.sqlite"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # wait until it is storing images
        time.sleep(0.2)
        if db.exists():
            try:
                with sqlite3.connect(db) as con:
                    if con.execute("SELECT COUNT(*) FROM images").fetchone()[0] >= 20:
                        break
            except sqlite3.OperationalError:
                pass
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "run the same command again to resume" in err and "Traceback" not in err
    with sqlite3.connect(db) as con:
        status = con.execute("SELECT status FROM runs").fetchone()[0]
        stored_first = con.execute("SELECT COUNT(*) FROM images WHERE decision='accepted'").fetchone()[0]
    assert status == "cancelled" and 20 <= stored_first < 1500
    files = list((tmp_path / "data" / "selfie").iterdir())
    assert len(files) == stored_first and not [f for f in files if f.name.startswith(".")]

    again = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    stats = json.loads(again.stdout)
    assert stats["seen"] == 1500 - stored_first and stats["accepted"] == 1500 - stored_first
    assert len(list((tmp_path / "data" / "selfie").iterdir())) == 1500
