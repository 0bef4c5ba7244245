"""`selfiescope review` as a command: it prints its link, opens a browser only when there is a
display and only without --no-open, warns when it listens beyond this machine, refuses a bad
address, a port in use or a root with no dataset in one line, and Ctrl-C ends it with exit 0."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from conftest import REPO
from privacy_helpers import import_folder, jpeg, settings_for
from review_helpers import write_settings_file
from test_review_browser import read_line

pytest.importorskip("starlette")


@pytest.fixture
def small_root(tmp_path: Path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(3):
        (folder / f"p{i}.jpg").write_bytes(jpeg(900 + i))
    root = tmp_path / "data"
    assert import_folder(settings_for(root), folder, "selfie").accepted == 3
    return root


def start(settings_file: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    base = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "BROWSER")}
    return subprocess.Popen([sys.executable, "-m", "selfiescope", "review", "--settings", str(settings_file), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**base, "PYTHONPATH": str(REPO), **(env or {})})


def stop(proc: subprocess.Popen, how: int = signal.SIGINT) -> tuple[int, str]:
    proc.send_signal(how)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    return proc.returncode, proc.stderr.read()


def url_of(proc: subprocess.Popen) -> str:
    line = read_line(proc.stdout, 120)
    assert " at http://" in line, line + proc.stderr.read() if proc.poll() is not None else line
    return line.split(" at ", 1)[1].strip()


def test_it_serves_its_link_and_ctrl_c_ends_it_with_0(small_root: Path) -> None:
    proc = start(write_settings_file(small_root), "--no-open")
    try:
        url = url_of(proc)
        assert url.startswith("http://127.0.0.1:") and "?token=" in url
        with pytest.raises(urllib.error.HTTPError) as refused:  # no token, no cookie
            urllib.request.urlopen(url.split("?")[0], timeout=60)
        assert refused.value.code == 403
    finally:
        code, err = stop(proc)
    assert code == 0, err
    assert "Traceback" not in err and "review stopped" in err


def test_sigterm_ends_it_like_ctrl_c(small_root: Path) -> None:
    proc = start(write_settings_file(small_root), "--no-open")
    try:
        url_of(proc)
    finally:
        code, err = stop(proc, signal.SIGTERM)
    assert code == 0 and "review stopped" in err and "Traceback" not in err, (code, err)


def test_with_the_token_a_page_answers(small_root: Path) -> None:
    import http.cookiejar

    proc = start(write_settings_file(small_root), "--no-open")
    try:
        url = url_of(proc)
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
        with opener.open(url, timeout=60) as answer:
            assert answer.status == 200 and "token=" not in answer.url
            assert b"li class=\"tile" in answer.read()
    finally:
        code, err = stop(proc)
    assert code == 0, err


def test_a_browser_opens_only_with_a_display_and_without_no_open(small_root: Path, tmp_path: Path) -> None:
    opened = tmp_path / "opened.txt"
    fake = tmp_path / "fake-browser"
    fake.write_text(f"#!/bin/sh\nprintf '%s\\n' \"$1\" >> {opened}\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    settings_file = write_settings_file(small_root)
    for args, env, should_open in [((), {"DISPLAY": ":99", "BROWSER": f"{fake} %s"}, True),
                                   (("--no-open",), {"DISPLAY": ":99", "BROWSER": f"{fake} %s"}, False),
                                   ((), {"BROWSER": f"{fake} %s"}, False)]:
        opened.unlink(missing_ok=True)
        proc = start(settings_file, *args, env=env)
        try:
            url = url_of(proc)
            deadline = time.monotonic() + 30
            while should_open and not opened.exists() and time.monotonic() < deadline:
                time.sleep(0.2)
        finally:
            stop(proc)
        if should_open:
            assert opened.read_text().split() == [url]
        else:
            assert not opened.exists(), args


def test_listening_beyond_this_machine_warns_and_links_by_a_name_others_reach(small_root: Path) -> None:
    """The link names this machine as another machine reaches it (no loopback name), and the app
    answers it; a second link is for this machine's own browser."""
    import http.cookiejar
    from urllib.parse import urlsplit

    from selfiescope.review.app import is_loopback

    proc = start(write_settings_file(small_root), "--no-open", "--host", "0.0.0.0")
    try:
        url = url_of(proc)
        local = read_line(proc.stdout, 60)
        host = urlsplit(url).hostname or ""
        assert not is_loopback(host) and host not in ("0.0.0.0", ""), url
        assert "on this machine: http://127.0.0.1:" in local and "token=" in local
        for link in (url, local.split(": ", 1)[1].strip()):
            opener = urllib.request.build_opener(urllib.request.ProxyHandler({}),
                                                 urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
            with opener.open(link, timeout=60) as answer:
                assert answer.status == 200 and b"li class=\"tile" in answer.read()
    finally:
        code, err = stop(proc)
    assert code == 0 and "warning: serving on 0.0.0.0" in err


@pytest.mark.parametrize("content", [b"not a database at all" * 100, bytes(range(256)) * 64])
def test_a_damaged_manifest_is_exit_2_at_launch_in_one_line(small_root: Path, content: bytes) -> None:
    (small_root / "manifest.sqlite").write_bytes(content)
    for side in ("-wal", "-shm"):
        Path(f"{small_root}/manifest.sqlite{side}").unlink(missing_ok=True)
    proc = subprocess.run([sys.executable, "-m", "selfiescope", "review", "--no-open", "--settings",
                           str(write_settings_file(small_root))], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "manifest.sqlite" in proc.stderr and "http://" not in proc.stdout and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


@pytest.mark.parametrize("args, words", [
    (("--host", "no such host.invalid"), "--host"),
    (("--host", "203.0.113.9"), "cannot listen"),  # not an address of this machine
    (("--port", "70000"), "--port"),
])
def test_a_bad_address_is_exit_2_in_one_line(small_root: Path, args: tuple[str, ...], words: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "selfiescope", "review", "--no-open", "--settings",
                           str(write_settings_file(small_root)), *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 2, proc.stderr
    assert words in proc.stderr and "Traceback" not in proc.stderr


def test_a_port_in_use_is_exit_2(small_root: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        proc = subprocess.run([sys.executable, "-m", "selfiescope", "review", "--no-open", "--port", str(port),
                               "--settings", str(write_settings_file(small_root))], capture_output=True, text=True,
                              timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 2 and f"cannot listen on 127.0.0.1:{port}" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_root_without_a_dataset_is_exit_2_naming_it(tmp_path: Path) -> None:
    root = tmp_path / "nothing-here"
    proc = subprocess.run([sys.executable, "-m", "selfiescope", "review", "--no-open", "--settings",
                           str(write_settings_file(root))], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 2 and "no dataset at" in proc.stderr and str(root) in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    assert not root.exists()  # reviewing never creates a dataset


@pytest.mark.browser
@pytest.mark.slow
def test_the_demo_ends_with_the_command_that_reviews_its_dataset(tmp_path: Path) -> None:
    import http.cookiejar

    out = tmp_path / "a demo's output"  # a space and a quote: the printed command must quote them
    env = {**{k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}, "PYTHONPATH": str(REPO)}
    demo = subprocess.run([sys.executable, "-m", "selfiescope", "demo", "--output", str(out), "--per-tag", "2",
                           "--no-train"], capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert demo.returncode == 0, demo.stderr
    command = demo.stderr.strip().splitlines()[-1].strip()
    assert command.endswith(" review") and command.startswith("SELFIESCOPE_STORAGE__ROOT=")
    # the program as started (python -m) is not a command a shell knows: the printed one says `selfiescope`
    command = command.replace(" selfiescope review", f" {sys.executable} -m selfiescope review")
    proc = subprocess.Popen(["bash", "-c", f"exec env {command} --no-open"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    try:
        url = url_of(proc)
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
        with opener.open(url.replace("/?", "/api/version?"), timeout=60) as answer:
            assert answer.status == 200
        with opener.open(url.split("?")[0] + "api/page?limit=1000", timeout=60) as answer:
            page = json.loads(answer.read())
    finally:
        code, err = stop(proc)
    assert code == 0, err
    stored = sqlite3.connect(out / "data" / "manifest.sqlite").execute("SELECT count(*) FROM images").fetchone()[0]
    assert page["total"] == stored > 0


def test_the_first_grid_pages_thumbnails_are_made_before_the_browser_asks(small_root: Path) -> None:
    proc = start(write_settings_file(small_root), "--no-open")
    try:
        url_of(proc)
        deadline = time.monotonic() + 120  # generous: a loaded machine
        while len(list((small_root / ".thumbs").rglob("*.jpg"))) < 3 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(list((small_root / ".thumbs").rglob("*.jpg"))) == 3
    finally:
        code, err = stop(proc)
    assert code == 0 and "Traceback" not in err, err
