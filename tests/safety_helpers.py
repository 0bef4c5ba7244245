"""Shared helpers for the data-safety tests: scratch projects, CLI calls, dataset checks."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
from PIL import Image
from train_helpers import render

from selfiescope.plugins.dedup import compute_phashes
from typer.testing import CliRunner

from selfiescope.cli import app
from selfiescope.core.manifest import Manifest


def project(tmp_path: Path, root: str = "data", extra: str = "") -> Path:
    """A settings file in ``tmp_path`` with its storage root there (a new file each call)."""
    n = len(list(tmp_path.glob("settings*.toml")))
    settings = tmp_path / (f"settings-{n}.toml" if n else "settings.toml")
    settings.write_text(f'[storage]\nroot = "{tmp_path / root}"\n{extra}')
    return settings


def cli(*args: str, env: dict[str, str] | None = None):
    """Run the CLI in-process; the result has ``exit_code`` and ``output`` (stdout + stderr)."""
    return CliRunner().invoke(app, [str(a) for a in args], env=env, catch_exceptions=True)


def no_traceback(result) -> bool:
    return result.exception is None or isinstance(result.exception, SystemExit)


def faces(folder: Path, n: int, seed: int = 1) -> list[Path]:
    """``n`` small synthetic photos that pass decode, the face filter and dedup (no two of them,
    nor of any other call's, are near-duplicates: candidates too close to one kept are skipped)."""
    folder.mkdir(parents=True, exist_ok=True)
    test = os.environ.get("PYTEST_CURRENT_TEST", "").split(" ")[0]
    if _KEPT_FOR[0] != test:  # distinct within one test is enough
        _KEPT_FOR[0] = test
        _KEPT_HASHES.clear()
    rng = np.random.default_rng(seed)
    paths: list[Path] = []
    for _ in range(100 * n):
        if len(paths) == n:
            break
        picture = render("selfie" if rng.random() < 0.7 else "portrait", rng)
        hashes = [int(h, 16) for h in compute_phashes(picture)]
        if any(bin(a ^ b).count("1") <= 9 for a in hashes for b in _KEPT_HASHES):
            continue
        _KEPT_HASHES.extend(hashes)
        path = folder / f"photo_{seed}_{len(paths):03d}.jpg"
        Image.fromarray(picture).save(path, "JPEG", quality=90)
        paths.append(path)
    assert len(paths) == n, "could not render enough distinct photos"
    return paths


_KEPT_HASHES: list[int] = []  # across calls: photos of different folders must differ too
_KEPT_FOR = [""]


def snapshot(folder: Path) -> dict[str, str]:
    """relative path -> sha256, every file under ``folder`` (links as links)."""
    out = {}
    for path in sorted(folder.rglob("*")):
        if path.is_symlink():
            out[str(path.relative_to(folder))] = "-> " + str(path.readlink())
        elif path.is_file():
            out[str(path.relative_to(folder))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def dataset_agrees(root: Path) -> tuple[int, list[str]]:
    """(stored images, problems): every accepted row with a location has its file, byte for byte,
    every stored file has its row, and no temp file is left."""
    problems = []
    files = {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and p.parent != root}
    temps = [f for f in files if Path(f).name.startswith(".")]
    problems += [f"temp file left: {t}" for t in temps]
    files -= set(temps)
    manifest = Manifest.at_root(root)
    try:
        rows = manifest.query("SELECT content_hash, location FROM images WHERE decision='accepted' AND location IS NOT NULL")
    finally:
        manifest.close()
    located = {r["location"]: r["content_hash"] for r in rows}
    for loc, digest in located.items():
        path = root / loc
        if not path.is_file():
            problems.append(f"row without file: {loc}")
        elif hashlib.sha256(path.read_bytes()).hexdigest() != digest:
            problems.append(f"file differs from its row: {loc}")
    problems += [f"file without row: {f}" for f in sorted(files - set(located))]
    return len(located), problems


def json_out(result) -> dict:
    text = result.stdout
    return json.loads(text[text.index("{"):])
