"""``selfiescope clean DIR``: the seed's CleaningPhotos as a pipeline.

Runs a folder through decode + face_area (+ dedup) with the ordinary collect machinery
and reports kept/rejected counts by reason. Without ``output`` it works in place and
only reports (its manifest lives in a temporary folder); with ``output`` the kept images
are stored into a new dataset there.

The user's originals are never touched unless ``move_rejected_to`` or ``delete_rejected``
asks for it, and then only a file that a step *rejected* (a decision the manifest
recorded), never one that merely failed (a write that broke, an unreadable file), and
only while its bytes are still the ones that were judged. A symbolic link is moved or
removed as a link; its target is never touched.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import shutil
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ..core.events import ImageEvent
from ..core.hookspecs import hookimpl
from ..core.plugins import Registry, registry_for
from ..core.settings import (
    DEDUP_STEP, FILTER_STEPS, FOLDER_SOURCE, STORE_STEP, ScrapePipeline, Settings, SettingsError,
    format_validation_error,
)
from ..core.text import printable
from .collect import collect


class _Decisions:
    """Observer plugin: remembers the outcome for every file of the run."""

    def __init__(self) -> None:
        self.files: list[dict[str, Any]] = []

    def _note(self, event: ImageEvent, outcome: str) -> None:
        self.files.append({
            "path": event.origin.path, "outcome": outcome, "kept": outcome == "kept", "code": event.reject_code,
            "reason": event.reject_reason, "location": event.location, "face_area": event.face_area,
            "content_hash": event.content_hash,
        })

    @hookimpl
    def selfiescope_image_accepted(self, event: ImageEvent, run: Any) -> None:
        self._note(event, "kept")

    @hookimpl
    def selfiescope_image_rejected(self, event: ImageEvent, run: Any) -> None:
        self._note(event, "rejected")

    @hookimpl
    def selfiescope_image_failed(self, event: ImageEvent, run: Any) -> None:
        self._note(event, "failed")


def _label_for(folder: Path) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "_", folder.resolve().name).strip("_-")[:64] or "images"


def _unique_target(folder: Path, name: str) -> Path:
    target = folder / name
    stem, suffix = Path(name).stem, Path(name).suffix
    n = 1
    while os.path.lexists(target):
        target = folder / f"{stem}-{n}{suffix}"
        n += 1
    return target


def _overlaps(a: Path, b: Path) -> bool:
    a, b = a.resolve(), b.resolve()
    return a == b or a.is_relative_to(b) or b.is_relative_to(a)


def _still_judged(path: Path, content_hash: str) -> bool:
    """Whether ``path`` still holds the bytes that were rejected (a link: its target's)."""
    try:
        with path.open("rb") as fh:
            return hashlib.file_digest(fh, "sha256").hexdigest() == content_hash
    except OSError:
        return False


def _check(folder: Path, output: Path | None, move_to: Path | None, delete: bool, label: str,
           chain: list[str]) -> ScrapePipeline:
    problems = []
    if not folder.is_dir():
        problems.append(f"clean: folder not found: {printable(folder)}")
    if move_to is not None and delete:
        problems.append("clean: choose either --move-rejected-to or --delete-rejected, not both")
    for what, path in (("--output", output), ("--move-rejected-to", move_to)):
        if path is not None and folder.is_dir() and _overlaps(path, folder):
            problems.append(f"clean: {what} {printable(path)} must be outside the folder being cleaned")
    if problems:
        raise SettingsError(problems)
    try:
        return ScrapePipeline(kind="import", source=FOLDER_SOURCE, paths=[folder], label=label, chain=chain)
    except ValidationError as exc:
        raise SettingsError([p.replace("label:", "--label:", 1) for p in format_validation_error(exc)]) from None


def clean(
    settings: Settings,
    folder: Path | str,
    *,
    output: Path | str | None = None,
    dedup: bool = True,
    move_rejected_to: Path | str | None = None,
    delete_rejected: bool = False,
    registry: Registry | None = None,
    label: str | None = None,
) -> dict[str, Any]:
    """Clean ``folder``; return counts by reason and the outcome for every file."""
    folder = Path(folder).expanduser()
    output = Path(output).expanduser() if output is not None else None
    move_to = Path(move_rejected_to).expanduser() if move_rejected_to is not None else None
    chain = [*FILTER_STEPS, *([DEDUP_STEP] if dedup else []), *([STORE_STEP] if output else [])]
    pipeline = _check(folder, output, move_to, delete_rejected, label or _label_for(folder), chain)
    registry = registry or registry_for(settings)
    observer = _Decisions()
    registry.pm.register(observer)
    try:
        with tempfile.TemporaryDirectory(prefix="selfiescope-clean-") as scratch:
            root = output if output is not None else Path(scratch)
            run_settings = settings.model_copy(update={"storage": settings.storage.model_copy(update={"root": root})})
            stats = asyncio.run(collect(run_settings, "clean", registry=registry, pipeline=pipeline))
    finally:
        registry.pm.unregister(observer)

    moved = deleted = 0
    skipped: list[str] = []
    for item in observer.files:
        if item["outcome"] != "rejected" or not item["path"]:
            continue  # kept, or failed: a failure decided nothing about the file
        path = Path(item["path"])
        if not (move_to is not None or delete_rejected):
            continue
        if not _still_judged(path, item["content_hash"]):
            skipped.append(f"{printable(path)} changed or vanished since it was judged; left alone")
            continue
        if move_to is not None:
            target_dir = move_to / (re.sub(r"[^A-Za-z0-9_-]+", "_", item["code"] or "") or "rejected")
            target_dir.mkdir(parents=True, exist_ok=True)
            target = _unique_target(target_dir, path.name)
            shutil.move(str(path), target)
            item["moved_to"] = printable(target)
            moved += 1
        else:
            path.unlink()  # a symbolic link: removes the link, never its target
            item["deleted"] = True
            deleted += 1
    by_reason = Counter(item["code"] for item in observer.files if item["outcome"] == "rejected")
    for item in observer.files:  # JSON- and terminal-safe from here on
        item["path"] = printable(item["path"]) if item["path"] else item["path"]
    return {
        "folder": printable(folder),
        "output": printable(output) if output else None,
        "chain": chain,
        "status": stats.status,
        "seen": len(observer.files),
        "kept": sum(1 for item in observer.files if item["outcome"] == "kept"),
        "rejected": sum(1 for item in observer.files if item["outcome"] == "rejected"),
        "failed": sum(1 for item in observer.files if item["outcome"] == "failed"),
        "rejected_by_reason": dict(sorted(by_reason.items())),
        "moved": moved,
        "deleted": deleted,
        "skipped": skipped,
        "errors": stats.error_lines(),
        "files": sorted(observer.files, key=lambda item: item["path"] or ""),
    }
