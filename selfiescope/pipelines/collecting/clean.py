"""``selfiescope clean DIR``: the seed's CleaningPhotos as a pipeline.

Runs a folder through decode + face_area (+ dedup) with the ordinary collect machinery
and reports kept/rejected counts by reason. Without ``output`` it works in place and
only reports (its manifest lives in a temporary folder); with ``output`` the kept images
are stored into a new dataset there.

The user's originals are never touched unless ``move_rejected_to`` or ``delete_rejected``
asks for it, and then only after the run, on facts checked at that moment
(:mod:`.clean_plan`): a file a step *rejected* (never one that merely failed: a write that
broke, an unreadable file), still holding the bytes that were judged, and, for a duplicate,
only while the copy that was kept is there (read back through the storage backend). A
symbolic link is moved or removed as a link; its target is never touched. ``dry_run``
lists the plan and does nothing.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ...core.components import StoredImage
from ...core.events import ImageEvent
from ...core.manifest import Manifest
from ...core.hookspecs import hookimpl
from ...core.app import App
from ...core.settings import (
    DEDUP_STEP, FILTER_STEPS, FOLDER_SOURCE, STORE_STEP, ScrapePipeline, SettingsError,
    format_validation_error,
)
from ...core.text import printable
from ...plugins.folder import SKIPPED_KEY, kind_of
from .clean_plan import build_plan, execute, folder_check
from .collect import collect
from ..dataset_care.stored import StoredReader


class _Decisions:
    """Observer plugin: remembers the outcome for every file of the run."""

    def __init__(self) -> None:
        self.files: list[dict[str, Any]] = []
        self.stored_hashes: dict[str, str] = {}

    def _note(self, event: ImageEvent, outcome: str) -> None:
        self.files.append({
            "path": event.origin.path, "outcome": outcome, "kept": outcome == "kept", "code": event.reject_code,
            "rejected_by": event.rejected_by,
            "reason": event.reject_reason, "location": event.location, "face_area": event.face_area,
            "content_hash": event.content_hash, "duplicate_of": event.notes.get("duplicate_of"),
        })
        if outcome == "kept" and event.stored and event.data:  # what went to storage: the stripped bytes, when stripped
            self.stored_hashes[event.content_hash] = hashlib.sha256(event.data).hexdigest()

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


def _overlaps(a: Path, b: Path) -> bool:
    a, b = a.resolve(), b.resolve()
    return a == b or a.is_relative_to(b) or b.is_relative_to(a)


def _under_a_file(path: Path) -> Path | None:
    """The first part of ``path`` that exists and is not a folder, if any."""
    for part in [path, *path.parents]:
        if os.path.lexists(part):
            return None if part.is_dir() else part
    return None


class _StorageCheck:
    """With a dataset: the kept copy is the stored one, read back through the backend now."""

    def __init__(self, reader: StoredReader, manifest: Manifest, stored_hashes: dict[str, str]) -> None:
        self.reader, self.manifest, self.stored_hashes = reader, manifest, stored_hashes
        self._seen: dict[str, str | None] = {}

    def __call__(self, content_hash: str) -> str | None:
        if content_hash not in self._seen:
            self._seen[content_hash] = self._verify(content_hash)
        return self._seen[content_hash]

    def _verify(self, content_hash: str) -> str | None:
        rows = self.manifest.query(
            "SELECT id, label, location, notes FROM images WHERE content_hash=? AND decision='accepted' "
            "AND location IS NOT NULL", (content_hash,))
        if not rows:
            return f"the copy it duplicates ({content_hash[:16]}) is not stored"
        row = rows[0]
        stored = StoredImage(row["id"], row["label"], row["location"], content_hash)
        try:
            data = self.reader.read(stored)
        except FileNotFoundError:  # what the storage contract asks `read` to raise for nothing stored
            return f"the copy it duplicates ({content_hash[:16]}) is missing from storage"
        except Exception as exc:  # noqa: BLE001 - whatever the backend raised, the copy is not verified
            return f"the copy it duplicates ({content_hash[:16]}) cannot be read back ({type(exc).__name__})"
        try:
            noted = json.loads(row["notes"] or "{}").get("stored_sha256")
        except (ValueError, AttributeError):
            noted = None
        if hashlib.sha256(data).hexdigest() not in {content_hash, noted, self.stored_hashes.get(content_hash)}:
            return f"the copy it duplicates ({content_hash[:16]}) does not hold the bytes that were stored"
        return None


def _check(folder: Path, output: Path | None, move_to: Path | None, delete: bool, label: str,
           chain: list[str]) -> ScrapePipeline:
    problems = []
    if not folder.is_dir():
        kind = kind_of(folder)
        problems.append(f"clean: {printable(folder)}: not a folder ({kind})" if kind else
                        f"clean: folder not found: {printable(folder)}")
    if move_to is not None and delete:
        problems.append("clean: choose either --move-rejected-to or --delete-rejected, not both")
    named = [("the folder", folder), ("--output", output), ("--move-rejected-to", move_to)]
    named = [(what, path) for what, path in named if path is not None]
    for i, (what, path) in enumerate(named):
        if (blocker := _under_a_file(path)) is not None and what != "the folder":
            problems.append(f"clean: {what} {printable(path)}: {printable(blocker)} is a file, not a folder")
        for other, other_path in named[i + 1:]:
            if _overlaps(path, other_path):
                problems.append(f"clean: {other} {printable(other_path)} and {what} {printable(path)} "
                                "must not be the same folder or one inside the other")
    if problems:
        raise SettingsError(problems)
    try:
        pipeline = ScrapePipeline(kind="import", source=FOLDER_SOURCE, paths=[folder], label=label, chain=chain)
    except ValidationError as exc:
        raise SettingsError([p.replace("label:", "--label:", 1) for p in format_validation_error(exc)]) from None
    pipeline._report_only = output is None
    return pipeline


def clean(
    app: App,
    folder: Path | str,
    *,
    output: Path | str | None = None,
    dedup: bool = True,
    move_rejected_to: Path | str | None = None,
    delete_rejected: bool = False,
    dry_run: bool = False,
    label: str | None = None,
) -> dict[str, Any]:
    """Clean ``folder``; return counts by reason, the outcome for every file and the plan:
    what was (with ``dry_run``: would be) moved, deleted or kept, and why."""
    folder = Path(folder).expanduser()
    output = Path(output).expanduser() if output is not None else None
    move_to = Path(move_rejected_to).expanduser() if move_rejected_to is not None else None
    chain = [*FILTER_STEPS, *([DEDUP_STEP] if dedup else []), *([STORE_STEP] if output else [])]
    pipeline = _check(folder, output, move_to, delete_rejected, label or _label_for(folder), chain)
    settings, registry = app.settings, app.registry
    observer = _Decisions()
    registry.pm.register(observer)
    try:
        with tempfile.TemporaryDirectory(prefix="selfiescope-clean-") as scratch:
            root = output if output is not None else Path(scratch)
            run_app = app.with_settings(
                settings.model_copy(update={"storage": settings.storage.model_copy(update={"root": root})}))
            stats = asyncio.run(collect(run_app, "clean", pipeline=pipeline))
    finally:
        registry.pm.unregister(observer)

    action = "move" if move_to is not None else "delete" if delete_rejected else None
    plan: list[dict[str, Any]] = []
    removal_errors: list[str] = []
    if action is not None:
        plan, removal_errors = _plan_and_execute(observer, action, move_to, dry_run, run_app if output else None, chain)
    by_reason = Counter(item["code"] for item in observer.files if item["outcome"] == "rejected")
    for item in [*observer.files, *plan]:  # JSON- and terminal-safe from here on
        item["path"] = printable(item["path"]) if item["path"] else item["path"]
    done = not dry_run
    return {
        "folder": printable(folder),
        "output": printable(output) if output else None,
        "chain": chain,
        "status": stats.status,
        "dry_run": dry_run,
        "seen": len(observer.files),
        "kept": sum(1 for item in observer.files if item["outcome"] == "kept"),
        "rejected": sum(1 for item in observer.files if item["outcome"] == "rejected"),
        "failed": sum(1 for item in observer.files if item["outcome"] == "failed"),
        "rejected_by_reason": dict(sorted(by_reason.items())),
        "moved": sum(1 for e in plan if e["action"] == "move") if done else 0,
        "deleted": sum(1 for e in plan if e["action"] == "delete") if done else 0,
        "plan": plan,
        "skipped_not_regular_files": stats.extra.get(SKIPPED_KEY, 0),
        "skipped": [f"{e['path']}: {e['why']}; left in place" for e in plan if e["action"] == "keep" and not e.get("error")],
        "errors": [*stats.error_lines(), *removal_errors],
        "files": sorted(observer.files, key=lambda item: item["path"] or ""),
    }


def _plan_and_execute(observer: _Decisions, action: str, move_to: Path | None, dry_run: bool,
                      dataset: App | None, chain: list[str]) -> tuple[list[dict[str, Any]], list[str]]:
    """Build the plan from facts checked now and (unless ``dry_run``) carry it out.

    With a dataset, the storage root is locked meanwhile, so nothing removes a kept copy
    between its check and the removal it justifies."""
    if dataset is None:
        plan = build_plan(observer.files, action, lambda removing: folder_check(observer.files, removing), chain)
        return plan, ([] if dry_run else execute(plan, move_to))
    with dataset.root_lock():
        manifest = Manifest.at_root(dataset.settings.storage.root)
        try:
            with StoredReader(dataset, manifest=manifest) as reader:
                check = _StorageCheck(reader, manifest, observer.stored_hashes)
                plan = build_plan(observer.files, action, lambda removing: check, chain)
        finally:
            manifest.close()
        return plan, ([] if dry_run else execute(plan, move_to))
