"""Review edits killed (SIGKILL) at random moments: no edit reported saved is lost, and no
change is half made.

The child (review_kill_child.py) relabels, excludes, includes, marks and undoes batches of
images until it is killed. Afterwards every batch it reported saved is in the ``reviews``
table; replaying the ``reviews`` rows from the collected state gives exactly the images'
state (no change without its row, no row without its change); and every batch is whole:
an action batch holds a row for each of its images, an undo batch the inverse of each row
of the batch it undid.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from selfiescope.review.actions import FIELD
from selfiescope.testing.review_manifest import build

REPO = Path(__file__).resolve().parents[1]
ROUNDS = 6


def run_until_killed(root: Path, seed: int, delay: float) -> list[str]:
    child = subprocess.Popen([sys.executable, str(REPO / "tests" / "review_kill_child.py"), str(root), str(seed)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert child.stdout is not None
        deadline = time.monotonic() + 120  # a slow start on a loaded machine
        first = child.stdout.readline()
        assert first.strip() == "ready", (first, child.stderr.read() if child.poll() is not None else "")
        assert time.monotonic() < deadline
        time.sleep(delay)
        os.kill(child.pid, signal.SIGKILL)
        out, err = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(30)
    assert "Traceback" not in err, err
    return out.splitlines()


def check(root: Path, lines: list[str]) -> None:
    db = sqlite3.connect(root / "manifest.sqlite")
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    batches = {r[0] for r in db.execute("SELECT DISTINCT batch FROM reviews")}
    for line in lines:
        parts = line.split(" ", 3)
        if parts[0] == "saved" and int(parts[2]):
            assert int(parts[2]) in batches, f"batch {parts[2]} was reported saved and is gone"
    db.close()
    check_replay(root, batch_size=5)


def check_replay(root: Path, batch_size: int | None = None) -> None:
    """Replaying the ``reviews`` rows from the collected state gives the images' state, and
    every batch is whole."""
    db = sqlite3.connect(root / "manifest.sqlite")
    reviews = db.execute("SELECT id, content_hash, action, old, new, batch, undoes FROM reviews ORDER BY id").fetchall()
    # Replay the rows from the collected state: each row's old value is what the image had.
    collected = dict(db.execute("SELECT content_hash, label FROM images"))
    state = {h: {"label": label, "excluded": "0", "reviewed": "0"} for h, label in collected.items()}
    for _, content_hash, action, old, new, _, _ in reviews:
        column = FIELD[action]
        assert state[content_hash][column] == old, (content_hash, action, old, new)
        state[content_hash][column] = new
    for content_hash, label, excluded, reviewed in db.execute(
            "SELECT content_hash, COALESCE(review_label, label), IFNULL(excluded, 0), reviewed IS NOT NULL FROM images"):
        assert state[content_hash] == {"label": label, "excluded": str(int(bool(excluded))), "reviewed": str(int(reviewed))}
    phash_labels = dict(db.execute("SELECT content_hash, label FROM phashes"))
    assert all(phash_labels[h] == state[h]["label"] for h in phash_labels)
    # Whole batches.
    by_batch: dict[int, list[tuple]] = {}
    for r in reviews:
        by_batch.setdefault(r[5], []).append(r)
    for batch, rows in by_batch.items():
        undone = {r[6] for r in rows}
        assert len(undone) == 1, f"batch {batch} mixes undo and action rows"
        target = undone.pop()
        if target is None:
            main = [r for r in rows if r[2] != "reviewed" or all(x[2] == "reviewed" for x in rows)]
            if batch_size is not None:
                assert len({r[1] for r in main}) == batch_size, f"batch {batch} is not whole: {len(main)} rows"
        else:
            original = {(r[1], r[2], r[3], r[4]) for r in by_batch[target]}
            inverse = {(r[1], r[2], r[4], r[3]) for r in rows}
            assert inverse <= original and (len(inverse) == len(original) or rows[0][3] == rows[0][4])
    db.close()


@pytest.mark.slow
def test_review_edits_survive_sigkill_at_random_moments(tmp_path: Path) -> None:
    root = tmp_path / "data"
    build(root, 200, seed=11, files=False)
    rng = random.Random(20)
    saved = 0
    for round_ in range(ROUNDS):
        lines = run_until_killed(root, seed=round_, delay=rng.uniform(0.3, 2.5))
        saved += sum(line.startswith("saved") for line in lines)
        check(root, lines)
    assert saved > ROUNDS, "the child saved too little to test anything"
