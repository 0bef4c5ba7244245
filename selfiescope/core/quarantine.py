"""The quarantine folder (``<root>/.selfiescope-quarantine``): where ``fsck --repair`` moves
stored files it cannot account for. Each move is recorded in ``.index.jsonl`` there (the
location it came from, its sha256 and the content hash of the row that named it), so
``forget`` finds every quarantined copy of an image it removes."""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable
from pathlib import Path

QUARANTINE = ".selfiescope-quarantine"
INDEX = ".index.jsonl"
_COPY_SUFFIX = re.compile(r"-\d+$")


def folder(root: Path) -> Path:
    return Path(root) / QUARANTINE


def record(root: Path, file: Path, location: str, sha256: str, content_hash: str | None) -> None:
    """Append one move to the index (flushed and synced: it is what forget reads)."""
    entry = {"file": file.relative_to(folder(root)).as_posix(), "location": location,
             "sha256": sha256, "content_hash": content_hash}
    with open(folder(root) / INDEX, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(entry) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def _index(root: Path) -> dict[str, dict]:
    entries: dict[str, dict] = {}
    try:
        lines = (folder(root) / INDEX).read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return entries
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:
            continue  # a torn last line: the files themselves are still matched by name and bytes
        if isinstance(entry, dict) and isinstance(entry.get("file"), str):
            entries[entry["file"]] = entry
    return entries


def files(root: Path) -> list[Path]:
    """Every quarantined file (links and the index excluded, never followed)."""
    base = folder(root)
    if not base.is_dir() or base.is_symlink():
        return []
    found = []
    for dirpath, dirnames, filenames in os.walk(base):
        for name in filenames:
            path = Path(dirpath) / name
            if name.startswith("."):  # the index, a temp copy
                continue
            if not path.is_symlink() and path.is_file():
                found.append(path)
    return sorted(found)


def copies(root: Path, content_hashes: Iterable[str], locations: Iterable[str], sha256s: Iterable[str] = ()) -> list[Path]:
    """The quarantined files that are a copy of these images: moved from one of their
    locations (or named by their id), recorded with their content hash, or whose bytes
    hash to one of them."""
    hashes = {h for h in content_hashes if h}
    digests = hashes | {h for h in sha256s if h}
    places = {loc for loc in locations if loc}
    ids = {Path(loc).stem for loc in places} | {h[:16] for h in hashes}
    index = _index(root)
    base = folder(root)
    found = []
    for path in files(root):
        rel = path.relative_to(base).as_posix()
        entry = index.get(rel, {})
        stem = _COPY_SUFFIX.sub("", path.stem)
        origin = f"{Path(rel).parent.as_posix()}/{stem}{path.suffix}"
        if (origin in places or stem in ids or entry.get("location") in places
                or entry.get("content_hash") in hashes or entry.get("sha256") in digests):
            found.append(path)
            continue
        try:
            if hashlib.sha256(path.read_bytes()).hexdigest() in digests:
                found.append(path)
        except OSError:
            continue
    return found


def remove(root: Path, paths: Iterable[Path]) -> int:
    """Delete these quarantined files and their index entries (which name what they were)."""
    n = 0
    gone = set()
    for path in paths:
        gone.add(path.relative_to(folder(root)).as_posix())
        try:
            path.unlink()
            n += 1
        except FileNotFoundError:
            continue
    index = folder(root) / INDEX
    if gone and index.is_file() and not index.is_symlink():
        kept = "".join(json.dumps(e) + "\n" for f, e in _index(root).items() if f not in gone)
        replace_synced(index, kept.encode("utf-8"))
    return n


def replace_synced(target: Path, data: bytes) -> None:
    """Write ``data`` to ``target`` whole or not at all: a hidden temp file beside it, synced, then
    renamed over it; the temp file never outlives a failure."""
    hidden = target.name if target.name.startswith(".") else f".{target.name}"  # files() passes over it
    tmp = target.with_name(f"{hidden}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
