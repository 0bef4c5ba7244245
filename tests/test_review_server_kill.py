"""SIGKILL the running `selfiescope review` command while a client sends changes as fast as it can: every
change the server answered as saved is in the manifest afterwards, every batch is whole (all its
images' rows or none), and a new launch serves the dataset as those rows say."""

from __future__ import annotations

import http.cookiejar
import json
import random
import signal
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from conftest import FACES
from review_helpers import build_dataset, manifest_rows
from test_review_cli import start, url_of

pytest.importorskip("starlette")
pytestmark = [pytest.mark.faces, pytest.mark.slow]


def csrf_of(html: str) -> str:
    return html.split('data-csrf="', 1)[1].split('"', 1)[0]


def test_a_killed_server_loses_no_change_it_answered_as_saved(tmp_path: Path) -> None:
    if not FACES.is_dir():
        pytest.skip(f"real face photos not available: {FACES}")
    ds = build_dataset(tmp_path, FACES, per_label=3)
    rng = random.Random(20)
    answered = 0
    for round_ in range(3):
        proc = start(ds.settings_file, "--no-open")
        url = url_of(proc)
        base = url.split("?", 1)[0]
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
        with opener.open(url, timeout=120) as answer:
            csrf = csrf_of(answer.read().decode())
        with opener.open(base + "api/page?limit=1000", timeout=120) as answer:
            ids = [t["id"] for t in json.loads(answer.read())["tiles"]]
        saved: list[tuple[int, int]] = []  # (batch, images changed) of each answer
        stop = threading.Event()

        def send() -> None:
            while not stop.is_set():
                chosen = rng.sample(ids, 3)
                action = rng.choice(["reviewed", "unreviewed", "exclude", "include"])
                request = urllib.request.Request(base + "api/action", method="POST", headers={
                    "content-type": "application/json", "x-csrf-token": csrf},
                    data=json.dumps({"action": action, "ids": chosen}).encode())
                try:
                    with opener.open(request, timeout=120) as answer:
                        body = json.loads(answer.read())
                except (urllib.error.URLError, ConnectionError, OSError):
                    return  # the server is gone: what it answered before is what counts
                if body["batch"]:
                    saved.append((body["batch"], body["changed"]))

        sender = threading.Thread(target=send)
        sender.start()
        time.sleep(rng.uniform(0.5, 3.0))
        proc.send_signal(signal.SIGKILL)
        proc.wait(60)
        stop.set()
        sender.join(180)
        assert not sender.is_alive()
        answered += len(saved)
        rows = manifest_rows(ds.root, "SELECT batch, content_hash FROM reviews")
        by_batch: dict[int, set[str]] = {}
        for batch, image in rows:
            by_batch.setdefault(batch, set()).add(image)
        for batch, changed in saved:  # every answered batch is there, with every image it changed
            assert len(by_batch.get(batch, set())) == changed, f"round {round_}: batch {batch} answered as saved"
        # the images' columns are what their rows say, in order (no half-made change)
        last: dict[tuple[str, str], str] = {}
        for image, action, new in manifest_rows(ds.root, "SELECT content_hash, action, new FROM reviews ORDER BY id"):
            last[(image, "excluded" if action in ("exclude", "include") else "reviewed")] = new
        state = {h: (e, r) for h, e, r in manifest_rows(ds.root, "SELECT content_hash, excluded, reviewed FROM images")}
        for (image, field), new in last.items():
            excluded, reviewed = state[image]
            now = bool(excluded) if field == "excluded" else reviewed is not None
            assert now == (new not in (None, "", "0")), (round_, image, field, new)
    assert answered > 0  # the kills came while changes were being saved
    # a new launch serves the dataset as the rows left it
    proc = start(ds.settings_file, "--no-open")
    try:
        url = url_of(proc)
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
        with opener.open(url, timeout=120) as answer:
            assert answer.status == 200
        excluded = {h for (h,) in manifest_rows(ds.root, "SELECT content_hash FROM images WHERE excluded=1")}
        with opener.open(url.split("?")[0] + "api/page?limit=1000&excluded=yes", timeout=120) as answer:
            assert {t["id"] for t in json.loads(answer.read())["tiles"]} == excluded
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0
